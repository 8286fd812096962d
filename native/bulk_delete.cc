#include "bulk_delete.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <linux/netfilter/nfnetlink_conntrack.h>
#include <linux/netlink.h>

#include <cstring>
#include <thread>

#include "decode.h"
#include "dedup.h"
#include "flush_probe.h"
#include "netlink_socket.h"
#include "netns.h"
#include "requests.h"
#include "transaction.h"
#include "wire.h"

namespace ct {
namespace {

// Batches built ahead of the sender: enough to keep it busy, few enough to bound memory.
constexpr size_t kMaxQueuedBatches = 8;
// A delete request is about 100 bytes; this is room for any.
constexpr size_t kMaxDeleteRequest = 512;

// The request that deletes exactly this entry: original tuple, zone and id.
EntrySpec deleteSpecOf(const Entry& e) {
  EntrySpec s;
  s.family = e.family;
  s.orig = e.orig;
  // A directional zone travels in the tuple (CTA_TUPLE_ZONE), the usual one as CTA_ZONE; the
  // kernel refuses both at once.
  if (!(s.orig.has & kTupleHasZone) && (e.present & kHasZone)) {
    s.hasZone = true;
    s.zone = e.zone;
  }
  if (e.present & kHasId) {
    s.hasId = true;
    s.id = e.id;
  }
  return s;
}

// One count of the namespace's entries (GET_STATS), or -1.
int64_t tableCount(NetlinkSocket& socket) {
  Transaction t(Transaction::Kind::kGlobalStats);
  std::vector<uint8_t> buffer;
  SysError err;
  if (!t.begin(socket, err)) return -1;
  for (int waited = 0; waited < 100; ++waited) {
    int state = t.pump(socket, buffer, err);
    if (state < 0) return -1;
    if (state == 1) {
      const std::vector<uint32_t>& pairs = t.pairs();
      for (size_t i = 0; i + 1 < pairs.size(); i += 2)
        if (pairs[i] == CTA_STATS_GLOBAL_ENTRIES) return pairs[i + 1];
      return -1;
    }
    pollfd fd{socket.fd(), POLLIN, 0};
    ::poll(&fd, 1, 50);
  }
  return -1;
}

// What the dump's thread does with each message: decode, drop repeats, match, queue a delete.
class DeleteSink : public MessageSink {
 public:
  DeleteSink(const std::vector<Filter>& filters, std::atomic<uint64_t>* matchedBy, size_t perBatch,
             std::function<bool(std::unique_ptr<RequestBatch>)> full)
      : filters_(filters), matchedBy_(matchedBy), perBatch_(perBatch), full_(std::move(full)),
        batch_(std::make_unique<RequestBatch>()) {}

  bool onMessage(const MessageView& m, SysError& err) override {
    if (m.kind != MessageKind::kEntry) return true;
    Entry e;
    if (!decodeEntry(m, e, err)) return false;
    if (!seen_.insert(dedupKey(e))) {
      ++duplicates;
      return true;
    }
    ++scanned;
    bool any = false;
    for (size_t i = 0; i < filters_.size(); ++i) {
      if (!matches(filters_[i], e)) continue;
      any = true;
      matchedBy_[i].fetch_add(1, std::memory_order_relaxed);
    }
    if (!any) return true;
    ++matched;
    EntrySpec spec = deleteSpecOf(e);
    uint8_t* at = batch_->reserve(kMaxDeleteRequest);
    batch_->commit(buildEntryRequest(at, kMaxDeleteRequest, EntryOp::kDelete, 0, spec), 0);
    if (batch_->count() >= perBatch_) return flush();
    return true;
  }

  // Hands the batch being filled to the sender; false when the session stops.
  bool flush() {
    if (batch_->count() == 0) return true;
    std::unique_ptr<RequestBatch> next = std::make_unique<RequestBatch>();
    std::swap(next, batch_);
    if (full_(std::move(next))) return true;
    stopped = true;
    return false;
  }

  uint64_t scanned = 0, duplicates = 0, matched = 0;
  bool stopped = false;

