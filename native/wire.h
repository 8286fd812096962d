// Netlink on the wire: message framing, attribute iteration and length checks, the message
// writer, acknowledgements and extended acks, and the walk over one datagram's messages. Knows
// nfnetlink's header and which ctnetlink messages are entries, expectations or statistics,
// nothing about their attributes (decode.*, expectation.*). No Node headers, no I/O.
#pragma once

#include <endian.h>

#include <linux/netfilter/nfnetlink.h>
#include <linux/netlink.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>

#include "sys_error.h"

namespace ct {

// ---- reading ----------------------------------------------------------------------------------

struct Attr {
  uint16_t type;  // NLA_F_NESTED and NLA_F_NET_BYTEORDER masked off
  const uint8_t* data;
  size_t len;
};

inline uint16_t be16(const uint8_t* p) {
  uint16_t v;
  std::memcpy(&v, p, sizeof v);
  return be16toh(v);
}
inline uint32_t be32(const uint8_t* p) {
  uint32_t v;
  std::memcpy(&v, p, sizeof v);
  return be32toh(v);
}
inline uint64_t be64(const uint8_t* p) {
  uint64_t v;
  std::memcpy(&v, p, sizeof v);
  return be64toh(v);
}

// Iterates the attributes in [p, p+len). Calls `f(attr)`; `f` returns false to stop with `err`.
// An attribute whose length runs past the end, or is shorter than its header, is malformed.
template <typename F>
bool forEachAttr(const uint8_t* p, size_t len, const char* where, SysError& err, F&& f) {
  while (len >= NLA_HDRLEN) {
    nlattr header;
    std::memcpy(&header, p, sizeof header);
    if (header.nla_len < NLA_HDRLEN || header.nla_len > len) {
      err = SysError::malformed(std::string("attribute length ") + std::to_string(header.nla_len) +
                                " does not fit in " + where + " (" + std::to_string(len) +
                                " bytes left)");
      return false;
    }
    Attr attr{static_cast<uint16_t>(header.nla_type & NLA_TYPE_MASK), p + NLA_HDRLEN,
              static_cast<size_t>(header.nla_len - NLA_HDRLEN)};
    if (!f(attr)) return false;
    size_t step = NLA_ALIGN(header.nla_len);
    if (step >= len) return true;
    p += step;
    len -= step;
  }
  if (len != 0) {
    err = SysError::malformed(std::to_string(len) + " stray bytes at the end of " + where);
    return false;
  }
  return true;
}

// Known attributes must have exactly the size the kernel puts; anything else is not ours to guess.
inline bool expectLen(const Attr& attr, size_t want, const char* name, SysError& err) {
  if (attr.len == want) return true;
  err = SysError::malformed(std::string(name) + " has " + std::to_string(attr.len) +
                            " bytes, expected " + std::to_string(want));
  return false;
}

// A NUL-terminated string attribute; the terminator may be missing on odd senders.
inline void readString(const Attr& a, const char*& out, size_t& len) {
  const char* s = reinterpret_cast<const char*>(a.data);
  size_t n = 0;
  while (n < a.len && s[n] != '\0') ++n;
  out = s;
  len = n;
}

// What a message callback wants next.
enum class Next { kContinue, kStop, kFail };

// Iterates the netlink messages of one datagram: `f(header, payload, payloadLen)` returns kStop to
// end the walk early (true) or kFail to end it with `err` (false). A message length that does not
// fit, or stray bytes after the last message, are malformed (false with `err`).
template <typename F>
bool forEachMessage(const uint8_t* data, size_t len, SysError& err, F&& f) {
  while (len >= NLMSG_HDRLEN) {
    nlmsghdr h;
    std::memcpy(&h, data, sizeof h);
    if (h.nlmsg_len < NLMSG_HDRLEN || h.nlmsg_len > len) {
      err = SysError::malformed("message length " + std::to_string(h.nlmsg_len) +
                                " does not fit in the datagram (" + std::to_string(len) +
                                " bytes left)");
      return false;
    }
    Next next = f(h, data + NLMSG_HDRLEN, static_cast<size_t>(h.nlmsg_len - NLMSG_HDRLEN));
    if (next == Next::kStop) return true;
    if (next == Next::kFail) return false;
    size_t step = NLMSG_ALIGN(h.nlmsg_len);
    if (step >= len) return true;
    data += step;
    len -= step;
  }
  if (len != 0) {
    err = SysError::malformed(std::to_string(len) + " stray bytes after the last message");
    return false;
  }
  return true;
}

// A kernel error code is a negative errno (MAX_ERRNO is 4095); anything else is not one.
inline bool kernelErrno(int code, int& errnum) {
  if (code >= 0 || code < -4095) return false;
  errnum = -code;
  return true;
}

// ---- answers ----------------------------------------------------------------------------------

// What an nfnetlink message carries (NLMSG_DONE and NLMSG_ERROR never reach a sink: the walk
// itself ends on them).
enum class MessageKind { kEntry, kStatsGlobal, kStatsCpu, kExpStatsCpu, kExpectation, kOther };

// One nfnetlink message of our sequence number, as walkDatagram() hands it to a sink.
struct MessageView {
  MessageKind kind;
  uint16_t type;
  uint16_t flags;
  uint8_t family;   // nfgen_family
  uint16_t resId;   // nfgen res_id, host order
  const uint8_t* attrs;
  size_t attrsLen;
};

class MessageSink {
 public:
  virtual ~MessageSink() = default;
  // Return false to stop the walk (with `err` set).
  virtual bool onMessage(const MessageView& message, SysError& err) = 0;
};

// Walks one datagram's messages and calls `sink.onMessage()` for each nfnetlink message of our
// sequence number (`expectSeq` 0 accepts any). Errors (NLMSG_ERROR != 0, a DONE carrying an
// error, framing faults, a sink that refuses) stop the walk and return false with `err` set.
// `done` is set when NLMSG_DONE (or a final ack) was seen.
bool walkDatagram(const uint8_t* data, size_t len, uint32_t expectSeq, MessageSink& sink, bool& done,
                  SysError& err);

// ---- writing ----------------------------------------------------------------------------------

// Builds one netlink message in a caller's buffer; too small a buffer makes ok() false.
class Writer {
 public:
  Writer(uint8_t* buf, size_t cap) : buf_(buf), cap_(cap) {}
  bool ok() const { return ok_; }
  size_t size() const { return len_; }

