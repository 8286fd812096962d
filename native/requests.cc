#include "requests.h"

#include <linux/netfilter/nfnetlink.h>
#include <linux/netfilter/nfnetlink_conntrack.h>

#include "wire.h"

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
}  // namespace

size_t buildRequest(uint8_t* buf, size_t cap, uint16_t type, uint16_t flags, uint32_t seq,
                    uint8_t family, uint16_t resId) {
  Writer w(buf, cap);
  writeHeader(w, type, flags, seq, family, resId);
  return finishMessage(w);
}

size_t buildDumpRequest(uint8_t* buf, size_t cap, uint32_t seq, const Filter* filter, uint8_t msg) {
  Writer w(buf, cap);
  if (msg == 0) msg = IPCTNL_MSG_CT_GET;
  // The family is a kernel-side filter too (nfgen_family): only send it when asked to filter there.
  uint8_t family = filter && filter->kernel ? filter->family : 0;
  writeHeader(w, static_cast<uint16_t>((NFNL_SUBSYS_CTNETLINK << 8) | msg),
              NLM_F_REQUEST | NLM_F_DUMP, seq, family, 0);
  if (filter == nullptr || !filter->kernel) return finishMessage(w);
  // The dying and unconfirmed lists filter by family only.
  if (msg == IPCTNL_MSG_CT_GET_DYING || msg == IPCTNL_MSG_CT_GET_UNCONFIRMED) return finishMessage(w);

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
  if (family != AF_INET && family != AF_INET6) return finishMessage(w);
  size_t addrLen = addressLength(family);
  bool portsComparable = filter->protocol == kProtoTcp || filter->protocol == kProtoUdp;
  uint32_t tupleFlags[2] = {0, 0};
  for (uint8_t dir = 0; dir < 2; ++dir) {
    // Indexed by `end`: one past 1 is never ours to write (the binding refuses it too).
    const AddressMatch* ends[2] = {nullptr, nullptr};
    // IPv6 addresses stay native: the kernel's tuple filter tests them with
    // `!ipv6_addr_cmp(...)`, which rejects exactly the equal addresses (5.8 to at least 6.18).
    for (const AddressMatch& m : filter->addresses)
      if (m.tuple == dir && m.end < 2 && m.family == AF_INET && family == AF_INET && m.prefix == addrLen * 8) ends[m.end] = &m;
    const PortMatch* ports[2] = {nullptr, nullptr};
    if (portsComparable)
      for (const PortMatch& m : filter->ports)
        if (m.tuple == dir && m.end < 2 && m.low == m.high) ports[m.end] = &m;
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
  return finishMessage(w);
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
  size_t addrLen = addressLength(family);
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

// CTA_NAT_SRC / CTA_NAT_DST: nfnetlink_parse_nat() reads a missing maximum as the minimum.
void putNat(Writer& w, uint16_t type, const NatRange& n, uint8_t family) {
  size_t nest = w.beginNest(type);
  size_t addrLen = addressLength(family);
  w.put(family == AF_INET6 ? CTA_NAT_V6_MINIP : CTA_NAT_V4_MINIP, n.minAddr, addrLen);
  w.put(family == AF_INET6 ? CTA_NAT_V6_MAXIP : CTA_NAT_V4_MAXIP, n.maxAddr, addrLen);
  if (n.hasPorts) {
    size_t proto = w.beginNest(CTA_NAT_PROTO);
    w.putBe16(CTA_PROTONAT_PORT_MIN, n.minPort);
    w.putBe16(CTA_PROTONAT_PORT_MAX, n.maxPort);
    w.endNest(proto);
  }
  w.endNest(nest);
}

}  // namespace

size_t buildEntryRequest(uint8_t* buf, size_t cap, EntryOp op, uint32_t seq, const EntrySpec& s) {
  Writer w(buf, cap);
  uint16_t msg = op == EntryOp::kGet       ? IPCTNL_MSG_CT_GET
                 : op == EntryOp::kGetZero ? IPCTNL_MSG_CT_GET_CTRZERO
                 : op == EntryOp::kDelete  ? IPCTNL_MSG_CT_DELETE
                                           : IPCTNL_MSG_CT_NEW;
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
  if (op == EntryOp::kCreate) {
    if (s.natSrc.given) putNat(w, CTA_NAT_SRC, s.natSrc, s.family);
    if (s.natDst.given) putNat(w, CTA_NAT_DST, s.natDst, s.family);
  }
  if (s.hasTcpState) {
    size_t info = w.beginNest(CTA_PROTOINFO);
    size_t tcp = w.beginNest(CTA_PROTOINFO_TCP);
    w.putU8(CTA_PROTOINFO_TCP_STATE, s.tcpState);
    w.endNest(tcp);
    w.endNest(info);
  }
  return finishMessage(w);
}

size_t buildFlushRequest(uint8_t* buf, size_t cap, uint32_t seq, uint8_t family) {
  Writer w(buf, cap);
  // ctnetlink_del_conntrack() flushes one family only when nfgen version is non-zero (every
  // kernel since 2.6); with version 0 it flushes all, whatever the family says.
  writeHeader(w, static_cast<uint16_t>((NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_DELETE),
              NLM_F_REQUEST | NLM_F_ACK, seq, family, 0, family != 0 ? 1 : NFNETLINK_V0);
  return finishMessage(w);
}

size_t buildFilteredFlushRequest(uint8_t* buf, size_t cap, uint32_t seq, const Filter& f) {
  Writer w(buf, cap);
  writeHeader(w, static_cast<uint16_t>((NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_DELETE),
              NLM_F_REQUEST | NLM_F_ACK, seq, f.family, 0, f.family != 0 ? 1 : NFNETLINK_V0);
  if (f.markMask != 0) {
    // The kernel compares (mark & mask) with the value as sent: send it masked.
    w.putBe32(CTA_MARK, f.markValue & f.markMask);
    w.putBe32(CTA_MARK_MASK, f.markMask);
  }
  if (f.statusSet != 0 || f.statusUnset != 0) {
    w.putBe32(CTA_STATUS, f.statusSet);
    w.putBe32(CTA_STATUS_MASK, f.statusSet | f.statusUnset);
  }
  if (f.zone > 0) w.putBe16(CTA_ZONE, static_cast<uint16_t>(f.zone));
  return finishMessage(w);
}

void putTupleAttr(Writer& w, uint16_t type, const Tuple& t, uint8_t family) { putTuple(w, type, t, family); }

}  // namespace ct
