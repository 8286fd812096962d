// The mirror's store: a live copy of the table, entries keyed by original tuple and zone, fed by
// a dump and by events at once and reconciled (an event seen during a dump wins over the dump's
// copy; a destroy removes). Queries read it under its lock; nothing asks the kernel.
#pragma once

#include <cstddef>
#include <cstdint>
#include <mutex>
#include <string>
#include <unordered_map>

#include "entry.h"
#include "filter.h"
#include "records.h"
#include "summary.h"

namespace ct {

// Original tuple and zone as bytes: the kernel's identity of an entry.
std::string mirrorKey(const Tuple& orig, uint32_t zone);

class MirrorStore {
 public:
  // A dump begins: what it does not show, and no event touches meanwhile, is gone at its end.
  void beginSync();
  void applyDump(const Entry& e);
  void applyEvent(const Entry& e);
  // The dump ended: drops entries neither the dump nor an event showed, and destroy markers.
  void endSync();

  size_t size();
  // Appends the entry under `key` to `batch`; false when there is none.
  bool get(const std::string& key, Batch& batch);
  // Every entry that matches `filter` (null: all).
  void entries(const Filter* filter, Batch& batch);
  void summarize(const Filter* filter, Grouper& grouper);
  // Bytes the store holds beyond its entries' count (the table's nodes and buckets).
  size_t bytes();

 private:
  struct Slot {
    Entry entry;
    uint32_t seenGen = 0;     // the sync (or event during it) that last showed it
    uint32_t eventGen = 0;    // the sync during which an event last touched it
    bool destroyed = false;   // a destroy during a sync: kept so the dump does not revive it
  };
  std::mutex mu_;
  std::unordered_map<std::string, Slot> slots_;
  size_t live_ = 0;
  uint32_t gen_ = 0;
  bool syncing_ = false;
};

}  // namespace ct
