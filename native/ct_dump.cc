#include "ct_dump.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <sys/eventfd.h>
#include <sys/prctl.h>  // PR_SET_NAME: pthread_setname_np is a GLIBC_2.34 symbol with newer headers
#include <sys/socket.h>
#include <unistd.h>
#include <sys/resource.h>
#include <sys/syscall.h>

#include <linux/netfilter/nfnetlink_conntrack.h>
#include <linux/netlink.h>

#include <algorithm>
#include <cstring>

#include "netlink_socket.h"
#include "netns.h"
#include "requests.h"
#include "transaction.h"
#include "wire.h"

namespace ct {
namespace {

// Batches waiting for JS. Two let decoding run one batch ahead of JS without piling up.
constexpr size_t kMaxQueued = 2;
// Added to the decoder thread's nice value (see decode()).
constexpr int kDecoderNice = 5;
// Datagrams waiting for the decoder (the kernel sends at most 32 KiB each).
constexpr size_t kMaxRawQueued = 16;
// What the receiver needs to know of a datagram without decoding it: does the dump end here,
// and with which error (from NLMSG_ERROR, or a DONE that carries one)?
struct Control {
  bool end = false;
  int error = 0;  // positive errno
  bool entries = false;
};

Control scanControl(const uint8_t* data, size_t len, uint32_t seq) {
  Control c;
  SysError malformed;
  bool framed = forEachMessage(data, len, malformed, [&](const nlmsghdr& h, const uint8_t* payload, size_t payloadLen) {
    if (h.nlmsg_seq != seq) return Next::kContinue;
    if (h.nlmsg_type == NLMSG_DONE || h.nlmsg_type == NLMSG_ERROR || h.nlmsg_type == NLMSG_OVERRUN) {
      c.end = true;
      int code = 0;
      if (payloadLen >= sizeof code) std::memcpy(&code, payload, sizeof code);
      // Only a real errno matters here (a retry decision); the decoder reports odd codes.
      int errnum = 0;
      if (h.nlmsg_type != NLMSG_OVERRUN && kernelErrno(code, errnum)) c.error = errnum;
      return Next::kStop;
    }
    if (h.nlmsg_type >= NLMSG_MIN_TYPE) c.entries = true;
    return Next::kContinue;
  });
  if (!framed) c.end = true;  // malformed: the decoder reports it
  return c;
}

}  // namespace

DumpSession::DumpSession(int nsFd, const Filter* filter, size_t batchSize, std::function<void()> notify,
                         const EventOptions* events)
    : netns_(nsFd), hasFilter_(filter != nullptr), batchSize_(batchSize == 0 ? 1 : batchSize), notify_(std::move(notify)),
      listening_(events != nullptr) {
  if (filter) filter_ = *filter;
  if (events) events_ = *events;
}

DumpSession::~DumpSession() {
  stop();  // also closes the descriptors
}

bool DumpSession::start(SysError& err) {
  // Without its own descriptor the session cannot enter the namespace: say why, rather than
  // reading this process's table instead.
  if (!netns_.check(err)) return false;
  wakeFd_ = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (wakeFd_ < 0) {
    err = SysError::fromErrno(errno, "eventfd");
    return false;
  }
  try {
    decoder_ = std::thread([this] {
      try {
        decode();
      } catch (...) {  // bad_alloc: the consumer gets the error, the process goes on
        SysError failure = SysError::fromCurrentException("dump decoder");
        finish(&failure);
      }
    });
    receiver_ = std::thread([this] { receive(); });
  } catch (...) {  // no thread (EAGAIN: a pids limit): stop the one that may have started
    err = SysError::fromCurrentException("create thread");
    stop();
    return false;
  }
  return true;
}

void DumpSession::stop() {
  stopping_.store(true);
  {
    std::lock_guard<std::mutex> lock(mu_);
    spaceAvailable_.notify_all();
  }
  {
    std::lock_guard<std::mutex> lock(rawMu_);
    rawReady_.notify_all();
    rawSpace_.notify_all();
  }
  if (wakeFd_ >= 0) {
    uint64_t one = 1;
    ssize_t ignored = ::write(wakeFd_, &one, sizeof one);
    (void)ignored;
  }
  if (receiver_.joinable()) receiver_.join();
  if (decoder_.joinable()) decoder_.join();
  // The threads are gone: give the descriptors and buffers back now, not when JS collects the
  // dump object (V8 does not see native memory, so that can be much later).
  {
    std::lock_guard<std::mutex> lock(rawMu_);
    std::deque<Raw>().swap(raw_);
    rawBytes_ = 0;
    std::vector<std::vector<uint8_t>>().swap(spare_);
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    std::deque<Batch>().swap(ready_);
  }
  netns_.reset();
  if (wakeFd_ >= 0) {
    ::close(wakeFd_);
    wakeFd_ = -1;
  }
}

size_t DumpSession::bufferBytesBound() const {
  size_t batches = (kMaxQueued + 1) * batchSize_ * slot::kCount * sizeof(uint32_t);
  // A dump queues receive buffers; a subscription copies each event at its size, so it holds
  // its receive buffer, and queued events only while the consumer lags (up to receiveBufferBytes).
  return (listening_ ? kReceiveBufferSize : kMaxRawQueued * kReceiveBufferSize) + batches;
}

DumpCounters DumpSession::counters() const {
  DumpCounters c;
  c.messages = decoded_.messages.load();
  c.entries = entries_.load();
  c.duplicates = decoded_.duplicates.load();
  c.filteredOut = decoded_.filteredOut.load();
  c.kernelFiltered = decoded_.kernelFiltered.load();
  c.overflows = overflows_.load();
  c.receiveBufferBytes = receiveBufferBytes_.load();
  c.bufferGrowths = bufferGrowths_.load();
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
  if (batch.count == 0 && batch.overflowsBefore == 0) return !stopping_.load();
  {
    std::unique_lock<std::mutex> lock(mu_);
    spaceAvailable_.wait(lock, [this] { return ready_.size() < kMaxQueued || stopping_.load(); });
    if (stopping_.load()) return false;
    entries_.fetch_add(batch.count, std::memory_order_relaxed);
    ready_.push_back(std::move(batch));
  }
  batch = Batch();
  // Event batches are mostly small; dump batches fill up.
  if (!listening_) batch.records.reserve(batchSize_ * slot::kCount);
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

DumpSession::Wait DumpSession::waitReadable(int fd, SysError& err) {
  for (;;) {
    pollfd fds[2] = {{fd, POLLIN, 0}, {wakeFd_, POLLIN, 0}};
    if (::poll(fds, 2, -1) < 0) {
      if (errno == EINTR) continue;
      err = SysError::fromErrno(errno, "poll");
      return Wait::kError;
    }
    if (stopping_.load() || (fds[1].revents & POLLIN)) return Wait::kStop;
    return Wait::kReadable;
  }
}

bool DumpSession::rawQueueEmpty() {
  std::lock_guard<std::mutex> lock(rawMu_);
  return raw_.empty();
}

bool DumpSession::pushRaw(std::vector<uint8_t>&& datagram, size_t len) {
  std::unique_lock<std::mutex> lock(rawMu_);
  // A dump's datagrams are big and the kernel waits for us: a few suffice. Events are small and
  // the kernel does not wait: queue up to the subscription's buffer size in bytes as well.
  rawSpace_.wait(lock, [this] {
    return (listening_ ? rawBytes_ < queueBytes_ : raw_.size() < kMaxRawQueued) ||
           stopping_.load();
  });
  if (stopping_.load()) return false;
  Raw r;
  r.data = std::move(datagram);
  r.len = len;
  rawBytes_ += len;
  raw_.push_back(std::move(r));
  rawReady_.notify_one();
  return true;
}

bool DumpSession::pushOverflow() {
  overflows_.fetch_add(1, std::memory_order_relaxed);
  std::unique_lock<std::mutex> lock(rawMu_);
  // A marker costs no buffer: it may exceed the queue's bound by one rather than wait.
  if (stopping_.load()) return false;
  Raw r;
  r.overflow = true;
  raw_.push_back(std::move(r));
  rawReady_.notify_one();
  return true;
}

// Receiver thread: enter the namespace, send the request (or subscribe), pull datagrams until
// the end (or stop()).
void DumpSession::receive() {
  prctl(PR_SET_NAME, "ct-receive");  // names in top -H and /proc/PID/task/*/comm
  SysError err;
  bool ok = false;
  try {
    ok = netns_.enter(err) && (listening_ ? listen(err) : receiveAll(err));
  } catch (...) {  // bad_alloc: ends like any receive error
    err = SysError::fromCurrentException("dump receiver");
  }
  // A flag, not a queued marker: the end must not need memory.
  std::lock_guard<std::mutex> lock(rawMu_);
  if (!ok) {
    receiveFailed_ = true;
    receiveError_ = std::move(err);
  }
  receiverDone_ = true;
  rawReady_.notify_one();
}

bool DumpSession::receiveAll(SysError& err) {
  NetlinkSocket socket;
  if (!socket.open(true, err)) return false;
  // Room for the kernel to queue ahead while we hand datagrams over.
  int rcvbuf = 1 << 20;
  ::setsockopt(socket.fd(), SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);

  bool kernelFilter = hasFilter_ && filter_.kernel;
  std::vector<uint8_t> request(4096);
  {
    // The table's size, so the decoder sizes its de-duplication set once (a few µs).
    Transaction count(Transaction::Kind::kGlobalStats);
    std::vector<uint8_t> answer;
    SysError ignored;
    if (count.begin(socket, ignored) && count.pump(socket, answer, ignored) == 1) {
      const std::vector<uint32_t>& pairs = count.pairs();
      for (size_t i = 0; i + 1 < pairs.size(); i += 2)
        if (pairs[i] == CTA_STATS_GLOBAL_ENTRIES) expectedEntries_.store(pairs[i + 1]);
    }
  }
  bool sawEntries = false;
  for (;;) {  // one pass, or two when the kernel refuses our filter attributes
    Filter sent = filter_;
    sent.kernel = kernelFilter;
    uint32_t seq = socket.nextSeq();
    {
      std::lock_guard<std::mutex> lock(rawMu_);
      expectedSeq_ = seq;
    }
    size_t len = buildDumpRequest(request.data(), request.size(), seq, hasFilter_ ? &sent : nullptr, dumpMessage_);
    if (len == 0) {
      err = SysError::fromErrno(EMSGSIZE, "build dump request");
      return false;
    }
    if (!socket.send(request.data(), len, err)) return false;

    for (;;) {
      Wait w = waitReadable(socket.fd(), err);
      if (w != Wait::kReadable) return w == Wait::kStop;
      std::vector<uint8_t> buffer;
      {
        std::lock_guard<std::mutex> lock(rawMu_);
        if (!spare_.empty()) {
          buffer = std::move(spare_.back());
          spare_.pop_back();
        }
      }
      if (buffer.size() < kReceiveBufferSize) buffer.resize(kReceiveBufferSize);
      long n = socket.receive(buffer.data(), buffer.size(), err, true);
      if (n < 0) return false;
      if (n == 0) continue;
      Control c = scanControl(buffer.data(), static_cast<size_t>(n), seq);
      sawEntries = sawEntries || c.entries;
      // Kernels without a filter attribute we sent may refuse it (EOPNOTSUPP, EINVAL):
      // ask again without it; the native check filters anyway.
      if (c.error != 0 && kernelFilter && !sawEntries && (c.error == EOPNOTSUPP || c.error == EINVAL)) {
        kernelFilter = false;
        break;
      }
      if (!pushRaw(std::move(buffer), static_cast<size_t>(n))) return true;
      if (c.end) return true;
    }
  }
}

bool DumpSession::listen(SysError& err) {
  NetlinkSocket socket;
  if (!socket.open(true, err)) return false;
  if (events_.receiveBufferBytes > 0) {
    // SO_RCVBUFFORCE passes net.core.rmem_max with CAP_NET_ADMIN, which reading events needs anyway.
    int size = events_.receiveBufferBytes;
    if (::setsockopt(socket.fd(), SOL_SOCKET, SO_RCVBUFFORCE, &size, sizeof size) != 0 &&
        ::setsockopt(socket.fd(), SOL_SOCKET, SO_RCVBUF, &size, sizeof size) != 0) {
      err = SysError::fromErrno(errno, "setsockopt(SO_RCVBUF)");
      return false;
    }
  }
  {
    std::lock_guard<std::mutex> lock(rawMu_);
    queueBytes_ = static_cast<size_t>(events_.receiveBufferBytes > 0 ? events_.receiveBufferBytes : 1 << 20);
  }
  int actual = 0;
  socklen_t actualLen = sizeof actual;
  if (::getsockopt(socket.fd(), SOL_SOCKET, SO_RCVBUF, &actual, &actualLen) == 0) receiveBufferBytes_.store(actual);
  if (events_.reliable) {
    // As conntrackd's NetlinkEventsReliable: the kernel's broadcast then fails back to ctnetlink
    // when our buffer is full (so it keeps the event), and no ENOBUFS is reported to us.
    int on = 1;
    if (::setsockopt(socket.fd(), SOL_NETLINK, NETLINK_BROADCAST_ERROR, &on, sizeof on) != 0 ||
        ::setsockopt(socket.fd(), SOL_NETLINK, NETLINK_NO_ENOBUFS, &on, sizeof on) != 0) {
      err = SysError::fromErrno(errno, "setsockopt(NETLINK_BROADCAST_ERROR)");
      return false;
    }
  }
  for (uint32_t group = 1; group <= 31; ++group) {
    if (!(events_.groups & (1u << (group - 1)))) continue;
    // Subscribing needs CAP_NET_ADMIN in the namespace (nfnetlink_bind()).
    if (::setsockopt(socket.fd(), SOL_NETLINK, NETLINK_ADD_MEMBERSHIP, &group, sizeof group) != 0) {
      err = SysError::fromErrno(errno, "subscribe to conntrack events");
      return false;
    }
  }
  if (events_.subscribed) events_.subscribed();
  std::vector<uint8_t> scratch(kReceiveBufferSize);
  for (;;) {
    Wait w = waitReadable(socket.fd(), err);
    if (w != Wait::kReadable) return w == Wait::kStop;
    // Drain what the socket holds before polling again.
    for (;;) {
      uint32_t sender = 0;
      long n = socket.receive(scratch.data(), scratch.size(), err, true, &sender);
      if (n < 0) {
        // The socket's buffer overflowed: events were lost; reading goes on with the next one.
        if (err.errnum == ENOBUFS && !err.protocol) {
          // Grow first, so the overflow marker's reader sees the new size.
          growReceiveBuffer(socket.fd());
          if (!pushOverflow()) return true;
          continue;
        }
        return false;
      }
      if (n == 0) break;
      // Any process with CAP_NET_ADMIN in the namespace may send to the groups: only the kernel's
      // (port 0) are events (connect() filters unicasts, not multicast).
      if (sender != 0) continue;
      // An event is one small datagram: queue a copy of its size, not a receive buffer.
      if (!pushRaw(std::vector<uint8_t>(scratch.data(), scratch.data() + n), static_cast<size_t>(n))) return true;
    }
  }
}

// After an overflow: doubles the socket's buffer (and the queue behind it), up to the cap.
// SO_RCVBUFFORCE because net.core.rmem_max silently caps SO_RCVBUF; reading events needs
// CAP_NET_ADMIN, which SO_RCVBUFFORCE asks for too.
bool DumpSession::growReceiveBuffer(int fd) {
  size_t current;
  {
    std::lock_guard<std::mutex> lock(rawMu_);
    current = queueBytes_;
  }
  size_t cap = static_cast<size_t>(events_.maxReceiveBufferBytes);
  if (current >= cap) return false;
  size_t next = std::min(current * 2, cap);
  int size = static_cast<int>(next);
  if (::setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &size, sizeof size) != 0) return false;
  {
    std::lock_guard<std::mutex> lock(rawMu_);
    queueBytes_ = next;
  }
  int actual = 0;
  socklen_t actualLen = sizeof actual;
  if (::getsockopt(fd, SOL_SOCKET, SO_RCVBUF, &actual, &actualLen) == 0) receiveBufferBytes_.store(actual);
  bufferGrowths_.fetch_add(1, std::memory_order_relaxed);
  return true;
}

// Decoder thread: datagrams in, batches out.
void DumpSession::decode() {
  // With two cores, three busy threads (receiver, decoder, JS) share them. The receiver is the
  // floor (the kernel builds datagrams in its recv) and JS is the consumer; the decoder runs
  // ahead of JS anyway, so it yields first. Measured (benchmarks/): 3 % off a 1M dump, and a
  // lower event-loop delay p99 (2.7 ms against 4 ms). Lowering one's own priority needs no rights.
  // Relative to the thread's nice value (inherited from the process): a process started at nice 10
  // gets a decoder at 15, not one at 5 with more CPU than the process itself.
  auto tid = static_cast<id_t>(syscall(SYS_gettid));
  errno = 0;
  int nice = getpriority(PRIO_PROCESS, tid);
  if (nice != -1 || errno == 0) setpriority(PRIO_PROCESS, tid, std::min(nice + kDecoderNice, 19));
  prctl(PR_SET_NAME, "ct-decode");  // after the priority: its name says it is set
  const Filter* nativeFilter = hasFilter_ && !filter_.empty() ? &filter_ : nullptr;
  KeySet seen;
  Batch batch;
  batch.records.reserve(batchSize_ * slot::kCount);
  // Events are each reported once: nothing to de-duplicate.
  EntrySink sink(nativeFilter, listening_ ? nullptr : &seen, batch, &decoded_, batchSize_,
                 [this, &batch] { return publish(batch); });
  sink.classifyEvents = listening_;
  sink.expectations = events_.expectations;
  sink.grouper = grouper_.get();
  sink.consumer = consumer_;
  SysError err;
  bool reserved = false;
  for (;;) {
    Raw raw;
    uint32_t seq;
    {
      std::unique_lock<std::mutex> lock(rawMu_);
      rawReady_.wait(lock, [this] { return !raw_.empty() || receiverDone_ || stopping_.load(); });
      if (stopping_.load()) break;
      if (raw_.empty()) {  // the receiver is done and everything it queued is decoded
        if (receiveFailed_) {
          lock.unlock();
          finish(&receiveError_);
          return;
        }
        break;
      }
      raw = std::move(raw_.front());
      raw_.pop_front();
      rawBytes_ -= raw.len;
      rawSpace_.notify_one();
      seq = listening_ ? 0 : expectedSeq_;
    }
    if (raw.overflow && consumer_) {
      if (onOverflow_) onOverflow_();
      continue;
    }
    if (raw.overflow) {
      // Events decoded so far came before the loss; what follows comes after it.
      if (batch.count > 0 && !publish(batch)) break;
      ++batch.overflowsBefore;
      if (rawQueueEmpty() && !publish(batch)) break;
      continue;
    }
    if (!reserved) {
      // Filtered dumps keep fewer entries; the set grows on its own if the table does.
      if (!nativeFilter && !listening_) seen.reserve(static_cast<size_t>(expectedEntries_.load()));
      reserved = true;
    }
    bool done = false;
    bool ok = walkDatagram(raw.data.data(), raw.len, seq, sink, done, err);
    {
      std::lock_guard<std::mutex> lock(rawMu_);
      if (!listening_ && spare_.size() < kMaxRawQueued) spare_.push_back(std::move(raw.data));
    }
    if (!ok) {
      finish(sink.stopped || stopping_.load() ? nullptr : &err);
      return;
    }
    if (done && !listening_) break;
    // Events are wanted as they happen: hand over what there is once the kernel has sent no more.
    if (listening_ && rawQueueEmpty() && !publish(batch)) break;
  }
  if (grouper_ && !stopping_.load()) grouper_->emit(batch, batchSize_, [this, &batch] { return publish(batch); });
  if (!stopping_.load()) publish(batch);
  finish(nullptr);  // closed by the consumer, or the end of the dump: a clean end
}

}  // namespace ct
