#include "entry_specs.h"

#include <cstring>

namespace ct {
namespace {

void readAddress(const uint32_t* slots, uint8_t* out) { std::memcpy(out, slots, 16); }

void readTuple(const uint32_t* b, Tuple& t, uint8_t family) {
  t.has = b[spec_slot::kTupleHas];
  t.family = family;
  t.proto = static_cast<uint8_t>(b[spec_slot::kTupleProto] >> tuple_word::kProto);
  uint32_t ports = b[spec_slot::kTuplePorts];
  t.sport = static_cast<uint16_t>(ports >> tuple_word::kSport);
  t.dport = static_cast<uint16_t>(ports >> tuple_word::kDport);
  uint32_t icmp = b[spec_slot::kTupleIcmp];
  t.icmpType = static_cast<uint8_t>(icmp >> tuple_word::kIcmpType);
  t.icmpCode = static_cast<uint8_t>(icmp >> tuple_word::kIcmpCode);
  t.icmpId = static_cast<uint16_t>(icmp >> tuple_word::kIcmpId);
  readAddress(b + spec_slot::kTupleSrc, t.srcAddr);
  readAddress(b + spec_slot::kTupleDst, t.dstAddr);
}

void readNat(const uint32_t* b, NatRange& n) {
  n.given = true;
  readAddress(b + spec_slot::kNatMin, n.minAddr);
  readAddress(b + spec_slot::kNatMax, n.maxAddr);
  n.hasPorts = b[spec_slot::kNatHasPorts] != 0;
  n.minPort = static_cast<uint16_t>(b[spec_slot::kNatPorts]);
  n.maxPort = static_cast<uint16_t>(b[spec_slot::kNatPorts] >> 16);
}

}  // namespace

void readSpecRecord(const uint32_t* records, size_t index, EntrySpec& s) {
  const uint32_t* r = records + index * spec_slot::kCount;
  uint32_t fields = r[spec_slot::kFields];
  s = EntrySpec();
  s.family = static_cast<uint8_t>(r[spec_slot::kFamily]);
  if (fields & kSpecHasOrig) readTuple(r + spec_slot::kOrig, s.orig, s.family);
  if (fields & kSpecHasReply) readTuple(r + spec_slot::kReply, s.reply, s.family);
  s.hasId = (fields & kSpecHasId) != 0;
  s.id = r[spec_slot::kId];
  s.hasMark = (fields & kSpecHasMark) != 0;
  s.mark = r[spec_slot::kMark];
  s.hasTimeout = (fields & kSpecHasTimeout) != 0;
  s.timeout = r[spec_slot::kTimeout];
  s.hasStatus = (fields & kSpecHasStatus) != 0;
  s.status = r[spec_slot::kStatus];
  s.hasTcpState = (fields & kSpecHasTcpState) != 0;
  s.tcpState = static_cast<uint8_t>(r[spec_slot::kTcpState]);
  s.hasZone = (fields & kSpecHasZone) != 0;
  s.zone = static_cast<uint16_t>(r[spec_slot::kZone]);
  s.hasLabels = (fields & kSpecHasLabels) != 0;
  s.hasLabelsMask = (fields & kSpecHasLabelsMask) != 0;
  for (uint32_t i = 0; i < kLabelWords; ++i) {
    s.labels[i] = r[spec_slot::kLabels + i];
    s.labelsMask[i] = r[spec_slot::kLabelsMask + i];
  }
  if (fields & kSpecHasNatSrc) readNat(r + spec_slot::kNatSrc, s.natSrc);
  if (fields & kSpecHasNatDst) readNat(r + spec_slot::kNatDst, s.natDst);
}

}  // namespace ct