 private:
  const std::vector<Filter>& filters_;
  std::atomic<uint64_t>* matchedBy_;
  size_t perBatch_;
  std::function<bool(std::unique_ptr<RequestBatch>)> full_;
  std::unique_ptr<RequestBatch> batch_;
  KeySet seen_;
};

// Scans a datagram for the end of our dump and its error, without decoding it (as ct_dump.cc).
struct DumpEnd {
  bool end = false;
  int error = 0;
  bool entries = false;
};

DumpEnd scanEnd(const uint8_t* data, size_t len, uint32_t seq) {
  DumpEnd d;
  SysError ignored;
  bool framed = forEachMessage(data, len, ignored, [&](const nlmsghdr& h, const uint8_t* payload, size_t payloadLen) {
    if (h.nlmsg_seq != seq) return Next::kContinue;
    if (h.nlmsg_type == NLMSG_DONE || h.nlmsg_type == NLMSG_ERROR) {
      d.end = true;
      int code = 0;
      if (payloadLen >= sizeof code) std::memcpy(&code, payload, sizeof code);
      int errnum = 0;
      if (kernelErrno(code, errnum)) d.error = errnum;
      return Next::kStop;
    }
    if (h.nlmsg_type >= NLMSG_MIN_TYPE) d.entries = true;
    return Next::kContinue;
  });
  if (!framed) d.end = true;
  return d;
}

}  // namespace

DeleteSession::DeleteSession(int nsFd, std::vector<Filter> filters, bool allowFlush)
    : netns_(nsFd), filters_(std::move(filters)), allowFlush_(allowFlush) {
  matchedBy_ = std::make_unique<std::atomic<uint64_t>[]>(filters_.size());
  for (size_t i = 0; i < filters_.size(); ++i) matchedBy_[i].store(0);
  wakeFd_ = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (wakeFd_ < 0) wakeErrno_ = errno;
}

DeleteSession::~DeleteSession() {
  if (wakeFd_ >= 0) ::close(wakeFd_);
}

void DeleteSession::stop() {
  stopping_.store(true);
  {
    std::lock_guard<std::mutex> lock(mu_);
    ready_.notify_all();
    space_.notify_all();
  }
  if (wakeFd_ >= 0) {
    uint64_t one = 1;
    ssize_t ignored = ::write(wakeFd_, &one, sizeof one);
    (void)ignored;
  }
}

DeleteCounters DeleteSession::counters() const {
  DeleteCounters c;
  c.scanned = scanned_.load();
  c.duplicates = duplicates_.load();
  c.matched = matched_.load();
  c.deleted = deleted_.load();
  c.alreadyGone = gone_.load();
  c.failed = failed_.load();
  c.firstErrno = firstErrno_.load();
  c.kernelFlush = kernelFlush_.load();
  for (size_t i = 0; i < filters_.size(); ++i) c.matchedBy.push_back(matchedBy_[i].load());
  return c;
}

bool DeleteSession::run(SysError& err) {
  if (wakeFd_ < 0) {
    err = SysError::fromErrno(wakeErrno_, "eventfd");
    return false;
  }
  NetlinkSocket dumpSocket, deleteSocket;
  bool opened = false;
  auto open = [&] { opened = dumpSocket.open(true, err) && deleteSocket.open(true, err); };
  if (!netns_.run(open, err) || !opened) return false;
  // The probe (once per process) only for a filter a flush could carry.
  if (filters_.size() == 1 && allowFlush_ && flushCanExpress(filters_[0]) && flushCovers(filters_[0], flushSupport()))
    return flushPath(dumpSocket, err);
  return dumpPath(dumpSocket, deleteSocket, err);
}

bool DeleteSession::flushPath(NetlinkSocket& socket, SysError& err) {
  if (stopping_.load()) return true;
  int64_t before = tableCount(socket);
  std::vector<uint8_t> request(256);
  size_t len = buildFilteredFlushRequest(request.data(), request.size(), 0, filters_[0]);
  request.resize(len);
  Transaction flush(std::move(request));
  std::vector<uint8_t> buffer;
  if (!flush.begin(socket, err)) return false;
  for (;;) {
    int state = flush.pump(socket, buffer, err);
    if (state < 0) return false;
    if (state == 1) break;
    pollfd fd{socket.fd(), POLLIN, 0};
    ::poll(&fd, 1, 100);
  }
  int64_t after = tableCount(socket);
  // The kernel says how many it deleted nowhere: the drop of the count is the best measure (an
  // entry made meanwhile hides one deleted).
  uint64_t went = before >= 0 && after >= 0 && before > after ? static_cast<uint64_t>(before - after) : 0;
  kernelFlush_.store(true);
  matched_.store(went);
  deleted_.store(went);
  matchedBy_[0].store(went);
  return true;
}

bool DeleteSession::queue(std::unique_ptr<RequestBatch> batch) {
  std::unique_lock<std::mutex> lock(mu_);
  space_.wait(lock, [this] { return queue_.size() < kMaxQueuedBatches || stopping_.load() || sendFailed_; });
  if (stopping_.load() || sendFailed_) return false;
  queue_.push_back(std::move(batch));
  ready_.notify_one();
  return true;
}

void DeleteSession::send(NetlinkSocket& socket) {
  std::vector<uint8_t> buffer(kReceiveBufferSize);
  for (;;) {
    std::unique_ptr<RequestBatch> batch;
    {
      std::unique_lock<std::mutex> lock(mu_);
      ready_.wait(lock, [this] { return !queue_.empty() || dumpDone_ || stopping_.load(); });
      if (stopping_.load() || queue_.empty()) return;  // stopped, or the dump is done and all sent
      batch = std::move(queue_.front());
      queue_.pop_front();
      space_.notify_one();
    }
    uint64_t refused = 0;
    SysError err;
    bool ok = sendBatch(socket, *batch, buffer, [&](uint64_t, int errnum) {
      ++refused;
      if (errnum == ENOENT) {
        gone_.fetch_add(1, std::memory_order_relaxed);
        return;
      }
      failed_.fetch_add(1, std::memory_order_relaxed);
      int none = 0;
      firstErrno_.compare_exchange_strong(none, errnum);
    }, err);
    if (!ok) {
      std::lock_guard<std::mutex> lock(mu_);
      sendFailed_ = true;
      sendError_ = err;
      space_.notify_all();
      return;
    }
    deleted_.fetch_add(batch->count() - refused, std::memory_order_relaxed);
  }
}

bool DeleteSession::dumpPath(NetlinkSocket& dumpSocket, NetlinkSocket& deleteSocket, SysError& err) {
  perBatch_ = prepareBatchSocket(deleteSocket);
  int rcvbuf = 1 << 20;  // room for the kernel to run ahead of the decoding
  ::setsockopt(dumpSocket.fd(), SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);

  // Past this point nothing may throw out of this function while the sender runs: a joinable
  // std::thread destroyed by an exception ends the process. Both sides catch and report instead.
  std::thread sender([this, &deleteSocket] {
    try {
      send(deleteSocket);
    } catch (...) {  // bad_alloc: the pass fails, the process goes on
      std::lock_guard<std::mutex> lock(mu_);
      sendFailed_ = true;
      sendError_ = SysError::fromCurrentException("delete sender");
      space_.notify_all();
    }
  });
  bool ok = true;
  try {
    ok = scan(dumpSocket, err);
  } catch (...) {
    err = SysError::fromCurrentException("delete scan");
    ok = false;
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    dumpDone_ = true;  // the sender sends what is queued, then ends
    ready_.notify_all();
  }
  sender.join();
  if (!ok) return false;
  std::lock_guard<std::mutex> lock(mu_);
  if (sendFailed_) {
    err = sendError_;
    return false;
  }
  return true;
}

// The dump and the matching, on the calling thread; matches go to the sender's queue.
bool DeleteSession::scan(NetlinkSocket& dumpSocket, SysError& err) {
  DeleteSink sink(filters_, matchedBy_.get(), perBatch_,
                  [this](std::unique_ptr<RequestBatch> batch) { return queue(std::move(batch)); });
  // One filter: the kernel may pre-filter the dump with it. Several: it cannot (they are ORed).
  const Filter* pushed = filters_.size() == 1 && filters_[0].kernel ? &filters_[0] : nullptr;
  bool kernelFilter = pushed != nullptr;
  std::vector<uint8_t> request(4096), buffer(kReceiveBufferSize);
  bool ok = true;
  bool finished = false;
  bool sawEntries = false;
  while (ok && !finished && !stopping_.load()) {  // one pass, or two when the kernel refuses the filter
    uint32_t seq = dumpSocket.nextSeq();
    size_t len = buildDumpRequest(request.data(), request.size(), seq, kernelFilter ? pushed : nullptr);
    if (len == 0) {
      err = SysError::fromErrno(EMSGSIZE, "build dump request");
      ok = false;
      break;
    }
    if (!dumpSocket.send(request.data(), len, err)) {
      ok = false;
      break;
    }
    bool retry = false;
    while (!stopping_.load()) {
      pollfd fds[2] = {{dumpSocket.fd(), POLLIN, 0}, {wakeFd_, POLLIN, 0}};
      if (::poll(fds, 2, -1) < 0) {
        if (errno == EINTR) continue;
        err = SysError::fromErrno(errno, "poll");
        ok = false;
        break;
      }
      if (stopping_.load() || (fds[1].revents & POLLIN)) break;
      long n = dumpSocket.receive(buffer.data(), buffer.size(), err, true);
      if (n < 0) {
        ok = false;
        break;
      }
      if (n == 0) continue;
      DumpEnd end = scanEnd(buffer.data(), static_cast<size_t>(n), seq);
      sawEntries = sawEntries || end.entries;
      // A kernel that refuses our filter attributes (EOPNOTSUPP, EINVAL): ask again without them.
      if (end.error != 0 && kernelFilter && !sawEntries && (end.error == EOPNOTSUPP || end.error == EINVAL)) {
        kernelFilter = false;
        retry = true;
        break;
      }
      bool done = false;
      if (!walkDatagram(buffer.data(), static_cast<size_t>(n), seq, sink, done, err)) {
        if (!sink.stopped) ok = false;
        break;
      }
      scanned_.store(sink.scanned, std::memory_order_relaxed);
      duplicates_.store(sink.duplicates, std::memory_order_relaxed);
      matched_.store(sink.matched, std::memory_order_relaxed);
      if (done) {
        finished = true;
        break;
      }
    }
    if (!retry) break;
  }
  if (ok && finished) sink.flush();
  scanned_.store(sink.scanned);
  duplicates_.store(sink.duplicates);
  matched_.store(sink.matched);
  return ok;
}

}  // namespace ct
