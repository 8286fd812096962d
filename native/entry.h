// A conntrack entry as the decoder fills it and the record writer, filter, de-duplication and
// grouping read it. Addresses stay binary until the record is written.
#pragma once

#include <sys/socket.h>

#include <cstddef>
#include <cstdint>

#include "record_layout.h"

namespace ct {

// Bytes of an address of `family` (AF_INET6: 16, else 4).
constexpr size_t addressLength(uint8_t family) { return family == AF_INET6 ? 16 : 4; }

struct Tuple {
  uint32_t has = 0;  // TupleHas
  uint8_t family = 0;
  uint8_t srcAddr[16] = {};
  uint8_t dstAddr[16] = {};
  uint8_t proto = 0;
  uint16_t sport = 0, dport = 0;
  uint8_t icmpType = 0, icmpCode = 0;
  uint16_t icmpId = 0;
  uint16_t zone = 0;
};

struct SeqAdj {
  uint32_t correctionPos = 0, offsetBefore = 0, offsetAfter = 0;
};

struct Entry {
  uint32_t present = 0;  // Present
  uint8_t family = 0;
  uint32_t id = 0, status = 0, timeout = 0, mark = 0, use = 0, secmark = 0;
  uint16_t zone = 0;
  Tuple orig, reply, master;
  uint64_t packetsOrig = 0, bytesOrig = 0, packetsReply = 0, bytesReply = 0;
  uint64_t tsStart = 0, tsStop = 0;
  uint32_t tcpHas = 0;
  uint8_t tcpState = 0, wscaleOrig = 0, wscaleReply = 0;
  uint8_t flagsOrig = 0, maskOrig = 0, flagsReply = 0, maskReply = 0;
  uint32_t sctpHas = 0;
  uint8_t sctpState = 0;
  uint32_t vtagOrig = 0, vtagReply = 0;
  uint32_t dccpHas = 0;
  uint8_t dccpState = 0, dccpRole = 0;
  uint64_t dccpSeq = 0;
  const char* helper = nullptr;  // points into the datagram; valid while decoding it
  size_t helperLen = 0;
  const char* secctx = nullptr;
  size_t secctxLen = 0;
  uint32_t labels[kLabelWords] = {};
  SeqAdj seqAdjOrig, seqAdjReply;
  uint32_t synIsn = 0, synIts = 0, synTsoff = 0;
  uint8_t event = kEventNone;
};

// The entry's zone: CTA_ZONE, else a tuple's CTA_TUPLE_ZONE, else the default zone 0.
inline uint32_t zoneOf(const Entry& e) {
  if (e.present & kHasZone) return e.zone;
  if (e.orig.has & kTupleHasZone) return e.orig.zone;
  if (e.reply.has & kTupleHasZone) return e.reply.zone;
  return 0;
}

}  // namespace ct
