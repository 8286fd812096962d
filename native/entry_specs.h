// Entry specs as JS hands them over for bulk changes: fixed-size records of u32 slots
// (record_layout.h spec_slot), already validated by lib/table/entry-spec.ts, read into the
// EntrySpec that requests.* turns into a message. A record is what create() or update() would
// send for one item, without a JS object per item crossing the binding.
#pragma once

#include <cstddef>
#include <cstdint>

#include "record_layout.h"
#include "requests.h"

namespace ct {

// Reads record `index` of `records` (spec_slot::kCount slots each) into `spec`.
void readSpecRecord(const uint32_t* records, size_t index, EntrySpec& spec);

}  // namespace ct
