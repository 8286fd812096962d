#include "ct_mirror.h"

#include <fcntl.h>
#include <unistd.h>

#include <chrono>

namespace ct {

MirrorSession::MirrorSession(int nsFd, const Filter* filter, EventOptions events, uint32_t resyncIntervalMs,
                             std::function<void(const SyncReport&)> synced, std::function<void()> changed)
    : netns_(nsFd),
      hasFilter_(filter != nullptr),
      eventOptions_(std::move(events)),
      resyncIntervalMs_(resyncIntervalMs),
      synced_(std::move(synced)),
      changed_(std::move(changed)) {
  if (filter) filter_ = *filter;
}

MirrorSession::~MirrorSession() { stop(); }

void MirrorSession::requestSync() {
  std::lock_guard<std::mutex> lock(mu_);
  syncWanted_ = true;
  wake_.notify_all();
}

bool MirrorSession::start(SysError& err) {
  if (!netns_.check(err)) return false;
  EventOptions options = eventOptions_;
  // Subscribed first, dumped after: nothing happens between the two unseen.
  options.subscribed = [this] { requestSync(); };
  events_ = std::make_unique<DumpSession>(netns_.fd(), hasFilter_ ? &filter_ : nullptr, 256, [] {}, &options);
  events_->consumeWith([this](const Entry& e) {
                         if (store_.applyEvent(e) != MirrorChange::kNone && watching_.load(std::memory_order_relaxed)) recordChange(e);
                       },
                       [this] {
                         overflows_.fetch_add(1, std::memory_order_relaxed);
                         requestSync();
                       });
  thread_ = std::thread([this] { run(); });
  return events_->start(err);
}

void MirrorSession::stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
    wake_.notify_all();
  }
  if (events_) events_->stop();
  if (thread_.joinable()) thread_.join();
  netns_.reset();
}

void MirrorSession::watchChanges(bool on) {
  watching_.store(on);
  if (on) return;
  std::lock_guard<std::mutex> lock(changesMu_);
  changes_.clear();
  changesDropped_ = 0;
}

void MirrorSession::recordChange(const Entry& e) {
  bool first;
  {
    std::lock_guard<std::mutex> lock(changesMu_);
    first = changes_.count == 0 && changesDropped_ == 0;
    if (changes_.count >= kMaxPendingChanges) ++changesDropped_;
    else appendRecord(changes_, e);
  }
  if (first) changed_();
}

void MirrorSession::takeChanges(Batch& out) {
  out.clear();
  std::lock_guard<std::mutex> lock(changesMu_);
  std::swap(out, changes_);
  out.overflowsBefore = changesDropped_;
  changesDropped_ = 0;
}

DumpCounters MirrorSession::eventCounters() const { return events_ ? events_->counters() : DumpCounters{}; }

void MirrorSession::run() {
  for (;;) {
    SyncReport report;
    {
      std::unique_lock<std::mutex> lock(mu_);
      auto due = [this] { return syncWanted_ || stopping_; };
      // The periodic resync counts from the end of the last sync, whatever its reason.
      if (filled_ && resyncIntervalMs_ > 0) {
        // The system clock, not wait_for's steady one: libstdc++ waits on that with
        // pthread_cond_clockwait, a GLIBC_2.34 symbol the prebuilds may not ask for.
        auto deadline = std::chrono::system_clock::now() + std::chrono::milliseconds(resyncIntervalMs_);
        if (!wake_.wait_until(lock, deadline, due)) syncWanted_ = true;
      } else {
        wake_.wait(lock, due);
      }
      if (stopping_) return;
      report.reason = !filled_ ? SyncReason::kInitial
                      : overflows_.load() > overflowsSeen_ ? SyncReason::kOverflow
                                                           : SyncReason::kInterval;
      overflowsSeen_ = overflows_.load();
      syncWanted_ = false;
      dumpEnded_ = false;
    }
    store_.beginSync();
    DumpSession dump(netns_.fd(), hasFilter_ ? &filter_ : nullptr, 1024, [this] {
      std::lock_guard<std::mutex> lock(mu_);
      dumpEnded_ = true;
      wake_.notify_all();
    });
    dump.consumeWith([this](const Entry& e) { store_.applyDump(e); });
    SysError err;
    bool ok = dump.start(err);
    if (ok) {
      for (;;) {
        {
          std::unique_lock<std::mutex> lock(mu_);
          wake_.wait(lock, [this] { return dumpEnded_ || stopping_; });
          if (stopping_) return;  // the dump stops as it goes out of scope
          dumpEnded_ = false;
        }
        Batch ignored;
        DumpSession::Take t = dump.take(ignored, err);
        if (t == DumpSession::Take::kEnd) break;
        if (t == DumpSession::Take::kError) {
          ok = false;
          break;
        }
      }
    }
    dump.stop();
    // A failed dump leaves the store as it was, still marked as syncing: the next sync retries.
    if (ok) {
      report.result = store_.endSync();
      std::lock_guard<std::mutex> lock(mu_);
      filled_ = true;
    }
    report.ok = ok;
    report.err = err;
    synced_(report);
  }
}

}  // namespace ct
