#include "filter.h"

#include <algorithm>
#include <cstring>

namespace ct {
namespace {

bool prefixMatches(const uint8_t* addr, const AddressMatch& m) {
  // A prefix longer than the address would compare bytes past it (the binding refuses one too).
  if (m.prefix > addressLength(m.family) * 8) return false;
  size_t full = m.prefix / 8;
  if (std::memcmp(addr, m.bytes, full) != 0) return false;
  unsigned rest = m.prefix % 8;
  if (rest == 0) return true;
  uint8_t mask = static_cast<uint8_t>(0xff << (8 - rest));
  return (addr[full] & mask) == (m.bytes[full] & mask);
}

}  // namespace

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

bool sameFilter(const Filter& a, const Filter& b) {
  auto sameAddress = [](const AddressMatch& x, const AddressMatch& y) {
    return x.tuple == y.tuple && x.end == y.end && x.family == y.family && x.prefix == y.prefix &&
           std::memcmp(x.bytes, y.bytes, sizeof x.bytes) == 0;
  };
  auto samePort = [](const PortMatch& x, const PortMatch& y) {
    return x.tuple == y.tuple && x.end == y.end && x.low == y.low && x.high == y.high;
  };
  return a.family == b.family && a.protocol == b.protocol && a.tcpStates == b.tcpStates && a.markValue == b.markValue &&
         a.markMask == b.markMask && a.zone == b.zone && a.statusSet == b.statusSet && a.statusUnset == b.statusUnset &&
         std::equal(a.addresses.begin(), a.addresses.end(), b.addresses.begin(), b.addresses.end(), sameAddress) &&
         std::equal(a.ports.begin(), a.ports.end(), b.ports.begin(), b.ports.end(), samePort);
}

}  // namespace ct
