// The mirror's store: a live copy of the table, entries keyed by original tuple and zone, fed by
// a dump and by events at once and reconciled (an event seen during a dump wins over the dump's
// copy; a destroy removes). Queries read it under its lock; nothing asks the kernel.
//
// Memory: each entry is one heap block in a compact form (mirror_codec: addresses sized by
// family, optional parts only when the kernel sent them, the reply tuple left out when it is the
// original reversed), found through an open-addressing table of pointers (linear probing,
// backward-shift deletion: no tombstones, no per-node allocation).
//
// Live summaries: the first summarize() of a grouping (keys and filter) scans the store; the
// store then keeps that grouping's counts current on every change, so the same question asked
// again (a `top --live` refresh, an exporter's breakdown) costs its number of groups, not a scan.
// At most kMaxViews groupings are kept, the least recently asked dropped first, and none with more
// than kMaxViewGroups groups (a grouping by address on a big table would cost more to keep).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
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
  // The largest `top` groups (0: all) of `keys` over the entries `filter` matches (null: all),
  // from the live summary of that grouping when one is kept. `known` are the groups whose keys
  // the caller holds from earlier answers of kept grouping `knownGrouping` (out.grouping); they
  // count only if that grouping is the one answering.
  void summarize(const Filter* filter, const std::vector<SummaryKey>& keys, size_t top, uint64_t knownGrouping,
                 const KnownGroups& known, SummaryColumns& out);
  // Live summaries kept now.
  size_t views();
  static constexpr size_t kMaxViews = 8;
  static constexpr size_t kMaxViewGroups = 100000;
  // Native bytes the store holds: the table and every entry's block as the allocator sized it.
  size_t bytes();

 private:
  uint8_t** find(const uint8_t* key, size_t keyLen, uint32_t hash);
  void insertNew(uint8_t* block);
  void eraseAt(size_t index);
  void replace(uint8_t** slot, uint8_t* block);
  void rehash(size_t capacity);
  // A live entry changes: `before` is what it was until now (null: it was not live), `after` what
  // it is from now on (null: it leaves). Updates every live summary.
  void changed(const Entry* before, const Entry* after);
  // The same with `before` still in its block (decoded only when a live summary needs it).
  void changedBlock(const uint8_t* before, const Entry* after);

  struct View {
    std::optional<Filter> filter;
    Grouper grouper;
    uint64_t lastAsked = 0;
    uint64_t id = 0;  // never reused: a caller's known groups name the view they came from
  };

  std::mutex mu_;
  std::vector<uint8_t*> table_;  // power-of-two size; null: empty
  size_t used_ = 0;              // blocks in the table, destroy markers included
  size_t live_ = 0;
  size_t blockBytes_ = 0;
  uint32_t gen_ = 0;
  bool syncing_ = false;
  size_t syncAdded_ = 0;
  std::vector<std::unique_ptr<View>> views_;
  uint64_t asked_ = 0;
  uint64_t viewsMade_ = 0;
};

}  // namespace ct
