#include "ct_dump.h"

#include <errno.h>
#include <poll.h>
#include <fcntl.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <linux/netlink.h>

#include "netlink_socket.h"
#include "netns.h"

namespace ct {
namespace {

// Batches waiting for JS. Two let decoding run one batch ahead of JS without piling up.
constexpr size_t kMaxQueued = 2;
// A batch's text must fit string refs; stop well before that.
constexpr size_t kMaxBatchText = 4u << 20;

class DumpSink : public MessageSink {
 public:
  DumpSink(const Filter* filter, KeySet& seen, Batch& batch, std::atomic<uint64_t>& messages,
           std::atomic<uint64_t>& duplicates, std::atomic<uint64_t>& filteredOut,
           std::atomic<bool>& kernelFiltered)
      : filter_(filter), seen_(seen), batch_(batch), messages_(messages), duplicates_(duplicates),
        filteredOut_(filteredOut), kernelFiltered_(kernelFiltered) {}

  bool onMessage(const MessageView& m, SysError& err) override {
    if (m.kind != MessageKind::kEntry) return true;
    messages_.fetch_add(1, std::memory_order_relaxed);
    if (m.flags & NLM_F_DUMP_FILTERED) kernelFiltered_.store(true, std::memory_order_relaxed);
    Entry e;
    if (!decodeEntry(m, e, err)) return false;
    if (filter_ && !matches(*filter_, e)) {
      filteredOut_.fetch_add(1, std::memory_order_relaxed);
      return true;
    }
    // A dump that resumes inside a changed hash bucket can send an entry twice.
    if (!seen_.insert(dedupKey(e))) {
      duplicates_.fetch_add(1, std::memory_order_relaxed);
      return true;
    }
    appendRecord(batch_, e);
    return true;
  }

 private:
  const Filter* filter_;
  KeySet& seen_;
  Batch& batch_;
  std::atomic<uint64_t>& messages_;
  std::atomic<uint64_t>& duplicates_;
  std::atomic<uint64_t>& filteredOut_;
  std::atomic<bool>& kernelFiltered_;
};

}  // namespace

DumpSession::DumpSession(int nsFd, const Filter* filter, size_t batchSize, std::function<void()> notify)
    : hasFilter_(filter != nullptr), batchSize_(batchSize == 0 ? 1 : batchSize), notify_(std::move(notify)) {
  if (filter) filter_ = *filter;
  if (nsFd >= 0) nsFd_ = ::fcntl(nsFd, F_DUPFD_CLOEXEC, 0);
}

DumpSession::~DumpSession() {
  stop();
  if (nsFd_ >= 0) ::close(nsFd_);
  if (wakeFd_ >= 0) ::close(wakeFd_);
}

bool DumpSession::start(SysError& err) {
  wakeFd_ = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (wakeFd_ < 0) {
    err = SysError::fromErrno(errno, "eventfd");
    return false;
  }
  thread_ = std::thread([this] { run(); });
  return true;
}

void DumpSession::stop() {
  stopping_.store(true);
  {
    std::lock_guard<std::mutex> lock(mu_);
    spaceAvailable_.notify_all();
  }
  if (wakeFd_ >= 0) {
    uint64_t one = 1;
    ssize_t ignored = ::write(wakeFd_, &one, sizeof one);
    (void)ignored;
  }
  if (thread_.joinable()) thread_.join();
}

DumpCounters DumpSession::counters() const {
  DumpCounters c;
  c.messages = messages_.load();
  c.entries = entries_.load();
  c.duplicates = duplicates_.load();
  c.filteredOut = filteredOut_.load();
  c.kernelFiltered = kernelFiltered_.load();
  return c;
}

DumpSession::Take DumpSession::take(Batch& out, SysError& err) {
  std::lock_guard<std::mutex> lock(mu_);
  if (!ready_.empty()) {
    out = std::move(ready_.front());
    ready_.pop_front();
    spaceAvailable_.notify_all();
    return Take::kBatch;
  }
  if (failed_) {
    err = error_;
    return Take::kError;
  }
  if (finished_) return Take::kEnd;
  return Take::kNothing;
}

bool DumpSession::publish(Batch& batch) {
  if (batch.count == 0) return !stopping_.load();
  {
    std::unique_lock<std::mutex> lock(mu_);
    spaceAvailable_.wait(lock, [this] { return ready_.size() < kMaxQueued || stopping_.load(); });
    if (stopping_.load()) return false;
    entries_.fetch_add(batch.count, std::memory_order_relaxed);
    ready_.push_back(std::move(batch));
  }
  batch = Batch();
  batch.records.reserve(batchSize_ * slot::kCount);
  notify_();
  return true;
}

void DumpSession::finish(const SysError* err) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    finished_ = true;
    if (err) {
      failed_ = true;
      error_ = *err;
    }
  }
  notify_();
}

