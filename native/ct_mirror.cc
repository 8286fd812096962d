#include "ct_mirror.h"

#include <fcntl.h>
#include <unistd.h>

namespace ct {

MirrorSession::MirrorSession(int nsFd, const Filter* filter, EventOptions events,
                             std::function<void(bool, const SysError&)> synced)
    : hasFilter_(filter != nullptr), eventOptions_(std::move(events)), synced_(std::move(synced)) {
  if (filter) filter_ = *filter;
  if (nsFd >= 0) nsFd_ = ::fcntl(nsFd, F_DUPFD_CLOEXEC, 0);
}

MirrorSession::~MirrorSession() { stop(); }

void MirrorSession::requestSync() {
  std::lock_guard<std::mutex> lock(mu_);
  syncWanted_ = true;
  wake_.notify_all();
}

bool MirrorSession::start(SysError& err) {
  EventOptions options = eventOptions_;
  // Subscribed first, dumped after: nothing happens between the two unseen.
  options.subscribed = [this] { requestSync(); };
  events_ = std::make_unique<DumpSession>(nsFd_, hasFilter_ ? &filter_ : nullptr, 256, [] {}, &options);
  events_->consumeWith([this](const Entry& e) { store_.applyEvent(e); },
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
  if (nsFd_ >= 0) {
    ::close(nsFd_);
    nsFd_ = -1;
  }
}

DumpCounters MirrorSession::eventCounters() const { return events_ ? events_->counters() : DumpCounters{}; }

void MirrorSession::run() {
  for (;;) {
    {
      std::unique_lock<std::mutex> lock(mu_);
      wake_.wait(lock, [this] { return syncWanted_ || stopping_; });
      if (stopping_) return;
      syncWanted_ = false;
      dumpEnded_ = false;
    }
    store_.beginSync();
    DumpSession dump(nsFd_, hasFilter_ ? &filter_ : nullptr, 1024, [this] {
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
    if (ok) store_.endSync();
    synced_(ok, err);
  }
}

}  // namespace ct
