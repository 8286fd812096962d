// deleteMatching() in native code: one pass over the table for any number of filters, and no
// JS round trip per entry. When a single filtered flush deletes exactly what the filter selects
// on this kernel (flush_probe.*), that one request is all. Otherwise the dump runs on the calling
// thread, which decodes each entry, checks it against the filters and queues a delete request
// for each match (its original tuple, zone and id: a newer entry with the same tuple stays), and
// a second thread sends the queue in batches (pipeline.*) while the dump goes on. An entry gone
// before its delete arrived (ENOENT) is counted as already gone, not as a failure.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <vector>

#include "filter.h"
#include "netns.h"
#include "pipeline.h"
#include "sys_error.h"

namespace ct {

struct DeleteCounters {
  uint64_t scanned = 0;      // entries the dump handed over (repeats dropped)
  uint64_t duplicates = 0;   // repeats the dump sent and that were dropped
  uint64_t matched = 0;      // entries that matched a filter
  uint64_t deleted = 0;
  uint64_t alreadyGone = 0;  // matched, but gone before the delete (ENOENT)
  uint64_t failed = 0;       // refused with another error (firstErrno)
  int firstErrno = 0;
  bool kernelFlush = false;  // one filtered flush did it (matched = deleted: the count's drop)
  std::vector<uint64_t> matchedBy;  // per filter; an entry can match several
};

class DeleteSession {
 public:
  // `nsFd`: the namespace (-1: this thread's); it is duplicated. `allowFlush` false keeps to the
  // entry-by-entry path (exact counts, the same on every kernel).
  DeleteSession(int nsFd, std::vector<Filter> filters, bool allowFlush);
  ~DeleteSession();
  DeleteSession(const DeleteSession&) = delete;
  DeleteSession& operator=(const DeleteSession&) = delete;

  // Runs to the end, or until stop(). Blocks; call it on a thread that may block (never inside
  // another namespace: the sockets are made in `nsFd`'s on a short-lived thread). False with
  // `err` on failure; after stop() it returns true and stopped() says so.
  bool run(SysError& err);
  // From any thread: ends run() soon (the batch being sent still completes).
  void stop();
  bool stopped() const { return stopping_.load(); }
  DeleteCounters counters() const;

 private:
  bool flushPath(NetlinkSocket& socket, SysError& err);
  bool dumpPath(NetlinkSocket& dumpSocket, NetlinkSocket& deleteSocket, SysError& err);
  bool scan(NetlinkSocket& dumpSocket, SysError& err);
  void send(NetlinkSocket& socket);
  bool queue(std::unique_ptr<RequestBatch> batch);  // false when stopping

  NetnsCopy netns_;
  int wakeFd_ = -1;
  int wakeErrno_ = 0;  // why the eventfd could not be made
  std::vector<Filter> filters_;
  bool allowFlush_;
  size_t perBatch_ = 1;
  std::atomic<bool> stopping_{false};

  // Dump thread -> sender thread.
  std::mutex mu_;
  std::condition_variable ready_, space_;
  std::deque<std::unique_ptr<RequestBatch>> queue_;
  bool dumpDone_ = false;
  bool sendFailed_ = false;
  SysError sendError_;

  std::atomic<uint64_t> scanned_{0}, duplicates_{0}, matched_{0}, deleted_{0}, gone_{0}, failed_{0};
  std::atomic<int> firstErrno_{0};
  std::atomic<bool> kernelFlush_{false};
  std::unique_ptr<std::atomic<uint64_t>[]> matchedBy_;
};

}  // namespace ct
