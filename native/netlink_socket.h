// A NETLINK_NETFILTER socket: open, send, receive. Nothing here knows about conntrack.
#pragma once

#include <cstddef>
#include <cstdint>

#include "sys_error.h"

namespace ct {

class NetlinkSocket {
 public:
  NetlinkSocket() = default;
  ~NetlinkSocket() { close(); }
  NetlinkSocket(const NetlinkSocket&) = delete;
  NetlinkSocket& operator=(const NetlinkSocket&) = delete;

  // Opens a socket in the calling thread's network namespace. Non-blocking when asked.
  bool open(bool nonBlocking, SysError& err);
  void close();

  // Takes over an open socket (made in another thread's namespace); release() gives it up.
  void adopt(int fd, uint32_t portId) {
    close();
    fd_ = fd;
    portId_ = portId;
  }
  int release() {
    int fd = fd_;
    fd_ = -1;
    return fd;
  }

  int fd() const { return fd_; }
  uint32_t portId() const { return portId_; }
  // Never 0: walkDatagram() takes an expected sequence number of 0 as "accept any message", so a
  // request numbered 0 after the counter wraps would take other messages for its answer.
  uint32_t nextSeq() {
    if (++seq_ == 0) ++seq_;
    return seq_;
  }

  // Sends one request; a short send is an error (netlink datagrams are atomic).
  bool send(const void* buf, size_t len, SysError& err);

  // Receives one datagram. Returns its length, 0 when it would block (non-blocking mode),
  // or -1 with `err` set. A datagram larger than `cap` is an error, never silently cut. With
  // `senderPort`, the sender's netlink port id is stored there (0: the kernel).
  long receive(void* buf, size_t cap, SysError& err, bool dontWait, uint32_t* senderPort = nullptr);

 private:
  int fd_ = -1;
  uint32_t portId_ = 0;
  uint32_t seq_ = 0;
};

// Largest datagram the kernel sends for a dump is 32 KiB; leave room for growth.
constexpr size_t kReceiveBufferSize = 64 * 1024;

}  // namespace ct
