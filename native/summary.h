// Group counts (summaries): entries counted by the values of some keys (SummaryKey, in
// record_layout.h), handed to JS as one record per group with only the grouped fields set, so
// the records' reader (lib/table/records.ts) serves both, and a count beside each.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <unordered_map>
#include <vector>

#include "entry.h"
#include "record_layout.h"
#include "records.h"

namespace ct {

// Groups as columns, largest first: a kept summary hands them over without a record per group.
// Per key one column: a number per group (-1: the entry had no such value) for every key but
// addresses, whose column holds the address as text ("" when absent).
struct SummaryColumns {
  uint64_t total = 0;  // entries in every group, those left out by `top` included
  std::vector<uint32_t> counts;
  std::vector<std::vector<double>> numbers;        // one per key; empty for an address key
  std::vector<std::vector<std::string>> addresses;  // one per key; empty for any other key
};

// Counts entries by the values of some keys. Each group is kept as its key bytes and a count.
class Grouper {
 public:
  explicit Grouper(std::vector<SummaryKey> keys) : keys_(std::move(keys)) {}
  void add(const Entry& entry);
  // Takes back an add() of an entry with the same grouped values (a live summary's entry changed
  // or left); a group whose count reaches zero is dropped.
  void remove(const Entry& entry);
  const std::vector<SummaryKey>& keys() const { return keys_; }
  // Bytes the groups hold, roughly (key, count and the hash node around them).
  size_t bytes() const;
  // Appends every group to batches of at most `batchSize` records; `full(batch)` takes each
  // full batch (false: stop). The last, partial batch stays in `batch`.
  bool emit(Batch& batch, size_t batchSize, const std::function<bool()>& full);
  size_t groups() const { return groups_.size(); }
  // The largest `top` groups (0: all), largest first, as columns.
  void columns(size_t top, SummaryColumns& out) const;

 private:
  std::vector<SummaryKey> keys_;
  // The grouped values of `entry` into key_.
  void keyOf(const Entry& entry);

  std::unordered_map<std::string, uint32_t> groups_;
  std::string key_;
};

}  // namespace ct
