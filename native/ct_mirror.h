// A mirror session: an event subscription that feeds a MirrorStore, and a dump that fills it,
// started once the subscription listens and again after every overflow (a resync), on a thread
// of its own. The store answers queries meanwhile.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>

#include "records.h"

#include "ct_dump.h"
#include "filter.h"
#include "mirror.h"
#include "netns.h"
#include "sys_error.h"

namespace ct {

// Why a dump ran: the first fill, lost events, or the periodic resync.
enum class SyncReason : uint8_t { kInitial, kOverflow, kInterval };

struct SyncReport {
  bool ok = false;
  SysError err;
  SyncReason reason = SyncReason::kInitial;
  MirrorStore::SyncResult result;
};

class MirrorSession {
 public:
  // `synced` runs on the session's thread after each dump (the first fills the store); `changed`
  // on the event thread when changes wait to be taken and none waited before. A resync runs
  // every `resyncIntervalMs` after the last one (0: only on overflow).
  MirrorSession(int nsFd, const Filter* filter, EventOptions events, uint32_t resyncIntervalMs,
                std::function<void(const SyncReport&)> synced, std::function<void()> changed);
  ~MirrorSession();
  bool start(SysError& err);
  void stop();
  MirrorStore& store() { return store_; }
  uint64_t overflows() const { return overflows_.load(); }
  DumpCounters eventCounters() const;
  // Change records are kept (at most kMaxPendingChanges, beyond that counted as dropped) only
  // while someone watches.
  void watchChanges(bool on);
  // Moves the waiting change records into `out`; out.overflowsBefore: changes dropped meanwhile.
  void takeChanges(Batch& out);
  static constexpr size_t kMaxPendingChanges = 1 << 20;

 private:
  void run();
  void requestSync();
  void recordChange(const Entry& e);

  NetnsCopy netns_;
  Filter filter_;
  bool hasFilter_;
  EventOptions eventOptions_;
  uint32_t resyncIntervalMs_;
  std::function<void(const SyncReport&)> synced_;
  std::function<void()> changed_;
  std::atomic<bool> watching_{false};
  std::mutex changesMu_;
  Batch changes_;
  uint32_t changesDropped_ = 0;
  MirrorStore store_;
  std::unique_ptr<DumpSession> events_;
  std::thread thread_;
  std::mutex mu_;
  std::condition_variable wake_;
  bool syncWanted_ = false;
  bool filled_ = false;  // the first dump ended
  uint64_t overflowsSeen_ = 0;  // overflows_ when the last sync began
  bool dumpEnded_ = false;
  bool stopping_ = false;
  std::atomic<uint64_t> overflows_{0};
};

}  // namespace ct
