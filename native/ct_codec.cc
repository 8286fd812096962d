#include "ct_codec.h"

#include <arpa/inet.h>
#include <endian.h>
#include <sys/socket.h>

#include <linux/netfilter/nfnetlink.h>
#include <linux/netfilter/nfnetlink_conntrack.h>
#include <linux/netlink.h>

#include <cstring>

namespace ct {
namespace {

// CTA_FILTER flag bits (net/netfilter/nf_internals.h, Linux 5.8+); not part of the uapi.
constexpr uint32_t kFilterIpSrc = 1u << 0;
constexpr uint32_t kFilterIpDst = 1u << 1;
constexpr uint32_t kFilterProtoNum = 1u << 3;
constexpr uint32_t kFilterProtoSrcPort = 1u << 4;
constexpr uint32_t kFilterProtoDstPort = 1u << 5;

constexpr uint8_t kProtoTcp = 6;
constexpr uint8_t kProtoUdp = 17;

// ---- reading ------------------------------------------------------------------------------

struct Attr {
  uint16_t type;  // NLA_F_NESTED and NLA_F_NET_BYTEORDER masked off
  const uint8_t* data;
  size_t len;
};

uint16_t be16(const uint8_t* p) {
  uint16_t v;
  std::memcpy(&v, p, sizeof v);
  return be16toh(v);
}
uint32_t be32(const uint8_t* p) {
  uint32_t v;
  std::memcpy(&v, p, sizeof v);
  return be32toh(v);
}
uint64_t be64(const uint8_t* p) {
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
bool expectLen(const Attr& attr, size_t want, const char* name, SysError& err) {
  if (attr.len == want) return true;
  err = SysError::malformed(std::string(name) + " has " + std::to_string(attr.len) +
                            " bytes, expected " + std::to_string(want));
  return false;
}

bool decodeTupleIp(const Attr& nest, Tuple& t, SysError& err) {
  return forEachAttr(nest.data, nest.len, "CTA_TUPLE_IP", err, [&](const Attr& a) {
    switch (a.type) {
      case CTA_IP_V4_SRC:
        if (!expectLen(a, 4, "CTA_IP_V4_SRC", err)) return false;
        t.family = AF_INET;
        std::memcpy(t.srcAddr, a.data, 4);
        t.has |= kTupleHasSrc;
        break;
      case CTA_IP_V4_DST:
        if (!expectLen(a, 4, "CTA_IP_V4_DST", err)) return false;
        t.family = AF_INET;
        std::memcpy(t.dstAddr, a.data, 4);
        t.has |= kTupleHasDst;
        break;
      case CTA_IP_V6_SRC:
        if (!expectLen(a, 16, "CTA_IP_V6_SRC", err)) return false;
        t.family = AF_INET6;
        std::memcpy(t.srcAddr, a.data, 16);
        t.has |= kTupleHasSrc;
        break;
      case CTA_IP_V6_DST:
        if (!expectLen(a, 16, "CTA_IP_V6_DST", err)) return false;
        t.family = AF_INET6;
        std::memcpy(t.dstAddr, a.data, 16);
        t.has |= kTupleHasDst;
        break;
      default:
        break;  // unknown: skip
    }
    return true;
  });
}

bool decodeTupleProto(const Attr& nest, Tuple& t, SysError& err) {
  return forEachAttr(nest.data, nest.len, "CTA_TUPLE_PROTO", err, [&](const Attr& a) {
    switch (a.type) {
      case CTA_PROTO_NUM:
        if (!expectLen(a, 1, "CTA_PROTO_NUM", err)) return false;
        t.proto = a.data[0];
        t.has |= kTupleHasProto;
        break;
      case CTA_PROTO_SRC_PORT:
        if (!expectLen(a, 2, "CTA_PROTO_SRC_PORT", err)) return false;
        t.sport = be16(a.data);
        t.has |= kTupleHasPorts;
        break;
      case CTA_PROTO_DST_PORT:
        if (!expectLen(a, 2, "CTA_PROTO_DST_PORT", err)) return false;
        t.dport = be16(a.data);
        t.has |= kTupleHasPorts;
        break;
      case CTA_PROTO_ICMP_ID:
      case CTA_PROTO_ICMPV6_ID:
        if (!expectLen(a, 2, "CTA_PROTO_ICMP_ID", err)) return false;
        t.icmpId = be16(a.data);
        t.has |= kTupleHasIcmp;
        break;
      case CTA_PROTO_ICMP_TYPE:
      case CTA_PROTO_ICMPV6_TYPE:
        if (!expectLen(a, 1, "CTA_PROTO_ICMP_TYPE", err)) return false;
        t.icmpType = a.data[0];
        t.has |= kTupleHasIcmp;
        break;
      case CTA_PROTO_ICMP_CODE:
      case CTA_PROTO_ICMPV6_CODE:
        if (!expectLen(a, 1, "CTA_PROTO_ICMP_CODE", err)) return false;
        t.icmpCode = a.data[0];
        t.has |= kTupleHasIcmp;
        break;
      default:
        break;
    }
    return true;
  });
}

bool decodeTuple(const Attr& nest, Tuple& t, SysError& err) {
  return forEachAttr(nest.data, nest.len, "tuple", err, [&](const Attr& a) {
    switch (a.type) {
      case CTA_TUPLE_IP:
        return decodeTupleIp(a, t, err);
      case CTA_TUPLE_PROTO:
        return decodeTupleProto(a, t, err);
      case CTA_TUPLE_ZONE:
        if (!expectLen(a, 2, "CTA_TUPLE_ZONE", err)) return false;
        t.zone = be16(a.data);
        t.has |= kTupleHasZone;
        return true;
      default:
        return true;
    }
  });
}

bool decodeProtoinfo(const Attr& nest, Entry& e, SysError& err) {
  return forEachAttr(nest.data, nest.len, "CTA_PROTOINFO", err, [&](const Attr& p) {
    switch (p.type) {
      case CTA_PROTOINFO_TCP:
        e.present |= kHasTcp;
        return forEachAttr(p.data, p.len, "CTA_PROTOINFO_TCP", err, [&](const Attr& a) {
          switch (a.type) {
            case CTA_PROTOINFO_TCP_STATE:
              if (!expectLen(a, 1, "CTA_PROTOINFO_TCP_STATE", err)) return false;
              e.tcpState = a.data[0];
              e.tcpHas |= kTcpHasState;
              break;
            case CTA_PROTOINFO_TCP_WSCALE_ORIGINAL:
              if (!expectLen(a, 1, "CTA_PROTOINFO_TCP_WSCALE_ORIGINAL", err)) return false;
              e.wscaleOrig = a.data[0];
              e.tcpHas |= kTcpHasWscaleOrig;
              break;
            case CTA_PROTOINFO_TCP_WSCALE_REPLY:
              if (!expectLen(a, 1, "CTA_PROTOINFO_TCP_WSCALE_REPLY", err)) return false;
              e.wscaleReply = a.data[0];
              e.tcpHas |= kTcpHasWscaleReply;
              break;
            case CTA_PROTOINFO_TCP_FLAGS_ORIGINAL:  // struct nf_ct_tcp_flags { flags, mask }
              if (!expectLen(a, 2, "CTA_PROTOINFO_TCP_FLAGS_ORIGINAL", err)) return false;
              e.flagsOrig = a.data[0];
              e.maskOrig = a.data[1];
              e.tcpHas |= kTcpHasFlagsOrig;
              break;
            case CTA_PROTOINFO_TCP_FLAGS_REPLY:
              if (!expectLen(a, 2, "CTA_PROTOINFO_TCP_FLAGS_REPLY", err)) return false;
              e.flagsReply = a.data[0];
              e.maskReply = a.data[1];
              e.tcpHas |= kTcpHasFlagsReply;
              break;
            default:
              break;
          }
          return true;
        });
      case CTA_PROTOINFO_SCTP:
        e.present |= kHasSctp;
        return forEachAttr(p.data, p.len, "CTA_PROTOINFO_SCTP", err, [&](const Attr& a) {
          switch (a.type) {
            case CTA_PROTOINFO_SCTP_STATE:
              if (!expectLen(a, 1, "CTA_PROTOINFO_SCTP_STATE", err)) return false;
              e.sctpState = a.data[0];
              e.sctpHas |= kSctpHasState;
              break;
            case CTA_PROTOINFO_SCTP_VTAG_ORIGINAL:
              if (!expectLen(a, 4, "CTA_PROTOINFO_SCTP_VTAG_ORIGINAL", err)) return false;
              e.vtagOrig = be32(a.data);
              e.sctpHas |= kSctpHasVtagOrig;
              break;
            case CTA_PROTOINFO_SCTP_VTAG_REPLY:
              if (!expectLen(a, 4, "CTA_PROTOINFO_SCTP_VTAG_REPLY", err)) return false;
              e.vtagReply = be32(a.data);
              e.sctpHas |= kSctpHasVtagReply;
              break;
            default:
              break;
          }
          return true;
        });
      case CTA_PROTOINFO_DCCP:
        e.present |= kHasDccp;
        return forEachAttr(p.data, p.len, "CTA_PROTOINFO_DCCP", err, [&](const Attr& a) {
          switch (a.type) {
            case CTA_PROTOINFO_DCCP_STATE:
              if (!expectLen(a, 1, "CTA_PROTOINFO_DCCP_STATE", err)) return false;
              e.dccpState = a.data[0];
              e.dccpHas |= kDccpHasState;
              break;
            case CTA_PROTOINFO_DCCP_ROLE:
              if (!expectLen(a, 1, "CTA_PROTOINFO_DCCP_ROLE", err)) return false;
              e.dccpRole = a.data[0];
              e.dccpHas |= kDccpHasRole;
              break;
            case CTA_PROTOINFO_DCCP_HANDSHAKE_SEQ:
              if (!expectLen(a, 8, "CTA_PROTOINFO_DCCP_HANDSHAKE_SEQ", err)) return false;
              e.dccpSeq = be64(a.data);
              e.dccpHas |= kDccpHasSeq;
              break;
            default:
              break;
          }
          return true;
        });
      default:
        return true;
    }
  });
}

bool decodeCountersNest(const Attr& nest, uint64_t& packets, uint64_t& bytes, SysError& err) {
  return forEachAttr(nest.data, nest.len, "counters", err, [&](const Attr& a) {
    switch (a.type) {
      case CTA_COUNTERS_PACKETS:
        if (!expectLen(a, 8, "CTA_COUNTERS_PACKETS", err)) return false;
        packets = be64(a.data);
        break;
      case CTA_COUNTERS_BYTES:
        if (!expectLen(a, 8, "CTA_COUNTERS_BYTES", err)) return false;
        bytes = be64(a.data);
        break;
      case CTA_COUNTERS32_PACKETS:  // kernels before 2.6.x sent 32-bit counters
        if (!expectLen(a, 4, "CTA_COUNTERS32_PACKETS", err)) return false;
        packets = be32(a.data);
        break;
      case CTA_COUNTERS32_BYTES:
        if (!expectLen(a, 4, "CTA_COUNTERS32_BYTES", err)) return false;
        bytes = be32(a.data);
        break;
      default:
        break;  // CTA_COUNTERS_PAD and unknown
    }
    return true;
  });
}

bool decodeSeqAdj(const Attr& nest, SeqAdj& s, SysError& err) {
  return forEachAttr(nest.data, nest.len, "CTA_SEQ_ADJ", err, [&](const Attr& a) {
    uint32_t* field = nullptr;
    switch (a.type) {
      case CTA_SEQADJ_CORRECTION_POS: field = &s.correctionPos; break;
      case CTA_SEQADJ_OFFSET_BEFORE: field = &s.offsetBefore; break;
      case CTA_SEQADJ_OFFSET_AFTER: field = &s.offsetAfter; break;
      default: return true;
    }
    if (!expectLen(a, 4, "CTA_SEQADJ_*", err)) return false;
    *field = be32(a.data);
    return true;
  });
}

// A NUL-terminated string attribute; the terminator may be missing on odd senders.
void readString(const Attr& a, const char*& out, size_t& len) {
  const char* s = reinterpret_cast<const char*>(a.data);
  size_t n = 0;
  while (n < a.len && s[n] != '\0') ++n;
  out = s;
  len = n;
}

// ---- writing ------------------------------------------------------------------------------

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

void writeHeader(Writer& w, uint16_t type, uint16_t flags, uint32_t seq, uint8_t family,
                 uint16_t resId, uint8_t version = NFNETLINK_V0) {
  size_t h = w.reserve(NLMSG_HDRLEN);
  size_t g = w.reserve(sizeof(nfgenmsg));
  if (!w.ok()) return;
  nlmsghdr header{};
  header.nlmsg_type = type;
  header.nlmsg_flags = flags;
  header.nlmsg_seq = seq;
  std::memcpy(w.at(h), &header, sizeof header);
  nfgenmsg gen{};
  gen.nfgen_family = family;
  gen.version = version;
  gen.res_id = htobe16(resId);
  std::memcpy(w.at(g), &gen, sizeof gen);
}

size_t finish(Writer& w) {
  if (!w.ok()) return 0;
  uint32_t len = static_cast<uint32_t>(w.size());
  std::memcpy(w.at(0), &len, sizeof len);  // nlmsg_len is the header's first field
  return len;
}

uint32_t hashBytes(uint32_t h, const uint8_t* p, size_t n) {
  for (size_t i = 0; i < n; ++i) {
    h ^= p[i];
    h *= 16777619u;  // FNV-1a
  }
  return h;
}

// A kernel error code is a negative errno (MAX_ERRNO is 4095); anything else is not one.
bool kernelErrno(int code, int& errnum) {
  if (code >= 0 || code < -4095) return false;
  errnum = -code;
  return true;
}

uint32_t zoneOf(const Entry& e) {
  if (e.present & kHasZone) return e.zone;
  if (e.orig.has & kTupleHasZone) return e.orig.zone;
  if (e.reply.has & kTupleHasZone) return e.reply.zone;
  return 0;
}

bool prefixMatches(const uint8_t* addr, const AddressMatch& m) {
  size_t full = m.prefix / 8;
  if (std::memcmp(addr, m.bytes, full) != 0) return false;
  unsigned rest = m.prefix % 8;
  if (rest == 0) return true;
  uint8_t mask = static_cast<uint8_t>(0xff << (8 - rest));
  return (addr[full] & mask) == (m.bytes[full] & mask);
}

// Writes an address into the batch text and returns its string ref.
uint32_t appendAddress(Batch& batch, uint8_t family, const uint8_t* addr) {
  char text[64];
  size_t n = formatAddress(family, addr, text);
  uint32_t off = static_cast<uint32_t>(batch.text.size());
  batch.text.append(text, n);
  return off | (static_cast<uint32_t>(n) << 24);
}

void writeTuple(Batch& batch, uint32_t* r, const Tuple& t, const Tuple* mirror, uint32_t mirrorSrc,
                uint32_t mirrorDst, uint32_t& srcRef, uint32_t& dstRef) {
  size_t addrLen = t.family == AF_INET6 ? 16 : 4;
  r[slot::kTupleProto] = t.proto | (t.has << 8);
  r[slot::kTuplePorts] = static_cast<uint32_t>(t.sport) | (static_cast<uint32_t>(t.dport) << 16);
  r[slot::kTupleIcmp] = static_cast<uint32_t>(t.icmpType) | (static_cast<uint32_t>(t.icmpCode) << 8) |
                        (static_cast<uint32_t>(t.icmpId) << 16);
  r[slot::kTupleZone] = t.zone;
  srcRef = dstRef = 0;
  if (t.has & kTupleHasSrc) {
    // The reply's source is usually the original's destination (no NAT): share the string.
    if (mirror && (mirror->has & kTupleHasDst) && mirror->family == t.family &&
        std::memcmp(mirror->dstAddr, t.srcAddr, addrLen) == 0)
      srcRef = mirrorDst;
    else
      srcRef = appendAddress(batch, t.family, t.srcAddr);
  }
  if (t.has & kTupleHasDst) {
    if (mirror && (mirror->has & kTupleHasSrc) && mirror->family == t.family &&
        std::memcmp(mirror->srcAddr, t.dstAddr, addrLen) == 0)
      dstRef = mirrorSrc;
    else
      dstRef = appendAddress(batch, t.family, t.dstAddr);
  }
  r[slot::kTupleSrc] = srcRef;
  r[slot::kTupleDst] = dstRef;
}

}  // namespace

// ---- public -------------------------------------------------------------------------------

size_t formatAddress(uint8_t family, const uint8_t* addr, char* out) {
  if (family == AF_INET) {
    char* p = out;
    for (int i = 0; i < 4; ++i) {
      unsigned v = addr[i];
      if (v >= 100) {
        *p++ = static_cast<char>('0' + v / 100);
        v %= 100;
        *p++ = static_cast<char>('0' + v / 10);
        *p++ = static_cast<char>('0' + v % 10);
      } else if (v >= 10) {
        *p++ = static_cast<char>('0' + v / 10);
        *p++ = static_cast<char>('0' + v % 10);
      } else {
        *p++ = static_cast<char>('0' + v);
      }
      if (i < 3) *p++ = '.';
    }
    *p = '\0';
    return static_cast<size_t>(p - out);
  }
  if (family == AF_INET6 && inet_ntop(AF_INET6, addr, out, 46) != nullptr) return std::strlen(out);
  out[0] = '\0';
  return 0;
}

bool matches(const Filter& f, const Entry& e) {
  if (f.family != 0 && e.family != f.family) return false;
  if (f.protocol >= 0 && (!(e.orig.has & kTupleHasProto) || e.orig.proto != f.protocol)) return false;
  if (f.tcpStates != 0) {
    if (!(e.tcpHas & kTcpHasState) || e.tcpState >= 32 || !(f.tcpStates & (1u << e.tcpState)))
      return false;
  }
  if (f.markMask != 0 && (e.mark & f.markMask) != (f.markValue & f.markMask)) return false;
  if (f.zone >= 0 && zoneOf(e) != static_cast<uint32_t>(f.zone)) return false;
  if ((e.status & f.statusSet) != f.statusSet) return false;
  if ((e.status & f.statusUnset) != 0) return false;
  for (const AddressMatch& m : f.addresses) {
    const Tuple& t = m.tuple == 0 ? e.orig : e.reply;
    uint32_t need = m.end == 0 ? kTupleHasSrc : kTupleHasDst;
    if (!(t.has & need) || t.family != m.family) return false;
    if (!prefixMatches(m.end == 0 ? t.srcAddr : t.dstAddr, m)) return false;
  }
  for (const PortMatch& m : f.ports) {
    const Tuple& t = m.tuple == 0 ? e.orig : e.reply;
    if (!(t.has & kTupleHasPorts)) return false;
    uint16_t port = m.end == 0 ? t.sport : t.dport;
    if (port < m.low || port > m.high) return false;
  }
  return true;
}

size_t buildRequest(uint8_t* buf, size_t cap, uint16_t type, uint16_t flags, uint32_t seq,
                    uint8_t family, uint16_t resId) {
  Writer w(buf, cap);
  writeHeader(w, type, flags, seq, family, resId);
  return finish(w);
}

size_t buildDumpRequest(uint8_t* buf, size_t cap, uint32_t seq, const Filter* filter) {
  Writer w(buf, cap);
  // The family is a kernel-side filter too (nfgen_family): only send it when asked to filter there.
  uint8_t family = filter && filter->kernel ? filter->family : 0;
  writeHeader(w, static_cast<uint16_t>((NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_GET),
              NLM_F_REQUEST | NLM_F_DUMP, seq, family, 0);
  if (filter == nullptr || !filter->kernel) return finish(w);

  if (filter->markMask != 0) {
    w.putBe32(CTA_MARK, filter->markValue & filter->markMask);
    w.putBe32(CTA_MARK_MASK, filter->markMask);
  }
  if (filter->statusSet != 0 || filter->statusUnset != 0) {
    w.putBe32(CTA_STATUS, filter->statusSet);
    w.putBe32(CTA_STATUS_MASK, filter->statusSet | filter->statusUnset);
  }
  if (filter->zone >= 0) w.putBe16(CTA_ZONE, static_cast<uint16_t>(filter->zone));

  // The tuple filter (5.8+) compares exact values only, and needs the family.
  if (family != AF_INET && family != AF_INET6) return finish(w);
  size_t addrLen = family == AF_INET6 ? 16 : 4;
  bool portsComparable = filter->protocol == kProtoTcp || filter->protocol == kProtoUdp;
  uint32_t tupleFlags[2] = {0, 0};
  for (uint8_t dir = 0; dir < 2; ++dir) {
    const AddressMatch* ends[2] = {nullptr, nullptr};
    // IPv6 addresses stay native: the kernel's tuple filter tests them with
    // `!ipv6_addr_cmp(...)`, which rejects exactly the equal addresses (5.8 to at least 6.18).
    for (const AddressMatch& m : filter->addresses)
      if (m.tuple == dir && m.family == AF_INET && family == AF_INET && m.prefix == addrLen * 8) ends[m.end] = &m;
    const PortMatch* ports[2] = {nullptr, nullptr};
    if (portsComparable)
      for (const PortMatch& m : filter->ports)
        if (m.tuple == dir && m.low == m.high) ports[m.end] = &m;
    bool any = ends[0] || ends[1] || filter->protocol >= 0;
    if (!any) continue;
    size_t tuple = w.beginNest(dir == 0 ? CTA_TUPLE_ORIG : CTA_TUPLE_REPLY);
    if (ends[0] || ends[1]) {
      size_t ip = w.beginNest(CTA_TUPLE_IP);
      if (ends[0]) {
        w.put(family == AF_INET ? CTA_IP_V4_SRC : CTA_IP_V6_SRC, ends[0]->bytes, addrLen);
        tupleFlags[dir] |= kFilterIpSrc;
      }
      if (ends[1]) {
        w.put(family == AF_INET ? CTA_IP_V4_DST : CTA_IP_V6_DST, ends[1]->bytes, addrLen);
        tupleFlags[dir] |= kFilterIpDst;
      }
      w.endNest(ip);
    }
    if (filter->protocol >= 0) {
      size_t proto = w.beginNest(CTA_TUPLE_PROTO);
      w.putU8(CTA_PROTO_NUM, static_cast<uint8_t>(filter->protocol));
      tupleFlags[dir] |= kFilterProtoNum;
      if (ports[0]) {
        w.putBe16(CTA_PROTO_SRC_PORT, ports[0]->low);
        tupleFlags[dir] |= kFilterProtoSrcPort;
      }
      if (ports[1]) {
        w.putBe16(CTA_PROTO_DST_PORT, ports[1]->low);
        tupleFlags[dir] |= kFilterProtoDstPort;
      }
      w.endNest(proto);
    }
    w.endNest(tuple);
  }
  if (tupleFlags[0] || tupleFlags[1]) {
    size_t nest = w.beginNest(CTA_FILTER);
    if (tupleFlags[0]) w.putU32(CTA_FILTER_ORIG_FLAGS, tupleFlags[0]);
    if (tupleFlags[1]) w.putU32(CTA_FILTER_REPLY_FLAGS, tupleFlags[1]);
    w.endNest(nest);
  }
  return finish(w);
}

namespace {

// CTA_LABELS / CTA_LABELS_MASK: nf_connlabels_replace() copies u32 words over the kernel's bitmap
// of unsigned longs, so the bytes are that bitmap as this host lays it out.
void putLabelBits(Writer& w, uint16_t type, const uint32_t bits[4]) {
  constexpr size_t kWordBits = sizeof(unsigned long) * 8;
  unsigned long words[16 / sizeof(unsigned long)] = {};
  for (size_t bit = 0; bit < 128; ++bit)
    if (bits[bit / 32] & (1u << (bit % 32))) words[bit / kWordBits] |= 1UL << (bit % kWordBits);
  w.put(type, words, sizeof words);
}

void putTuple(Writer& w, uint16_t type, const Tuple& t, uint8_t family) {
  size_t tuple = w.beginNest(type);
  size_t addrLen = family == AF_INET6 ? 16 : 4;
  size_t ip = w.beginNest(CTA_TUPLE_IP);
  if (t.has & kTupleHasSrc) w.put(family == AF_INET6 ? CTA_IP_V6_SRC : CTA_IP_V4_SRC, t.srcAddr, addrLen);
  if (t.has & kTupleHasDst) w.put(family == AF_INET6 ? CTA_IP_V6_DST : CTA_IP_V4_DST, t.dstAddr, addrLen);
  w.endNest(ip);
  if (t.has & kTupleHasProto) {
    size_t proto = w.beginNest(CTA_TUPLE_PROTO);
    w.putU8(CTA_PROTO_NUM, t.proto);
    if (t.has & kTupleHasPorts) {
      w.putBe16(CTA_PROTO_SRC_PORT, t.sport);
      w.putBe16(CTA_PROTO_DST_PORT, t.dport);
    }
    if (t.has & kTupleHasIcmp) {
      bool v6 = t.proto == 58;
      w.putBe16(v6 ? CTA_PROTO_ICMPV6_ID : CTA_PROTO_ICMP_ID, t.icmpId);
      w.putU8(v6 ? CTA_PROTO_ICMPV6_TYPE : CTA_PROTO_ICMP_TYPE, t.icmpType);
      w.putU8(v6 ? CTA_PROTO_ICMPV6_CODE : CTA_PROTO_ICMP_CODE, t.icmpCode);
    }
    w.endNest(proto);
  }
  if (t.has & kTupleHasZone) w.putBe16(CTA_TUPLE_ZONE, t.zone);
  w.endNest(tuple);
}

}  // namespace

size_t buildEntryRequest(uint8_t* buf, size_t cap, EntryOp op, uint32_t seq, const EntrySpec& s) {
  Writer w(buf, cap);
  uint16_t msg = op == EntryOp::kGet ? IPCTNL_MSG_CT_GET : op == EntryOp::kDelete ? IPCTNL_MSG_CT_DELETE : IPCTNL_MSG_CT_NEW;
  uint16_t flags = NLM_F_REQUEST | NLM_F_ACK;
  // Without NLM_F_CREATE a NEW only changes an existing entry (ENOENT otherwise); with
  // NLM_F_EXCL creating one that exists is EEXIST rather than an update.
  if (op == EntryOp::kCreate) flags |= NLM_F_CREATE | NLM_F_EXCL;
  writeHeader(w, static_cast<uint16_t>((NFNL_SUBSYS_CTNETLINK << 8) | msg), flags, seq, s.family, 0);
  if (s.orig.has) putTuple(w, CTA_TUPLE_ORIG, s.orig, s.family);
  if (s.reply.has) putTuple(w, CTA_TUPLE_REPLY, s.reply, s.family);
  if (s.hasId) w.putBe32(CTA_ID, s.id);
  if (s.hasZone) w.putBe16(CTA_ZONE, s.zone);
  if (s.hasTimeout) w.putBe32(CTA_TIMEOUT, s.timeout);
  if (s.hasMark) w.putBe32(CTA_MARK, s.mark);
  if (s.hasStatus) w.putBe32(CTA_STATUS, s.status);
  if (s.hasLabels) putLabelBits(w, CTA_LABELS, s.labels);
  if (s.hasLabelsMask) putLabelBits(w, CTA_LABELS_MASK, s.labelsMask);
  if (s.hasTcpState) {
    size_t info = w.beginNest(CTA_PROTOINFO);
    size_t tcp = w.beginNest(CTA_PROTOINFO_TCP);
    w.putU8(CTA_PROTOINFO_TCP_STATE, s.tcpState);
    w.endNest(tcp);
    w.endNest(info);
  }
  return finish(w);
}

size_t buildFlushRequest(uint8_t* buf, size_t cap, uint32_t seq, uint8_t family) {
  Writer w(buf, cap);
  // ctnetlink_del_conntrack() flushes one family only when nfgen version is non-zero (every
  // kernel since 2.6); with version 0 it flushes all, whatever the family says.
  writeHeader(w, static_cast<uint16_t>((NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_DELETE),
              NLM_F_REQUEST | NLM_F_ACK, seq, family, 0, family != 0 ? 1 : NFNETLINK_V0);
  return finish(w);
}

bool walkDatagram(const uint8_t* data, size_t len, uint32_t expectSeq, MessageSink& sink, bool& done,
                  SysError& err) {
  while (len >= NLMSG_HDRLEN) {
    nlmsghdr h;
    std::memcpy(&h, data, sizeof h);
    if (h.nlmsg_len < NLMSG_HDRLEN || h.nlmsg_len > len) {
      err = SysError::malformed("message length " + std::to_string(h.nlmsg_len) +
                                " does not fit in the datagram (" + std::to_string(len) +
                                " bytes left)");
      return false;
    }
    const uint8_t* payload = data + NLMSG_HDRLEN;
    size_t payloadLen = h.nlmsg_len - NLMSG_HDRLEN;
    bool ours = expectSeq == 0 || h.nlmsg_seq == expectSeq;
    if (ours) {
      if (h.nlmsg_type == NLMSG_DONE) {
        done = true;
        if (payloadLen >= sizeof(int)) {
          int code;
          std::memcpy(&code, payload, sizeof code);
          int errnum = 0;
          if (kernelErrno(code, errnum)) {
            err = SysError::fromErrno(errnum, "ctnetlink dump");
            return false;
          }
          if (code < 0) {
            err = SysError::malformed("NLMSG_DONE carries error code " + std::to_string(code));
            return false;
          }
        }
        return true;
      }
      if (h.nlmsg_type == NLMSG_ERROR) {
        if (payloadLen < sizeof(int)) {
          err = SysError::malformed("NLMSG_ERROR without an error code");
          return false;
        }
        int code;
        std::memcpy(&code, payload, sizeof code);
        if (code == 0) {  // an acknowledgement
          done = true;
          return true;
        }
        int errnum = 0;
        if (!kernelErrno(code, errnum)) {
          err = SysError::malformed("NLMSG_ERROR carries error code " + std::to_string(code));
          return false;
        }
        err = SysError::fromErrno(errnum, "ctnetlink request");
        // Extended ack text follows the echoed request header (NETLINK_CAP_ACK: header only).
        if ((h.nlmsg_flags & NLM_F_ACK_TLVS) && payloadLen >= sizeof(nlmsgerr)) {
          nlmsgerr e;
          std::memcpy(&e, payload, sizeof e);
          size_t skip = sizeof(nlmsgerr);
          if (!(h.nlmsg_flags & NLM_F_CAPPED)) skip += NLMSG_ALIGN(e.msg.nlmsg_len) - NLMSG_HDRLEN;
          if (skip < payloadLen) {
            SysError ignored;
            forEachAttr(payload + skip, payloadLen - skip, "extended ack", ignored, [&](const Attr& a) {
              if (a.type == NLMSGERR_ATTR_MSG) {
                const char* s;
                size_t n;
                readString(a, s, n);
                err.detail.assign(s, n);
              }
              return true;
            });
          }
        }
        return false;
      }
      if (h.nlmsg_type == NLMSG_OVERRUN) {
        err = SysError::fromErrno(ENOBUFS, "netlink overrun");
        return false;
      }
      if (h.nlmsg_type >= NLMSG_MIN_TYPE) {
        if (payloadLen < sizeof(nfgenmsg)) {
          err = SysError::malformed("message too short for its nfgenmsg header");
          return false;
        }
        nfgenmsg gen;
        std::memcpy(&gen, payload, sizeof gen);
        MessageView view;
        view.type = h.nlmsg_type;
        view.flags = h.nlmsg_flags;
        view.family = gen.nfgen_family;
        view.resId = be16toh(gen.res_id);
        view.attrs = payload + NLMSG_ALIGN(sizeof(nfgenmsg));
        view.attrsLen = payloadLen - NLMSG_ALIGN(sizeof(nfgenmsg));
        uint16_t subsys = NFNL_SUBSYS_ID(h.nlmsg_type);
        uint16_t msg = NFNL_MSG_TYPE(h.nlmsg_type);
        view.kind = MessageKind::kOther;
        if (subsys == NFNL_SUBSYS_CTNETLINK) {
          if (msg == IPCTNL_MSG_CT_NEW || msg == IPCTNL_MSG_CT_GET || msg == IPCTNL_MSG_CT_DELETE ||
              msg == IPCTNL_MSG_CT_GET_CTRZERO)
            view.kind = MessageKind::kEntry;
          else if (msg == IPCTNL_MSG_CT_GET_STATS)
            view.kind = MessageKind::kStatsGlobal;
          else if (msg == IPCTNL_MSG_CT_GET_STATS_CPU)
            view.kind = MessageKind::kStatsCpu;
        } else if (subsys == NFNL_SUBSYS_CTNETLINK_EXP && msg == IPCTNL_MSG_EXP_GET_STATS_CPU) {
          view.kind = MessageKind::kExpStatsCpu;
        }
        if (!sink.onMessage(view, err)) return false;
      }
    }
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

bool decodeEntry(const MessageView& m, Entry& e, SysError& err) {
  e.family = m.family;
  return forEachAttr(m.attrs, m.attrsLen, "conntrack message", err, [&](const Attr& a) {
    switch (a.type) {
      case CTA_TUPLE_ORIG:
        e.present |= kHasOrig;
        return decodeTuple(a, e.orig, err);
      case CTA_TUPLE_REPLY:
        e.present |= kHasReply;
        return decodeTuple(a, e.reply, err);
      case CTA_TUPLE_MASTER:
        e.present |= kHasMaster;
        return decodeTuple(a, e.master, err);
      case CTA_STATUS:
        if (!expectLen(a, 4, "CTA_STATUS", err)) return false;
        e.status = be32(a.data);
        e.present |= kHasStatus;
        return true;
      case CTA_PROTOINFO:
        return decodeProtoinfo(a, e, err);
      case CTA_HELP:
        return forEachAttr(a.data, a.len, "CTA_HELP", err, [&](const Attr& h) {
          if (h.type == CTA_HELP_NAME) {
            readString(h, e.helper, e.helperLen);
            e.present |= kHasHelper;
          }
          return true;
        });
      case CTA_TIMEOUT:
        if (!expectLen(a, 4, "CTA_TIMEOUT", err)) return false;
        e.timeout = be32(a.data);
        e.present |= kHasTimeout;
        return true;
      case CTA_MARK:
        if (!expectLen(a, 4, "CTA_MARK", err)) return false;
        e.mark = be32(a.data);
        e.present |= kHasMark;
        return true;
      case CTA_COUNTERS_ORIG:
        e.present |= kHasCountersOrig;
        return decodeCountersNest(a, e.packetsOrig, e.bytesOrig, err);
      case CTA_COUNTERS_REPLY:
        e.present |= kHasCountersReply;
        return decodeCountersNest(a, e.packetsReply, e.bytesReply, err);
      case CTA_USE:
        if (!expectLen(a, 4, "CTA_USE", err)) return false;
        e.use = be32(a.data);
        e.present |= kHasUse;
        return true;
      case CTA_ID:
        if (!expectLen(a, 4, "CTA_ID", err)) return false;
        e.id = be32(a.data);
        e.present |= kHasId;
        return true;
      case CTA_SEQ_ADJ_ORIG:
        e.present |= kHasSeqAdjOrig;
        return decodeSeqAdj(a, e.seqAdjOrig, err);
      case CTA_SEQ_ADJ_REPLY:
        e.present |= kHasSeqAdjReply;
        return decodeSeqAdj(a, e.seqAdjReply, err);
      case CTA_SECMARK:
        if (!expectLen(a, 4, "CTA_SECMARK", err)) return false;
        e.secmark = be32(a.data);
        e.present |= kHasSecmark;
        return true;
      case CTA_ZONE:
        if (!expectLen(a, 2, "CTA_ZONE", err)) return false;
        e.zone = be16(a.data);
        e.present |= kHasZone;
        return true;
      case CTA_SECCTX:
        return forEachAttr(a.data, a.len, "CTA_SECCTX", err, [&](const Attr& s) {
          if (s.type == CTA_SECCTX_NAME) {
            readString(s, e.secctx, e.secctxLen);
            e.present |= kHasSecctx;
          }
          return true;
        });
      case CTA_TIMESTAMP:
        return forEachAttr(a.data, a.len, "CTA_TIMESTAMP", err, [&](const Attr& t) {
          if (t.type == CTA_TIMESTAMP_START) {
            if (!expectLen(t, 8, "CTA_TIMESTAMP_START", err)) return false;
            e.tsStart = be64(t.data);
            e.present |= kHasTimestampStart;
          } else if (t.type == CTA_TIMESTAMP_STOP) {
            if (!expectLen(t, 8, "CTA_TIMESTAMP_STOP", err)) return false;
            e.tsStop = be64(t.data);
            e.present |= kHasTimestampStop;
          }
          return true;
        });
      case CTA_LABELS: {
        // The kernel sends its bitmap of unsigned longs in host order.
        if (a.len == 0 || a.len > 16 || a.len % sizeof(unsigned long) != 0) {
          err = SysError::malformed("CTA_LABELS has " + std::to_string(a.len) + " bytes");
          return false;
        }
        unsigned long words[16 / sizeof(unsigned long)] = {};
        std::memcpy(words, a.data, a.len);
        constexpr size_t kWordBits = sizeof(unsigned long) * 8;
        for (size_t bit = 0; bit < a.len * 8; ++bit)
          if (words[bit / kWordBits] & (1UL << (bit % kWordBits))) e.labels[bit / 32] |= 1u << (bit % 32);
        e.present |= kHasLabels;
        return true;
      }
      case CTA_SYNPROXY:
        e.present |= kHasSynproxy;
        return forEachAttr(a.data, a.len, "CTA_SYNPROXY", err, [&](const Attr& s) {
          uint32_t* field = nullptr;
          switch (s.type) {
            case CTA_SYNPROXY_ISN: field = &e.synIsn; break;
            case CTA_SYNPROXY_ITS: field = &e.synIts; break;
            case CTA_SYNPROXY_TSOFF: field = &e.synTsoff; break;
            default: return true;
          }
          if (!expectLen(s, 4, "CTA_SYNPROXY_*", err)) return false;
          *field = be32(s.data);
          return true;
        });
      default:
        return true;  // unknown or not for dumps (CTA_NAT_*): skip
    }
  });
}

bool decodeCounters(const MessageView& m, std::vector<uint32_t>& pairs, SysError& err) {
  return forEachAttr(m.attrs, m.attrsLen, "stats message", err, [&](const Attr& a) {
    if (a.len == 4) {
      pairs.push_back(a.type);
      pairs.push_back(be32(a.data));
    }
    return true;  // other sizes: not a counter we can read; skip like any unknown
  });
}

void appendRecord(Batch& batch, const Entry& e) {
  size_t base = batch.records.size();
  batch.records.resize(base + slot::kCount, 0);
  uint32_t* r = batch.records.data() + base;
  r[slot::kPresent] = e.present;
  r[slot::kFamily] = e.family;
  r[slot::kId] = e.id;
  r[slot::kStatus] = e.status;
  r[slot::kTimeout] = e.timeout;
  r[slot::kMark] = e.mark;
  r[slot::kUse] = e.use;
  r[slot::kZone] = e.zone;
  r[slot::kSecmark] = e.secmark;
  uint32_t origSrc = 0, origDst = 0, replySrc = 0, replyDst = 0, unusedSrc = 0, unusedDst = 0;
  if (e.present & kHasOrig) writeTuple(batch, r + slot::kOrig, e.orig, nullptr, 0, 0, origSrc, origDst);
  if (e.present & kHasReply)
    writeTuple(batch, r + slot::kReply, e.reply, (e.present & kHasOrig) ? &e.orig : nullptr, origSrc,
               origDst, replySrc, replyDst);
  if (e.present & kHasMaster)
    writeTuple(batch, r + slot::kMaster, e.master, nullptr, 0, 0, unusedSrc, unusedDst);
  const uint64_t counters[4] = {e.packetsOrig, e.bytesOrig, e.packetsReply, e.bytesReply};
  for (int i = 0; i < 4; ++i) {
    r[slot::kCounters + 2 * i] = static_cast<uint32_t>(counters[i]);
    r[slot::kCounters + 2 * i + 1] = static_cast<uint32_t>(counters[i] >> 32);
  }
  r[slot::kTimestamp] = static_cast<uint32_t>(e.tsStart);
  r[slot::kTimestamp + 1] = static_cast<uint32_t>(e.tsStart >> 32);
  r[slot::kTimestamp + 2] = static_cast<uint32_t>(e.tsStop);
  r[slot::kTimestamp + 3] = static_cast<uint32_t>(e.tsStop >> 32);
  r[slot::kTcp] = e.tcpState | (static_cast<uint32_t>(e.wscaleOrig) << 8) |
                  (static_cast<uint32_t>(e.wscaleReply) << 16) | (e.tcpHas << 24);
  r[slot::kTcpFlags] = e.flagsOrig | (static_cast<uint32_t>(e.maskOrig) << 8) |
                       (static_cast<uint32_t>(e.flagsReply) << 16) | (static_cast<uint32_t>(e.maskReply) << 24);
  r[slot::kSctp] = e.sctpState | (e.sctpHas << 8);
  r[slot::kSctpVtagOrig] = e.vtagOrig;
  r[slot::kSctpVtagReply] = e.vtagReply;
  r[slot::kDccp] = e.dccpState | (static_cast<uint32_t>(e.dccpRole) << 8) | (e.dccpHas << 16);
  r[slot::kDccpSeqLo] = static_cast<uint32_t>(e.dccpSeq);
  r[slot::kDccpSeqHi] = static_cast<uint32_t>(e.dccpSeq >> 32);
  if (e.present & kHasHelper) {
    size_t n = e.helperLen > kStringRefMaxLen ? kStringRefMaxLen : e.helperLen;
    uint32_t off = static_cast<uint32_t>(batch.text.size());
    batch.text.append(e.helper, n);
    r[slot::kHelper] = off | (static_cast<uint32_t>(n) << 24);
  }
  if (e.present & kHasSecctx) {
    r[slot::kSecctxOff] = static_cast<uint32_t>(batch.text.size());
    r[slot::kSecctxLen] = static_cast<uint32_t>(e.secctxLen);
    batch.text.append(e.secctx, e.secctxLen);
  }
  for (int i = 0; i < 4; ++i) r[slot::kLabels + i] = e.labels[i];
  const SeqAdj* adj[2] = {&e.seqAdjOrig, &e.seqAdjReply};
  const uint32_t adjSlot[2] = {slot::kSeqAdjOrig, slot::kSeqAdjReply};
  for (int i = 0; i < 2; ++i) {
    r[adjSlot[i]] = adj[i]->correctionPos;
    r[adjSlot[i] + 1] = adj[i]->offsetBefore;
    r[adjSlot[i] + 2] = adj[i]->offsetAfter;
  }
  r[slot::kEvent] = e.event;
  r[slot::kSynproxy] = e.synIsn;
  r[slot::kSynproxy + 1] = e.synIts;
  r[slot::kSynproxy + 2] = e.synTsoff;
  ++batch.count;
}

uint64_t dedupKey(const Entry& e) {
  uint32_t h = 2166136261u;
  const Tuple& t = e.orig;
  size_t addrLen = t.family == AF_INET6 ? 16 : 4;
  h = hashBytes(h, &t.family, 1);
  h = hashBytes(h, t.srcAddr, addrLen);
  h = hashBytes(h, t.dstAddr, addrLen);
  h = hashBytes(h, &t.proto, 1);
  const uint16_t ports[3] = {t.sport, t.dport, t.icmpId};
  h = hashBytes(h, reinterpret_cast<const uint8_t*>(ports), sizeof ports);
  uint32_t zone = zoneOf(e);
  h = hashBytes(h, reinterpret_cast<const uint8_t*>(&zone), sizeof zone);
  return (static_cast<uint64_t>(e.id) << 32) | h;
}

bool KeySet::insert(uint64_t key) {
  if (key == 0) {  // 0 marks an empty slot
    bool fresh = !hasZero_;
    hasZero_ = true;
    size_ += fresh;
    return fresh;
  }
  if ((size_ + 1) * 2 > slots_.size()) rehash(slots_.empty() ? 1024 : slots_.size() * 2);
  size_t mask = slots_.size() - 1;
  size_t i = static_cast<size_t>((key * 0x9E3779B97F4A7C15ull) >> 20) & mask;
  for (;;) {
    if (slots_[i] == key) return false;
    if (slots_[i] == 0) {
      slots_[i] = key;
      ++size_;
      return true;
    }
    i = (i + 1) & mask;
  }
}

void KeySet::reserve(size_t count) {
  size_t capacity = 1024;
  while (capacity < count * 2) capacity *= 2;  // load stays at or under one half
  if (capacity > slots_.size()) rehash(capacity);
}

void KeySet::rehash(size_t capacity) {
  std::vector<uint64_t> old;
  old.swap(slots_);
  slots_.assign(capacity, 0);
  size_t mask = slots_.size() - 1;
  for (uint64_t key : old) {
    if (key == 0) continue;
    size_t i = static_cast<size_t>((key * 0x9E3779B97F4A7C15ull) >> 20) & mask;
    while (slots_[i] != 0) i = (i + 1) & mask;
    slots_[i] = key;
  }
}

bool EntrySink::onMessage(const MessageView& m, SysError& err) {
  if (m.kind != MessageKind::kEntry) return true;
  if (counters_) {
    counters_->messages.fetch_add(1, std::memory_order_relaxed);
    if (m.flags & NLM_F_DUMP_FILTERED) counters_->kernelFiltered.store(true, std::memory_order_relaxed);
  }
  Entry e;
  if (!decodeEntry(m, e, err)) return false;
  if (classifyEvents) {
    if (NFNL_MSG_TYPE(m.type) == IPCTNL_MSG_CT_DELETE) e.event = kEventDestroy;
    else if (m.flags & (NLM_F_CREATE | NLM_F_EXCL)) e.event = kEventNew;
    else e.event = kEventUpdate;
  }
  if (filter_ && !matches(*filter_, e)) {
    if (counters_) counters_->filteredOut.fetch_add(1, std::memory_order_relaxed);
    return true;
  }
  // A dump that resumes inside a changed hash bucket can send an entry twice.
  if (seen_ && !seen_->insert(dedupKey(e))) {
    if (counters_) counters_->duplicates.fetch_add(1, std::memory_order_relaxed);
    return true;
  }
  if (grouper) {
    grouper->add(e);
    return true;
  }
  appendRecord(batch_, e);
  // A batch holds at most batchSize entries, even in the middle of a datagram.
  if (batchFull_ && (batch_.count >= batchSize_ || batch_.text.size() >= kMaxBatchText) && !batchFull_()) {
    stopped = true;
    return false;
  }
  return true;
}

namespace {

constexpr uint32_t kStatusSeenReply = 1u << 1;      // IPS_SEEN_REPLY
constexpr uint32_t kStatusAssured = 1u << 2;        // IPS_ASSURED
constexpr uint32_t kStatusNat = (1u << 4) | (1u << 5);  // IPS_SRC_NAT | IPS_DST_NAT
constexpr uint8_t kNoState = 0xff;

// An address key: present, family, 16 bytes.
void putAddress(std::string& key, const Tuple& t, uint32_t bit, bool src, bool tuplePresent) {
  bool has = tuplePresent && (t.has & bit);
  key.push_back(static_cast<char>(has));
  key.push_back(static_cast<char>(has ? t.family : 0));
  const uint8_t* addr = src ? t.srcAddr : t.dstAddr;
  for (int i = 0; i < 16; ++i) key.push_back(static_cast<char>(has ? addr[i] : 0));
}

void putPort(std::string& key, const Tuple& t, bool tuplePresent, uint16_t port) {
  bool has = tuplePresent && (t.has & kTupleHasPorts);
  key.push_back(static_cast<char>(has));
  key.push_back(static_cast<char>(has ? port >> 8 : 0));
  key.push_back(static_cast<char>(has ? port & 0xff : 0));
}

uint8_t u8At(const std::string& key, size_t& at) { return static_cast<uint8_t>(key[at++]); }

void takeAddress(const std::string& key, size_t& at, Entry& e, Tuple& t, uint32_t bit, bool src, uint32_t tupleBit) {
  bool has = u8At(key, at) != 0;
  uint8_t family = u8At(key, at);
  uint8_t* addr = src ? t.srcAddr : t.dstAddr;
  for (int i = 0; i < 16; ++i) addr[i] = u8At(key, at);
  if (!has) return;
  t.has |= bit;
  t.family = family;
  if (e.family == 0) e.family = family;
  e.present |= tupleBit;
}

}  // namespace

void Grouper::add(const Entry& e) {
  key_.clear();
  bool orig = (e.present & kHasOrig) != 0;
  bool reply = (e.present & kHasReply) != 0;
  for (SummaryKey k : keys_) {
    switch (k) {
      case SummaryKey::kFamily: key_.push_back(static_cast<char>(e.family)); break;
      case SummaryKey::kProtocol: key_.push_back(static_cast<char>(orig && (e.orig.has & kTupleHasProto) ? e.orig.proto : 0)); break;
      case SummaryKey::kTcpState:
        key_.push_back(static_cast<char>((e.present & kHasTcp) && (e.tcpHas & kTcpHasState) ? e.tcpState : kNoState));
        break;
      case SummaryKey::kSrc: putAddress(key_, e.orig, kTupleHasSrc, true, orig); break;
      case SummaryKey::kDst: putAddress(key_, e.orig, kTupleHasDst, false, orig); break;
      case SummaryKey::kSport: putPort(key_, e.orig, orig, e.orig.sport); break;
      case SummaryKey::kDport: putPort(key_, e.orig, orig, e.orig.dport); break;
      case SummaryKey::kReplySrc: putAddress(key_, e.reply, kTupleHasSrc, true, reply); break;
      case SummaryKey::kReplyDst: putAddress(key_, e.reply, kTupleHasDst, false, reply); break;
      case SummaryKey::kMark:
        for (int shift = 24; shift >= 0; shift -= 8) key_.push_back(static_cast<char>(e.mark >> shift));
        break;
      case SummaryKey::kZone: {
        bool has = (e.present & kHasZone) != 0;
        key_.push_back(static_cast<char>(has));
        key_.push_back(static_cast<char>(has ? e.zone >> 8 : 0));
        key_.push_back(static_cast<char>(has ? e.zone & 0xff : 0));
        break;
      }
      case SummaryKey::kAssured: key_.push_back(static_cast<char>((e.status & kStatusAssured) != 0)); break;
      case SummaryKey::kNat: key_.push_back(static_cast<char>((e.status & kStatusNat) != 0)); break;
      case SummaryKey::kSeenReply: key_.push_back(static_cast<char>((e.status & kStatusSeenReply) != 0)); break;
    }
  }
  ++groups_[key_];
}

bool Grouper::emit(Batch& batch, size_t batchSize, const std::function<bool()>& full) {
  for (const auto& [key, count] : groups_) {
    // An entry with only the grouped fields, read back by lib/table/summary.ts like any record.
    Entry e;
    size_t at = 0;
    for (SummaryKey k : keys_) {
      switch (k) {
        case SummaryKey::kFamily: e.family = u8At(key, at); break;
        case SummaryKey::kProtocol:
          e.orig.proto = u8At(key, at);
          e.orig.has |= kTupleHasProto;
          e.present |= kHasOrig;
          break;
        case SummaryKey::kTcpState: {
          uint8_t state = u8At(key, at);
          if (state != kNoState) {
            e.tcpState = state;
            e.tcpHas |= kTcpHasState;
            e.present |= kHasTcp;
          }
          break;
        }
        case SummaryKey::kSrc: takeAddress(key, at, e, e.orig, kTupleHasSrc, true, kHasOrig); break;
        case SummaryKey::kDst: takeAddress(key, at, e, e.orig, kTupleHasDst, false, kHasOrig); break;
        case SummaryKey::kReplySrc: takeAddress(key, at, e, e.reply, kTupleHasSrc, true, kHasReply); break;
        case SummaryKey::kReplyDst: takeAddress(key, at, e, e.reply, kTupleHasDst, false, kHasReply); break;
        case SummaryKey::kSport:
        case SummaryKey::kDport: {
          bool has = u8At(key, at) != 0;
          uint16_t port = static_cast<uint16_t>((u8At(key, at) << 8) | u8At(key, at));
          if (has) {
            (k == SummaryKey::kSport ? e.orig.sport : e.orig.dport) = port;
            e.orig.has |= kTupleHasPorts;
            e.present |= kHasOrig;
          }
          break;
        }
        case SummaryKey::kMark:
          for (int i = 0; i < 4; ++i) e.mark = (e.mark << 8) | u8At(key, at);
          break;
        case SummaryKey::kZone: {
          bool has = u8At(key, at) != 0;
          uint16_t zone = static_cast<uint16_t>((u8At(key, at) << 8) | u8At(key, at));
          if (has) {
            e.zone = zone;
            e.present |= kHasZone;
          }
          break;
        }
        case SummaryKey::kAssured:
        case SummaryKey::kNat:
        case SummaryKey::kSeenReply:
          if (u8At(key, at)) {
            e.status |= k == SummaryKey::kAssured ? kStatusAssured : k == SummaryKey::kNat ? kStatusNat : kStatusSeenReply;
          }
          e.present |= kHasStatus;
          break;
      }
    }
    if (e.orig.family == 0) e.orig.family = e.family;
    if (e.reply.family == 0) e.reply.family = e.family;
    appendRecord(batch, e);
    batch.counts.push_back(count);
    if (batch.count >= batchSize && !full()) return false;
  }
  return true;
}

bool decodeDatagramToBatch(const uint8_t* data, size_t len, const Filter* filter, KeySet* seen,
                           Batch& batch, SysError& err, bool events, Grouper* grouper) {
  EntrySink sink(filter, seen, batch);
  sink.classifyEvents = events;
  sink.grouper = grouper;
  bool done = false;
  if (!walkDatagram(data, len, 0, sink, done, err)) return false;
  if (grouper) grouper->emit(batch, SIZE_MAX, [] { return true; });
  return true;
}

}  // namespace ct