void DumpSession::run() {
  SysError err;
  bool ok = enterNetns(nsFd_, err) && runDump(err);
  if (stopping_.load()) {
    finish(nullptr);  // closed by the consumer: a clean end, not an error
    return;
  }
  finish(ok ? nullptr : &err);
}

bool DumpSession::runDump(SysError& err) {
  NetlinkSocket socket;
  if (!socket.open(true, err)) return false;
  // A bigger receive buffer lets the kernel queue ahead while we decode.
  int rcvbuf = 1 << 20;
  ::setsockopt(socket.fd(), SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);

  bool kernelFilter = hasFilter_ && filter_.kernel;
  const Filter* nativeFilter = hasFilter_ && !filter_.empty() ? &filter_ : nullptr;
  std::vector<uint8_t> request(4096);
  std::vector<uint8_t> buffer(kReceiveBufferSize);
  KeySet seen;
  Batch batch;
  batch.records.reserve(batchSize_ * slot::kCount);

  for (;;) {  // one pass, or two when the kernel refuses our filter attributes
    Filter sent = filter_;
    sent.kernel = kernelFilter;
    uint32_t seq = socket.nextSeq();
    size_t len = buildDumpRequest(request.data(), request.size(), seq, hasFilter_ ? &sent : nullptr);
    if (len == 0) {
      err = SysError::fromErrno(EMSGSIZE, "build dump request");
      return false;
    }
    if (!socket.send(request.data(), len, err)) return false;

    DumpSink sink(nativeFilter, seen, batch, messages_, duplicates_, filteredOut_, kernelFiltered_);
    bool done = false;
    bool retryWithoutKernelFilter = false;
    while (!done) {
      pollfd fds[2] = {{socket.fd(), POLLIN, 0}, {wakeFd_, POLLIN, 0}};
      int ready = ::poll(fds, 2, -1);
      if (ready < 0) {
        if (errno == EINTR) continue;
        err = SysError::fromErrno(errno, "poll");
        return false;
      }
      if (stopping_.load() || (fds[1].revents & POLLIN)) return true;
      long n = socket.receive(buffer.data(), buffer.size(), err, true);
      if (n < 0) return false;
      if (n == 0) continue;
      if (!walkDatagram(buffer.data(), static_cast<size_t>(n), seq, sink, done, err)) {
        // Kernels without a filter attribute we sent may refuse it (EOPNOTSUPP, EINVAL):
        // ask again without it; the native check filters anyway.
        bool refused = !err.protocol && (err.errnum == EOPNOTSUPP || err.errnum == EINVAL);
        if (kernelFilter && refused && messages_.load() == 0) {
          retryWithoutKernelFilter = true;
          break;
        }
        return false;
      }
      if (batch.count >= batchSize_ || batch.text.size() >= kMaxBatchText) {
        if (!publish(batch)) return true;
      }
    }
    if (retryWithoutKernelFilter) {
      kernelFilter = false;
      err = SysError();
      continue;
    }
    publish(batch);
    return true;
  }
}

}  // namespace ct
