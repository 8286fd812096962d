// libFuzzer round trip for the dump request the library builds from a filter (family, protocol,
// mark and mask, zone, status set and unset, address prefixes and port ranges on both ends of
// both tuples): any filter in, request bytes out, and those bytes read back (the tuples, mark,
// status and zone by the library's own decoder, the masks and CTA_FILTER flags by hand) must be
// exactly what the kernel may pre-filter by: exact IPv4 addresses (prefix 32), single ports of TCP
// or UDP, the protocol, mark, status and zone; nothing the native filter would have to take back.
// Built with ASan and UBSan; run: scripts/fuzz.sh.
#include <fuzzer/FuzzedDataProvider.h>

#include <linux/netfilter/nfnetlink.h>
#include <linux/netfilter/nfnetlink_conntrack.h>
#include <sys/socket.h>

#include "../requests.h"
#include "request_check.h"

namespace {

using roundtrip::Request;

// CTA_FILTER_*_FLAGS bits (the kernel's nf_internals.h), written down again here on purpose.
constexpr uint32_t kIpSrc = 1u << 0, kIpDst = 1u << 1, kProtoNum = 1u << 3, kSrcPort = 1u << 4, kDstPort = 1u << 5;

// The filter as lib/table/filter.ts and the binding let it through: ends and tuples 0 or 1,
// prefixes within the address, port ranges low <= high.
ct::Filter filterFrom(FuzzedDataProvider& in) {
  static constexpr uint8_t kFamilies[] = {0, AF_INET, AF_INET6};
  ct::Filter f;
  f.family = in.PickValueInArray(kFamilies);
  f.protocol = in.ConsumeBool() ? -1 : in.ConsumeIntegral<uint8_t>();
  if (in.ConsumeBool()) f.protocol = in.ConsumeBool() ? 6 : 17;  // ports compare only with these
  f.tcpStates = in.ConsumeIntegral<uint32_t>();
  f.markMask = in.ConsumeBool() ? 0 : in.ConsumeIntegral<uint32_t>();
  f.markValue = in.ConsumeIntegral<uint32_t>();
  f.zone = in.ConsumeBool() ? -1 : in.ConsumeIntegral<uint16_t>();
  f.statusSet = in.ConsumeBool() ? 0 : in.ConsumeIntegral<uint32_t>();
  f.statusUnset = in.ConsumeBool() ? 0 : in.ConsumeIntegral<uint32_t>() & ~f.statusSet;
  f.kernel = in.ConsumeIntegralInRange<uint8_t>(0, 7) != 0;
  size_t addresses = in.ConsumeIntegralInRange<size_t>(0, 6);
  for (size_t i = 0; i < addresses; ++i) {
    ct::AddressMatch m;
    m.tuple = in.ConsumeIntegralInRange<uint8_t>(0, 1);
    m.end = in.ConsumeIntegralInRange<uint8_t>(0, 1);
    // Mostly the filter's family, as lib gives it; sometimes the other one.
    m.family = in.ConsumeIntegralInRange<uint8_t>(0, 3) == 0 ? (f.family == AF_INET ? AF_INET6 : AF_INET)
                                                              : (f.family == 0 ? AF_INET : f.family);
    uint8_t bits = static_cast<uint8_t>(ct::addressLength(m.family) * 8);
    m.prefix = in.ConsumeBool() ? bits : in.ConsumeIntegralInRange<uint8_t>(0, bits);
    in.ConsumeData(m.bytes, ct::addressLength(m.family));
    f.addresses.push_back(m);
  }
  size_t ports = in.ConsumeIntegralInRange<size_t>(0, 6);
  for (size_t i = 0; i < ports; ++i) {
    ct::PortMatch m;
    m.tuple = in.ConsumeIntegralInRange<uint8_t>(0, 1);
    m.end = in.ConsumeIntegralInRange<uint8_t>(0, 1);
    m.low = in.ConsumeIntegral<uint16_t>();
    m.high = in.ConsumeBool() ? m.low : in.ConsumeIntegralInRange<uint16_t>(m.low, 65535);
    f.ports.push_back(m);
  }
  return f;
}

// What one tuple of the request must hold, from the filter alone. With two exact addresses (or
// ports) for one end no entry matches both, so sending either keeps every match: the last is sent.
struct ExpectedTuple {
  bool present = false;
  const ct::AddressMatch* ends[2] = {nullptr, nullptr};
  const ct::PortMatch* ports[2] = {nullptr, nullptr};
  uint32_t flags = 0;
};

ExpectedTuple expectTuple(const ct::Filter& f, uint8_t dir) {
  ExpectedTuple t;
  for (const ct::AddressMatch& m : f.addresses)
    if (m.tuple == dir && f.family == AF_INET && m.family == AF_INET && m.prefix == 32) t.ends[m.end] = &m;
  if (f.protocol == 6 || f.protocol == 17)
    for (const ct::PortMatch& m : f.ports)
      if (m.tuple == dir && m.low == m.high) t.ports[m.end] = &m;
  if (!t.ends[0] && !t.ends[1] && f.protocol < 0) return t;
  t.present = true;
  if (t.ends[0]) t.flags |= kIpSrc;
  if (t.ends[1]) t.flags |= kIpDst;
  if (f.protocol >= 0) {
    t.flags |= kProtoNum;
    if (t.ports[0]) t.flags |= kSrcPort;
    if (t.ports[1]) t.flags |= kDstPort;
  }
  return t;
}

void checkTuple(const ExpectedTuple& want, const ct::Tuple& got, const ct::Filter& f) {
  uint32_t has = (want.ends[0] ? ct::kTupleHasSrc : 0) | (want.ends[1] ? ct::kTupleHasDst : 0);
  if (f.protocol >= 0) has |= ct::kTupleHasProto | (want.ports[0] || want.ports[1] ? ct::kTupleHasPorts : 0);
  REQUIRE(got.has == has);
  if (want.ends[0]) REQUIRE(got.family == AF_INET && std::memcmp(got.srcAddr, want.ends[0]->bytes, 4) == 0);
  if (want.ends[1]) REQUIRE(got.family == AF_INET && std::memcmp(got.dstAddr, want.ends[1]->bytes, 4) == 0);
  if (f.protocol >= 0) REQUIRE(got.proto == f.protocol);
  // An end without a single port decodes as 0: the flags say it is not compared.
  REQUIRE(got.sport == (want.ports[0] ? want.ports[0]->low : 0));
  REQUIRE(got.dport == (want.ports[1] ? want.ports[1]->low : 0));
}

void dumpRoundTrip(FuzzedDataProvider& in) {
  uint32_t seq = in.ConsumeIntegral<uint32_t>();
  bool hasFilter = in.ConsumeIntegralInRange<uint8_t>(0, 15) != 0;
  ct::Filter f = filterFrom(in);
  size_t cap = in.ConsumeIntegralInRange<size_t>(0, 512);
  std::vector<uint8_t> bytes = roundtrip::buildInto(cap, [&](uint8_t* buf, size_t n) {
    return ct::buildDumpRequest(buf, n, seq, hasFilter ? &f : nullptr);
  });
  // The receiver's buffer (ct_dump.cc) holds any filter's request.
  REQUIRE(bytes.size() <= 4096);
  Request r = roundtrip::parse(bytes);
  REQUIRE(r.header.nlmsg_type == ((NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_GET));
  REQUIRE(r.header.nlmsg_flags == (NLM_F_REQUEST | NLM_F_DUMP) && r.header.nlmsg_seq == seq);
  bool kernel = hasFilter && f.kernel;
  // The family is a kernel-side filter too: sent only when the kernel is to filter.
  REQUIRE(r.gen.nfgen_family == (kernel ? f.family : 0) && r.gen.version == NFNETLINK_V0 && r.gen.res_id == 0);
  if (!kernel) {
    REQUIRE(r.attrs.empty());
    return;
  }

  bool tuples = f.family == AF_INET || f.family == AF_INET6;
  ExpectedTuple orig = tuples ? expectTuple(f, 0) : ExpectedTuple{};
  ExpectedTuple reply = tuples ? expectTuple(f, 1) : ExpectedTuple{};
  std::map<uint16_t, bool> want = {
      {CTA_MARK, f.markMask != 0},   {CTA_MARK_MASK, f.markMask != 0},
      {CTA_STATUS, f.statusSet != 0 || f.statusUnset != 0}, {CTA_STATUS_MASK, f.statusSet != 0 || f.statusUnset != 0},
      {CTA_ZONE, f.zone >= 0},       {CTA_TUPLE_ORIG, orig.present},
      {CTA_TUPLE_REPLY, reply.present}, {CTA_FILTER, orig.flags != 0 || reply.flags != 0}};
  size_t expected = 0;
  for (const auto& [type, present] : want) {
    REQUIRE(r.attrs.count(type) == (present ? 1u : 0u));
    expected += present;
  }
  REQUIRE(r.attrs.size() == expected);

  ct::Entry e = roundtrip::decodeAsEntry(bytes);
  if (f.markMask != 0) {
    REQUIRE((e.present & ct::kHasMark) && e.mark == (f.markValue & f.markMask));
    REQUIRE(ct::be32(r.attrs.at(CTA_MARK_MASK).data) == f.markMask && r.attrs.at(CTA_MARK_MASK).len == 4);
  }
  if (f.statusSet != 0 || f.statusUnset != 0) {
    REQUIRE((e.present & ct::kHasStatus) && e.status == f.statusSet);
    REQUIRE(ct::be32(r.attrs.at(CTA_STATUS_MASK).data) == (f.statusSet | f.statusUnset) && r.attrs.at(CTA_STATUS_MASK).len == 4);
  }
  if (f.zone >= 0) REQUIRE((e.present & ct::kHasZone) && e.zone == f.zone);
  if (orig.present) checkTuple(orig, e.orig, f);
  if (reply.present) checkTuple(reply, e.reply, f);
  if (orig.flags || reply.flags) {
    auto flags = roundtrip::nested(r.attrs.at(CTA_FILTER));
    auto flagsOf = [&](uint16_t type) -> uint32_t {
      auto it = flags.find(type);
      if (it == flags.end()) return 0;
      REQUIRE(it->second.len == 4);
      uint32_t v;
      std::memcpy(&v, it->second.data, 4);  // host order, as the kernel reads NLA_U32
      REQUIRE(v != 0);
      return v;
    };
    REQUIRE(flagsOf(CTA_FILTER_ORIG_FLAGS) == orig.flags && flagsOf(CTA_FILTER_REPLY_FLAGS) == reply.flags);
    REQUIRE(flags.size() == (orig.flags != 0) + (reply.flags != 0u));
  }
}

// Beyond what the binding lets through (an end or tuple of 2 or more, prefixes past the address,
// families of any number): never a write outside the request, never a read past an address.
void robustness(FuzzedDataProvider& in) {
  ct::Filter f;
  f.family = in.ConsumeIntegral<uint8_t>();
  f.protocol = in.ConsumeIntegralInRange<int>(-1, 255);
  f.zone = in.ConsumeIntegralInRange<int>(-1, 65535);
  f.markMask = in.ConsumeIntegral<uint32_t>();
  size_t n = in.ConsumeIntegralInRange<size_t>(0, 8);
  for (size_t i = 0; i < n; ++i) {
    ct::AddressMatch m;
    m.tuple = in.ConsumeIntegral<uint8_t>();
    m.end = in.ConsumeIntegral<uint8_t>();
    m.family = in.ConsumeIntegral<uint8_t>();
    m.prefix = in.ConsumeIntegral<uint8_t>();
    in.ConsumeData(m.bytes, sizeof m.bytes);
    f.addresses.push_back(m);
    ct::PortMatch p;
    p.tuple = in.ConsumeIntegral<uint8_t>();
    p.end = in.ConsumeIntegral<uint8_t>();
    p.low = in.ConsumeIntegral<uint16_t>();
    p.high = in.ConsumeIntegral<uint16_t>();
    f.ports.push_back(p);
  }
  std::vector<uint8_t> buf(in.ConsumeIntegralInRange<size_t>(0, 512));
  size_t len = ct::buildDumpRequest(buf.data(), buf.size(), 1, &f);
  REQUIRE(len <= buf.size());
  // And the native filter on an entry with these bytes as its addresses.
  ct::Entry e;
  e.family = f.family;
  e.orig.family = e.reply.family = f.family;
  e.orig.has = e.reply.has = ct::kTupleHasSrc | ct::kTupleHasDst | ct::kTupleHasPorts | ct::kTupleHasProto;
  (void)ct::matches(f, e);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  FuzzedDataProvider in(data, size);
  if (in.ConsumeIntegralInRange<uint8_t>(0, 7) == 0) {
    robustness(in);
  } else {
    dumpRoundTrip(in);
  }
  return 0;
}
