#include "netlink_socket.h"

#include <errno.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <linux/netlink.h>

namespace ct {

bool NetlinkSocket::open(bool nonBlocking, SysError& err) {
  close();
  int flags = SOCK_RAW | SOCK_CLOEXEC | (nonBlocking ? SOCK_NONBLOCK : 0);
  fd_ = ::socket(AF_NETLINK, flags, NETLINK_NETFILTER);
  if (fd_ < 0) {
    err = SysError::fromErrno(errno, "socket(NETLINK_NETFILTER)");
    return false;
  }
  sockaddr_nl local{};
  local.nl_family = AF_NETLINK;
  if (::bind(fd_, reinterpret_cast<sockaddr*>(&local), sizeof local) != 0) {
    err = SysError::fromErrno(errno, "bind");
    close();
    return false;
  }
  socklen_t len = sizeof local;
  if (::getsockname(fd_, reinterpret_cast<sockaddr*>(&local), &len) != 0) {
    err = SysError::fromErrno(errno, "getsockname");
    close();
    return false;
  }
  portId_ = local.nl_pid;
  // Connected to the kernel (port 0): the kernel refuses unicasts to us from any other socket
  // (netlink_getsockbyportid), so receive() needs no sender address, and send() none either.
  sockaddr_nl kernel{};
  kernel.nl_family = AF_NETLINK;
  if (::connect(fd_, reinterpret_cast<sockaddr*>(&kernel), sizeof kernel) != 0) {
    err = SysError::fromErrno(errno, "connect");
    close();
    return false;
  }
  int on = 1;
  // Error text from the kernel, and errors that do not echo our whole request back.
  ::setsockopt(fd_, SOL_NETLINK, NETLINK_EXT_ACK, &on, sizeof on);
  ::setsockopt(fd_, SOL_NETLINK, NETLINK_CAP_ACK, &on, sizeof on);
  // Sequence numbers start somewhere unpredictable so a reused socket id cannot match stale replies.
  timespec now{};
  ::clock_gettime(CLOCK_MONOTONIC, &now);
  seq_ = static_cast<uint32_t>(now.tv_nsec ^ now.tv_sec);
  return true;
}

void NetlinkSocket::close() {
  if (fd_ >= 0) {
    ::close(fd_);
    fd_ = -1;
  }
}

bool NetlinkSocket::send(const void* buf, size_t len, SysError& err) {
  for (;;) {
    ssize_t n = ::send(fd_, buf, len, 0);
    if (n == static_cast<ssize_t>(len)) return true;
    if (n < 0 && errno == EINTR) continue;
    err = SysError::fromErrno(n < 0 ? errno : EMSGSIZE, "sendto");
    return false;
  }
}

long NetlinkSocket::receive(void* buf, size_t cap, SysError& err, bool dontWait, uint32_t* senderPort) {
  for (;;) {
    // MSG_TRUNC: the datagram's real length, so a cut one is seen without a msghdr.
    sockaddr_nl from{};
    socklen_t fromLen = sizeof from;
    ssize_t n = ::recvfrom(fd_, buf, cap, MSG_TRUNC | (dontWait ? MSG_DONTWAIT : 0),
                           senderPort ? reinterpret_cast<sockaddr*>(&from) : nullptr, senderPort ? &fromLen : nullptr);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) return 0;
      err = SysError::fromErrno(errno, "recvmsg");
      return -1;
    }
    if (static_cast<size_t>(n) > cap) {
      err = SysError::malformed("a datagram was larger than the receive buffer");
      return -1;
    }
    if (n == 0) {
      err = SysError::malformed("empty datagram");
      return -1;
    }
    if (senderPort) *senderPort = from.nl_pid;
    return static_cast<long>(n);
  }
}

}  // namespace ct
