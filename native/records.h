// Batches of fixed-size records for JS (record_layout.h), and the writer that turns an Entry
// into one. Addresses become text here, in the form conntrack-tools prints.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "entry.h"
#include "record_layout.h"

namespace ct {

struct Batch {
  std::vector<uint32_t> records;  // count * slot::kCount
  std::string text;
  size_t count = 0;
  // Events only: how many times the kernel reported lost events (ENOBUFS) after the previous
  // batch and before this batch's first record.
  uint32_t overflowsBefore = 0;
  // Summaries only: the number of entries in the group each record stands for.
  std::vector<uint32_t> counts;

  void clear() {
    records.clear();
    text.clear();
    count = 0;
    overflowsBefore = 0;
    counts.clear();
  }
};

// A batch's text must fit string refs (string_ref::kOffsetMask); batches are cut well before that.
constexpr size_t kMaxBatchText = 4u << 20;
static_assert(kMaxBatchText < string_ref::kOffsetMask, "batch text must fit string refs");

// Appends `entry` to `batch` as one record. A helper name longer than a string ref holds
// (string_ref::kMaxLength) is cut; the security context has an offset and a length of its own.
void appendRecord(Batch& batch, const Entry& entry);

// Writes `tuple` as a tuple block (slot::kTuple*) at `block`, its addresses into the batch text.
// For records other than entries (expectations), which share the tuple layout.
void writeTupleBlock(Batch& batch, uint32_t* block, const Tuple& tuple);

// Formats an address as conntrack-tools prints it (inet_ntop form).
size_t formatAddress(uint8_t family, const uint8_t* addr, char* out /* >= 46 bytes */);

}  // namespace ct