  size_t reserve(size_t n) {
    size_t at = len_;
    size_t aligned = NLA_ALIGN(n);
    if (!ok_ || len_ + aligned > cap_) {
      ok_ = false;
      return at;
    }
    std::memset(buf_ + len_, 0, aligned);
    len_ += aligned;
    return at;
  }
  void put(uint16_t type, const void* data, size_t n) {
    size_t at = reserve(NLA_HDRLEN + n);
    if (!ok_) return;
    nlattr h{static_cast<uint16_t>(NLA_HDRLEN + n), type};
    std::memcpy(buf_ + at, &h, sizeof h);
    std::memcpy(buf_ + at + NLA_HDRLEN, data, n);
  }
  void putU8(uint16_t type, uint8_t v) { put(type, &v, 1); }
  void putBe16(uint16_t type, uint16_t v) {
    uint16_t b = htobe16(v);
    put(type, &b, 2);
  }
  void putBe32(uint16_t type, uint32_t v) {
    uint32_t b = htobe32(v);
    put(type, &b, 4);
  }
  void putU32(uint16_t type, uint32_t v) { put(type, &v, 4); }
  size_t beginNest(uint16_t type) {
    size_t at = reserve(NLA_HDRLEN);
    if (ok_) {
      nlattr h{0, static_cast<uint16_t>(type | NLA_F_NESTED)};
      std::memcpy(buf_ + at, &h, sizeof h);
    }
    return at;
  }
  void endNest(size_t at) {
    if (!ok_) return;
    uint16_t len = static_cast<uint16_t>(len_ - at);
    std::memcpy(buf_ + at, &len, sizeof len);
  }
  uint8_t* at(size_t offset) { return buf_ + offset; }

 private:
  uint8_t* buf_;
  size_t cap_;
  size_t len_ = 0;
  bool ok_ = true;
};

// The nlmsghdr and nfgenmsg that open every request (`version`: nfgenmsg's, see buildFlushRequest()).
void writeHeader(Writer& w, uint16_t type, uint16_t flags, uint32_t seq, uint8_t family, uint16_t resId,
                 uint8_t version = NFNETLINK_V0);

// Sets the message's length; returns it, or 0 when the message did not fit its buffer.
size_t finishMessage(Writer& w);

}  // namespace ct
