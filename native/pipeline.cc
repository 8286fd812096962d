#include "pipeline.h"

#include <errno.h>
#include <poll.h>
#include <sys/socket.h>

#include <linux/netlink.h>

#include <cstring>

#include "wire.h"

namespace ct {
namespace {

// The socket buffer asked for (SO_RCVBUFFORCE passes rmem_max with CAP_NET_ADMIN, which changing
// the table needs anyway), and the most a refusal costs in it: the kernel charges an
// acknowledgement's whole allocation (about 1 KiB on x86-64), not its 36 bytes.
constexpr int kWantedReceiveBuffer = 8 << 20;
constexpr size_t kChargePerAnswer = 2048;
constexpr size_t kMaxPerBatch = 256;
// How long the kernel may take to answer a batch it handles inside the send (never, so far).
constexpr int kAnswerTimeoutMs = 10000;

}  // namespace

uint8_t* RequestBatch::reserve(size_t maxLen) {
  if (data_.size() < used_ + maxLen) data_.resize(used_ + maxLen + 16384);
  return data_.data() + used_;
}

void RequestBatch::commit(size_t len, uint64_t tag) {
  if (len == 0) return;
  offsets_.push_back(static_cast<uint32_t>(used_));
  tags_.push_back(tag);
  used_ += NLMSG_ALIGN(len);
}

void RequestBatch::clear() {
  used_ = 0;
  offsets_.clear();
  tags_.clear();
}

size_t prepareBatchSocket(NetlinkSocket& socket) {
  int size = kWantedReceiveBuffer;
  if (::setsockopt(socket.fd(), SOL_SOCKET, SO_RCVBUFFORCE, &size, sizeof size) != 0)
    ::setsockopt(socket.fd(), SOL_SOCKET, SO_RCVBUF, &size, sizeof size);
  int actual = 0;
  socklen_t len = sizeof actual;
  if (::getsockopt(socket.fd(), SOL_SOCKET, SO_RCVBUF, &actual, &len) != 0 || actual <= 0) actual = 212992;
  // Half the buffer: refusals of one batch never fill it, whatever else is queued.
  size_t fits = static_cast<size_t>(actual) / 2 / kChargePerAnswer;
  if (fits < 1) fits = 1;
  return fits < kMaxPerBatch ? fits : kMaxPerBatch;
}

bool sendBatch(NetlinkSocket& socket, RequestBatch& batch, std::vector<uint8_t>& buffer,
               const std::function<void(uint64_t tag, int errnum)>& refused, SysError& err) {
  size_t n = batch.count();
  if (n == 0) return true;
  uint32_t first = 0;
  for (size_t i = 0; i < n; ++i) {
    uint8_t* msg = batch.data_.data() + batch.offsets_[i];
    uint32_t seq = socket.nextSeq();
    if (i == 0) first = seq;
    std::memcpy(msg + offsetof(nlmsghdr, nlmsg_seq), &seq, sizeof seq);
    uint16_t flags;
    std::memcpy(&flags, msg + offsetof(nlmsghdr, nlmsg_flags), sizeof flags);
    flags = static_cast<uint16_t>(i + 1 == n ? (flags | NLM_F_ACK) : (flags & ~NLM_F_ACK));
    std::memcpy(msg + offsetof(nlmsghdr, nlmsg_flags), &flags, sizeof flags);
  }
  // Sequence numbers are consecutive (mod 2^32): a message's index is its seq minus the first's.
  uint32_t last = first + static_cast<uint32_t>(n - 1);
  if (!socket.send(batch.data_.data(), batch.used_, err)) return false;

  if (buffer.size() < kReceiveBufferSize) buffer.resize(kReceiveBufferSize);
  bool done = false;
  while (!done) {
    long got = socket.receive(buffer.data(), buffer.size(), err, true);
    if (got < 0) {
      if (err.errnum == ENOBUFS && !err.protocol)
        err = SysError::fromErrno(ENOBUFS, "ctnetlink batch (answers overflowed the receive buffer)");
      return false;
    }
    if (got == 0) {
      pollfd fd{socket.fd(), POLLIN, 0};
      int ready = ::poll(&fd, 1, kAnswerTimeoutMs);
      if (ready < 0 && errno != EINTR) {
        err = SysError::fromErrno(errno, "poll");
        return false;
      }
      if (ready == 0) {
        err = SysError::fromErrno(ETIMEDOUT, "ctnetlink batch");
        return false;
      }
      continue;
    }
    bool framed = forEachMessage(buffer.data(), static_cast<size_t>(got), err,
                                 [&](const nlmsghdr& h, const uint8_t* payload, size_t payloadLen) {
      uint32_t index = h.nlmsg_seq - first;
      if (h.nlmsg_type != NLMSG_ERROR || index >= n) return Next::kContinue;  // not ours (stale)
      if (payloadLen < sizeof(int)) {
        err = SysError::malformed("NLMSG_ERROR without an error code");
        return Next::kFail;
      }
      int code;
      std::memcpy(&code, payload, sizeof code);
      int errnum = 0;
      if (code != 0) {
        if (!kernelErrno(code, errnum)) {
          err = SysError::malformed("NLMSG_ERROR carries error code " + std::to_string(code));
          return Next::kFail;
        }
        refused(batch.tags_[index], errnum);
      }
      if (h.nlmsg_seq == last) done = true;
      return Next::kContinue;
    });
    if (!framed) return false;
  }
  return true;
}

}  // namespace ct
