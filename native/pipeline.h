// Many requests per sendmsg. A RequestBatch collects messages (built by requests.* or
// expectation.*) into one datagram; sendBatch() numbers them, sends them with one sendmsg and
// collects the answers. The kernel handles every message of the datagram inside that send, one
// after the other, and a refusal does not stop the rest. Only the last message asks for an
// acknowledgement (NLM_F_ACK); the others are answered only when refused (an NLMSG_ERROR with
// their sequence number), so a batch that succeeds costs one send and one receive.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <vector>

#include "netlink_socket.h"
#include "sys_error.h"

namespace ct {

class RequestBatch {
 public:
  // Room for a message of up to `maxLen` bytes at the end of the datagram.
  uint8_t* reserve(size_t maxLen);
  // The message written at reserve()'s pointer is `len` bytes long; `tag` names it in answers.
  void commit(size_t len, uint64_t tag);
  size_t count() const { return tags_.size(); }
  size_t bytes() const { return used_; }
  void clear();

 private:
  friend bool sendBatch(NetlinkSocket&, RequestBatch&, std::vector<uint8_t>&,
                        const std::function<void(uint64_t, int)>&, SysError&);
  std::vector<uint8_t> data_;
  size_t used_ = 0;
  std::vector<uint32_t> offsets_;  // where each message starts
  std::vector<uint64_t> tags_;
};

// Sends `batch` (nothing when it is empty) and returns once the kernel has answered its last
// message: `refused(tag, errno)` for every message the kernel refused. `buffer` is the caller's
// receive buffer (kReceiveBufferSize bytes). False with `err` when the socket fails, an answer is
// malformed, or the answers overflowed the socket's receive buffer (some refusals unknown).
bool sendBatch(NetlinkSocket& socket, RequestBatch& batch, std::vector<uint8_t>& buffer,
               const std::function<void(uint64_t tag, int errnum)>& refused, SysError& err);

// Prepares a socket for sendBatch(): a receive buffer large enough for the refusals of a full
// batch. Returns how many messages a batch may hold.
size_t prepareBatchSocket(NetlinkSocket& socket);

}  // namespace ct
