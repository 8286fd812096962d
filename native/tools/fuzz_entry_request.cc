// libFuzzer round trip for the one-entry requests the library builds (get, create, update and
// delete with either tuple or both, id, zone, timeout, mark, status, TCP state, labels and their
// mask) and for the flush request: any spec in, request bytes out, and those bytes read back (by
// the library's own decoder, plus the attributes it does not decode: the label mask) must give
// the spec again, with the right headers and no attribute beside. Built with ASan and UBSan;
// run: scripts/fuzz.sh.
#include <fuzzer/FuzzedDataProvider.h>

#include <linux/netfilter/nfnetlink.h>
#include <linux/netfilter/nfnetlink_conntrack.h>
#include <sys/socket.h>

#include "../requests.h"
#include "request_check.h"

namespace {

using roundtrip::Request;

ct::Tuple tupleFrom(FuzzedDataProvider& in) {
  ct::Tuple t;
  // Any subset of the parts, as lib/table/entry-spec.ts may give them.
  t.has = in.ConsumeIntegral<uint8_t>() &
          (ct::kTupleHasSrc | ct::kTupleHasDst | ct::kTupleHasProto | ct::kTupleHasPorts | ct::kTupleHasIcmp | ct::kTupleHasZone);
  in.ConsumeData(t.srcAddr, sizeof t.srcAddr);
  in.ConsumeData(t.dstAddr, sizeof t.dstAddr);
  t.proto = in.ConsumeIntegral<uint8_t>();
  t.sport = in.ConsumeIntegral<uint16_t>();
  t.dport = in.ConsumeIntegral<uint16_t>();
  t.icmpType = in.ConsumeIntegral<uint8_t>();
  t.icmpCode = in.ConsumeIntegral<uint8_t>();
  t.icmpId = in.ConsumeIntegral<uint16_t>();
  t.zone = in.ConsumeIntegral<uint16_t>();
  return t;
}

// What the kernel reads of a tuple: the ports and ICMP fields travel inside CTA_TUPLE_PROTO, so
// only with the protocol.
void checkTuple(const ct::Tuple& sent, const ct::Tuple& got, uint8_t family) {
  uint32_t want = sent.has & (ct::kTupleHasSrc | ct::kTupleHasDst | ct::kTupleHasZone);
  if (sent.has & ct::kTupleHasProto) want |= sent.has & (ct::kTupleHasProto | ct::kTupleHasPorts | ct::kTupleHasIcmp);
  REQUIRE(got.has == want);
  size_t n = ct::addressLength(family);
  if (want & (ct::kTupleHasSrc | ct::kTupleHasDst)) REQUIRE(got.family == family);
  if (want & ct::kTupleHasSrc) REQUIRE(std::memcmp(got.srcAddr, sent.srcAddr, n) == 0);
  if (want & ct::kTupleHasDst) REQUIRE(std::memcmp(got.dstAddr, sent.dstAddr, n) == 0);
  if (want & ct::kTupleHasProto) REQUIRE(got.proto == sent.proto);
  if (want & ct::kTupleHasPorts) REQUIRE(got.sport == sent.sport && got.dport == sent.dport);
  if (want & ct::kTupleHasIcmp)
    REQUIRE(got.icmpType == sent.icmpType && got.icmpCode == sent.icmpCode && got.icmpId == sent.icmpId);
  if (want & ct::kTupleHasZone) REQUIRE(got.zone == sent.zone);
}

// CTA_LABELS_MASK, read independently of requests.cc: the kernel's bitmap of unsigned longs.
void checkLabelBits(const ct::Attr& a, const uint32_t bits[4]) {
  REQUIRE(a.len == 16);
  for (size_t bit = 0; bit < 128; ++bit) {
    unsigned long word;
    std::memcpy(&word, a.data + (bit / (8 * sizeof word)) * sizeof word, sizeof word);
    bool sent = (bits[bit / 32] >> (bit % 32)) & 1;
    REQUIRE(((word >> (bit % (8 * sizeof word))) & 1) == sent);
  }
}

void entryRoundTrip(FuzzedDataProvider& in) {
  auto op = static_cast<ct::EntryOp>(in.ConsumeIntegralInRange<uint8_t>(0, 3));
  uint32_t seq = in.ConsumeIntegral<uint32_t>();
  ct::EntrySpec s;
  s.family = in.ConsumeBool() ? AF_INET6 : AF_INET;
  if (in.ConsumeBool()) s.orig = tupleFrom(in);
  if (in.ConsumeBool()) s.reply = tupleFrom(in);
  s.hasId = in.ConsumeBool();
  s.id = in.ConsumeIntegral<uint32_t>();
  s.hasMark = in.ConsumeBool();
  s.mark = in.ConsumeIntegral<uint32_t>();
  s.hasTimeout = in.ConsumeBool();
  s.timeout = in.ConsumeIntegral<uint32_t>();
  s.hasStatus = in.ConsumeBool();
  s.status = in.ConsumeIntegral<uint32_t>();
  s.hasTcpState = in.ConsumeBool();
  s.tcpState = in.ConsumeIntegral<uint8_t>();
  s.hasZone = in.ConsumeBool();
  s.zone = in.ConsumeIntegral<uint16_t>();
  s.hasLabels = in.ConsumeBool();
  s.hasLabelsMask = in.ConsumeBool();
  for (uint32_t& w : s.labels) w = in.ConsumeIntegral<uint32_t>();
  for (uint32_t& w : s.labelsMask) w = in.ConsumeIntegral<uint32_t>();
  size_t cap = in.ConsumeIntegralInRange<size_t>(0, 1024);

  std::vector<uint8_t> bytes = roundtrip::buildInto(cap, [&](uint8_t* buf, size_t n) {
    return ct::buildEntryRequest(buf, n, op, seq, s);
  });
  // The binding's buffer always holds the largest spec.
  REQUIRE(bytes.size() <= 1024);
  Request r = roundtrip::parse(bytes);
  uint16_t msg = op == ct::EntryOp::kGet ? IPCTNL_MSG_CT_GET : op == ct::EntryOp::kDelete ? IPCTNL_MSG_CT_DELETE : IPCTNL_MSG_CT_NEW;
  REQUIRE(r.header.nlmsg_type == ((NFNL_SUBSYS_CTNETLINK << 8) | msg));
  uint16_t flags = NLM_F_REQUEST | NLM_F_ACK | (op == ct::EntryOp::kCreate ? NLM_F_CREATE | NLM_F_EXCL : 0);
  REQUIRE(r.header.nlmsg_flags == flags);
  REQUIRE(r.header.nlmsg_seq == seq && r.header.nlmsg_pid == 0);
  REQUIRE(r.gen.nfgen_family == s.family && r.gen.version == NFNETLINK_V0 && r.gen.res_id == 0);

  // Exactly the attributes the spec asks for.
  std::map<uint16_t, bool> want = {
      {CTA_TUPLE_ORIG, s.orig.has != 0}, {CTA_TUPLE_REPLY, s.reply.has != 0}, {CTA_ID, s.hasId},
      {CTA_ZONE, s.hasZone},              {CTA_TIMEOUT, s.hasTimeout},         {CTA_MARK, s.hasMark},
      {CTA_STATUS, s.hasStatus},          {CTA_LABELS, s.hasLabels},           {CTA_LABELS_MASK, s.hasLabelsMask},
      {CTA_PROTOINFO, s.hasTcpState}};
  size_t expected = 0;
  for (const auto& [type, present] : want) {
    REQUIRE(r.attrs.count(type) == (present ? 1u : 0u));
    expected += present;
  }
  REQUIRE(r.attrs.size() == expected);

  ct::Entry e = roundtrip::decodeAsEntry(bytes);
  uint32_t present = (s.orig.has ? ct::kHasOrig : 0) | (s.reply.has ? ct::kHasReply : 0) | (s.hasId ? ct::kHasId : 0) |
                     (s.hasZone ? ct::kHasZone : 0) | (s.hasTimeout ? ct::kHasTimeout : 0) | (s.hasMark ? ct::kHasMark : 0) |
                     (s.hasStatus ? ct::kHasStatus : 0) | (s.hasLabels ? ct::kHasLabels : 0) | (s.hasTcpState ? ct::kHasTcp : 0);
  REQUIRE(e.present == present);
  if (s.orig.has) checkTuple(s.orig, e.orig, s.family);
  if (s.reply.has) checkTuple(s.reply, e.reply, s.family);
  if (s.hasId) REQUIRE(e.id == s.id);
  if (s.hasZone) REQUIRE(e.zone == s.zone);
  if (s.hasTimeout) REQUIRE(e.timeout == s.timeout);
  if (s.hasMark) REQUIRE(e.mark == s.mark);
  if (s.hasStatus) REQUIRE(e.status == s.status);
  if (s.hasLabels) REQUIRE(std::memcmp(e.labels, s.labels, sizeof s.labels) == 0);
  if (s.hasLabelsMask) checkLabelBits(r.attrs.at(CTA_LABELS_MASK), s.labelsMask);
  if (s.hasTcpState) REQUIRE(e.tcpHas == ct::kTcpHasState && e.tcpState == s.tcpState);
}

void flushRoundTrip(FuzzedDataProvider& in) {
  static constexpr uint8_t kFamilies[] = {0, AF_INET, AF_INET6};
  uint8_t family = in.PickValueInArray(kFamilies);
  uint32_t seq = in.ConsumeIntegral<uint32_t>();
  size_t cap = in.ConsumeIntegralInRange<size_t>(0, 64);
  std::vector<uint8_t> bytes = roundtrip::buildInto(cap, [&](uint8_t* buf, size_t n) {
    return ct::buildFlushRequest(buf, n, seq, family);
  });
  REQUIRE(bytes.size() <= 64);
  Request r = roundtrip::parse(bytes);
  REQUIRE(r.header.nlmsg_type == ((NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_DELETE));
  REQUIRE(r.header.nlmsg_flags == (NLM_F_REQUEST | NLM_F_ACK) && r.header.nlmsg_seq == seq);
  // One family only with a non-zero nfgenmsg version (ctnetlink_del_conntrack()); 0 flushes all.
  REQUIRE(r.gen.nfgen_family == family && r.gen.version == (family != 0 ? 1 : NFNETLINK_V0));
  REQUIRE(r.attrs.empty());
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  FuzzedDataProvider in(data, size);
  if (in.ConsumeIntegralInRange<uint8_t>(0, 7) == 0) {
    flushRoundTrip(in);
  } else {
    entryRoundTrip(in);
  }
  return 0;
}
