// The mirror's store: a live copy of the table, entries keyed by original tuple and zone, fed by
// a dump and by events at once and reconciled (an event seen during a dump wins over the dump's
// copy; a destroy removes). Queries read it under its lock; nothing asks the kernel.
//
// Memory: each entry is one heap block in a compact form (mirror_codec: addresses sized by
// family, optional parts only when the kernel sent them, the reply tuple left out when it is the
// original reversed), found through an open-addressing table of pointers (linear probing,
// backward-shift deletion: no tombstones, no per-node allocation).
#pragma once

#include <cstddef>
#include <cstdint>
#include <mutex>
#include <string>
#include <vector>

#include "entry.h"
#include "filter.h"
#include "records.h"
#include "summary.h"

namespace ct {

// Original tuple and zone as bytes: the kernel's identity of an entry.
std::string mirrorKey(const Tuple& orig, uint32_t zone);

// What a change did to the store (events only): lets the session count and report changes.
enum class MirrorChange : uint8_t { kNone, kNew, kUpdate, kDestroy };

class MirrorStore {
 public:
  MirrorStore();
  ~MirrorStore();
  MirrorStore(const MirrorStore&) = delete;
  MirrorStore& operator=(const MirrorStore&) = delete;

  // A dump begins: what it does not show, and no event touches meanwhile, is gone at its end.
  void beginSync();
  void applyDump(const Entry& e);
  MirrorChange applyEvent(const Entry& e);
  // The dump ended: drops entries neither the dump nor an event showed, and destroy markers.
  // Returns how many entries the sync removed and added (events during it not counted).
  struct SyncResult {
    size_t removed = 0;
    size_t added = 0;
  };
  SyncResult endSync();

  size_t size();
  // Appends the entry under `key` to `batch`; false when there is none.
  bool get(const std::string& key, Batch& batch);
  // Every entry that matches `filter` (null: all).
  void entries(const Filter* filter, Batch& batch);
  void summarize(const Filter* filter, Grouper& grouper);
  // Native bytes the store holds: the table and every entry's block as the allocator sized it.
  size_t bytes();

 private:
  uint8_t** find(const uint8_t* key, size_t keyLen, uint32_t hash);
  void insertNew(uint8_t* block);
  void eraseAt(size_t index);
  void replace(uint8_t** slot, uint8_t* block);
  void rehash(size_t capacity);

  std::mutex mu_;
  std::vector<uint8_t*> table_;  // power-of-two size; null: empty
  size_t used_ = 0;              // blocks in the table, destroy markers included
  size_t live_ = 0;
  size_t blockBytes_ = 0;
  uint32_t gen_ = 0;
  bool syncing_ = false;
  size_t syncAdded_ = 0;
};

}  // namespace ct
