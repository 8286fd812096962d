// Group counts (summaries): entries counted by the values of some keys (SummaryKey, in
// record_layout.h), handed to JS as one record per group with only the grouped fields set, so
// the records' reader (lib/table/records.ts) serves both, and a count beside each.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "entry.h"
#include "record_layout.h"
#include "records.h"

namespace ct {

// Groups as columns, largest first: a kept summary hands them over without a record per group.
// Per key one column: a number per group (-1: the entry had no such value) for every key but
// addresses, whose column holds the address as text ("" when absent). A caller that asks again
// passes the same object: its vectors keep their memory (fresh pages cost more than the answer).
struct SummaryColumns {
  uint64_t total = 0;  // entries in every group, those left out by `top` included
  uint64_t grouping = 0;  // the kept grouping that answered (0: none was kept)
  std::vector<uint32_t> counts;
  // Each group's id within its grouping and the generation of that id (ids of groups that went are
  // reused; the generation tells the groups apart).
  std::vector<uint32_t> ids;
  std::vector<uint32_t> generations;
  std::vector<std::vector<double>> numbers;        // one per key; empty for an address key
  std::vector<std::vector<std::string>> addresses;  // one per key; empty for any other key

  // Grouper::columns()'s working memory: the groups by count.
  std::vector<std::pair<uint32_t, const uint8_t*>> ranked;
  std::vector<std::pair<uint32_t, const uint8_t*>> spare;
};

// The groups whose keys a caller already holds: for each id the generation it holds (0: none).
// Their key columns are left unset (-1, "") since the caller does not read them.
struct KnownGroups {
  const uint32_t* generations = nullptr;
  size_t length = 0;
  bool holds(uint32_t id, uint32_t generation) const { return id < length && generations[id] == generation; }
};

// Counts entries by the values of some keys. Each group is its key bytes (of one length for a
// given set of keys) and a count, kept inline in an open-addressing table (linear probing,
// backward-shift deletion): one cache line per lookup where a node-based map cost a chain of
// scattered nodes, which dominated a live summary's update.
class Grouper {
 public:
  explicit Grouper(std::vector<SummaryKey> keys);
  void add(const Entry& entry);
  // Takes back an add() of an entry with the same grouped values (a live summary's entry changed
  // or left); a group whose count reaches zero is dropped.
  void remove(const Entry& entry);
  const std::vector<SummaryKey>& keys() const { return keys_; }
  // Bytes the groups hold (the table).
  size_t bytes() const { return slots_.capacity() + (generations_.capacity() + freeIds_.capacity()) * sizeof(uint32_t); }
  // Appends every group to batches of at most `batchSize` records; `full(batch)` takes each
  // full batch (false: stop). The last, partial batch stays in `batch`.
  bool emit(Batch& batch, size_t batchSize, const std::function<bool()>& full);
  size_t groups() const { return used_; }
  // The largest `top` groups (0: all), largest first, as columns; the keys of `known` groups are
  // left out.
  void columns(size_t top, const KnownGroups& known, SummaryColumns& out) const;

 private:
  std::vector<SummaryKey> keys_;
  // The grouped values of `entry` into key_.
  void keyOf(const Entry& entry);
  // The other way: an entry with only the grouped fields set, from a group's key bytes.
  Entry entryOfKey(const uint8_t* keyBytes) const;

  // The slot of key_ (its hash `hash`): the group's, or the empty one where it would go.
  uint8_t* slotOf(uint32_t hash);
  void grow();

  // A new group's id: a free one, its generation advanced.
  uint32_t takeId();

  // A slot: u32 hash, u32 count (0: empty), u32 id, then keyLen_ key bytes.
  static constexpr size_t kSlotHeader = 12;
  size_t keyLen_ = 0;
  size_t stride_ = 0;
  size_t capacity_ = 0;  // slots; a power of two
  size_t used_ = 0;
  std::vector<uint8_t> slots_;
  std::string key_;
  // Ids stay with their group while it lives, wherever its slot moves: a caller can keep what it
  // built for a group (its key's JS object) across answers.
  std::vector<uint32_t> generations_;  // by id
  std::vector<uint32_t> freeIds_;
};

}  // namespace ct
