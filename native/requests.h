// Building ctnetlink requests: a bare request (statistics), a table dump (with the attributes
// the kernel filters by), one entry to get, create (with NAT), update or delete, and a flush (of
// everything, or of what a filter selects). Each returns the message length written into `buf`,
// or 0 if `cap` is too small.
#pragma once

#include <cstddef>
#include <cstdint>

#include "entry.h"
#include "filter.h"
#include "wire.h"

namespace ct {

size_t buildRequest(uint8_t* buf, size_t cap, uint16_t type, uint16_t flags, uint32_t seq,
                    uint8_t family, uint16_t resId = 0);
// A table dump; with `filter` and `filter->kernel`, adds the attributes the kernel filters by.
// `msg` picks the table: IPCTNL_MSG_CT_GET (default), _GET_CTRZERO (and zero the counters of
// what is sent), _GET_DYING or _GET_UNCONFIRMED (lists the kernel filters by family only).
size_t buildDumpRequest(uint8_t* buf, size_t cap, uint32_t seq, const Filter* filter, uint8_t msg = 0);

// A NAT range for create(): CTA_NAT_SRC or CTA_NAT_DST (addresses of the entry's family).
struct NatRange {
  bool given = false;
  uint8_t minAddr[16] = {}, maxAddr[16] = {};
  bool hasPorts = false;
  uint16_t minPort = 0, maxPort = 0;
};

// One entry to get, create, update or delete (IPCTNL_MSG_CT_GET / _NEW / _DELETE). Tuples
// use the decoder's Tuple; a part is sent when its `has` bit is set, a tuple when `has` != 0.
struct EntrySpec {
  uint8_t family = 0;  // AF_INET / AF_INET6
  Tuple orig, reply;
  bool hasId = false, hasMark = false, hasTimeout = false, hasStatus = false, hasTcpState = false,
       hasZone = false;
  uint32_t id = 0, mark = 0, timeout = 0, status = 0;
  uint8_t tcpState = 0;
  uint16_t zone = 0;
  // Label bits 0..127 (bit b: word b / 32, bit b % 32) and, with hasLabelsMask, which bits change.
  bool hasLabels = false, hasLabelsMask = false;
  uint32_t labels[4] = {}, labelsMask[4] = {};
  NatRange natSrc, natDst;  // create only: the kernel derives the NATed reply tuple from them
};

// lib/table/entry-spec.ts ENTRY_OP uses the same numbers.
// kGetZero is IPCTNL_MSG_CT_GET_CTRZERO: the entry with its counters, which the kernel then zeroes.
enum class EntryOp : uint8_t { kGet = 0, kCreate = 1, kUpdate = 2, kDelete = 3, kGetZero = 4 };

// The request for `op` on `spec`, asking for an acknowledgement (a GET's answer comes first).
size_t buildEntryRequest(uint8_t* buf, size_t cap, EntryOp op, uint32_t seq, const EntrySpec& spec);
// IPCTNL_MSG_CT_DELETE without a tuple: every entry of the namespace (of `family`, 0 for all).
size_t buildFlushRequest(uint8_t* buf, size_t cap, uint32_t seq, uint8_t family);
// The same with the attributes a filtered flush understands: family, mark and mask, status and
// mask, zone (not zero: the kernel reads zone 0 as "any"). Only for kernels probed to honour
// them (flush_probe.*): an older kernel ignores what it does not know and flushes more.
size_t buildFilteredFlushRequest(uint8_t* buf, size_t cap, uint32_t seq, const Filter& filter);

// A tuple as a nested attribute `type` (CTA_TUPLE_*, CTA_EXPECT_*): the parts whose `has` bit is set.
void putTupleAttr(Writer& w, uint16_t type, const Tuple& t, uint8_t family);

}  // namespace ct
