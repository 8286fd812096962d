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

#include "ct_dump.h"
#include "filter.h"
#include "mirror.h"
#include "sys_error.h"

namespace ct {

class MirrorSession {
 public:
  // `synced(ok, err)` runs on the session's thread after each dump (the first fills the store).
  MirrorSession(int nsFd, const Filter* filter, EventOptions events, std::function<void(bool, const SysError&)> synced);
  ~MirrorSession();
  bool start(SysError& err);
  void stop();
  MirrorStore& store() { return store_; }
  uint64_t overflows() const { return overflows_.load(); }
  DumpCounters eventCounters() const;

 private:
  void run();
  void requestSync();

  int nsFd_ = -1;
  Filter filter_;
  bool hasFilter_;
  EventOptions eventOptions_;
  std::function<void(bool, const SysError&)> synced_;
  MirrorStore store_;
  std::unique_ptr<DumpSession> events_;
  std::thread thread_;
  std::mutex mu_;
  std::condition_variable wake_;
  bool syncWanted_ = false;
  bool dumpEnded_ = false;
  bool stopping_ = false;
  std::atomic<uint64_t> overflows_{0};
};

}  // namespace ct
