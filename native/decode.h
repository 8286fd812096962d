// Decoding of ctnetlink messages: a conntrack message's attributes into an Entry (dumps, single
// answers and events alike), a statistics message into counter pairs, and what an event reports.
// Unknown attributes are skipped; a known one of the wrong size is malformed.
#pragma once

#include <cstdint>
#include <vector>

#include "entry.h"
#include "sys_error.h"
#include "wire.h"

namespace ct {

// Decodes a conntrack message's attributes into `entry`. False with `err` on a malformed one.
bool decodeEntry(const MessageView& message, Entry& entry, SysError& err);

// Flat (attribute number, u32 value) pairs of a stats message.
bool decodeCounters(const MessageView& message, std::vector<uint32_t>& pairs, SysError& err);

// What an event message reports (its type and flags; see EventType).
EventType eventTypeOf(const MessageView& message);

// A nested tuple attribute (CTA_TUPLE_*, and the expectation's tuples) into `tuple`.
bool decodeTupleAttr(const Attr& nest, Tuple& tuple, SysError& err);

}  // namespace ct
