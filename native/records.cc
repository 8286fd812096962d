#include "records.h"

#include <arpa/inet.h>
#include <sys/socket.h>

#include <cstring>

namespace ct {
namespace {

uint32_t stringRef(uint32_t offset, size_t length) {
  return offset | (static_cast<uint32_t>(length) << string_ref::kLengthShift);
}

// Writes an address into the batch text and returns its string ref.
uint32_t appendAddress(Batch& batch, uint8_t family, const uint8_t* addr) {
  char text[64];
  size_t n = formatAddress(family, addr, text);
  uint32_t off = static_cast<uint32_t>(batch.text.size());
  batch.text.append(text, n);
  return stringRef(off, n);
}

void writeTuple(Batch& batch, uint32_t* r, const Tuple& t, const Tuple* mirror, uint32_t mirrorSrc,
                uint32_t mirrorDst, uint32_t& srcRef, uint32_t& dstRef) {
  size_t addrLen = addressLength(t.family);
  r[slot::kTupleProto] = (static_cast<uint32_t>(t.proto) << tuple_word::kProto) | (t.has << tuple_word::kHas);
  r[slot::kTuplePorts] = (static_cast<uint32_t>(t.sport) << tuple_word::kSport) |
                         (static_cast<uint32_t>(t.dport) << tuple_word::kDport);
  r[slot::kTupleIcmp] = (static_cast<uint32_t>(t.icmpType) << tuple_word::kIcmpType) |
                        (static_cast<uint32_t>(t.icmpCode) << tuple_word::kIcmpCode) |
                        (static_cast<uint32_t>(t.icmpId) << tuple_word::kIcmpId);
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

void writeU64(uint32_t* r, uint64_t v) {
  r[u64_half::kLow] = static_cast<uint32_t>(v);
  r[u64_half::kHigh] = static_cast<uint32_t>(v >> 32);
}

void writeSeqAdj(uint32_t* r, const SeqAdj& s) {
  r[seq_adj::kCorrectionPos] = s.correctionPos;
  r[seq_adj::kOffsetBefore] = s.offsetBefore;
  r[seq_adj::kOffsetAfter] = s.offsetAfter;
}

}  // namespace

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
  writeU64(r + slot::kCounters + counter::kPacketsOrig, e.packetsOrig);
  writeU64(r + slot::kCounters + counter::kBytesOrig, e.bytesOrig);
  writeU64(r + slot::kCounters + counter::kPacketsReply, e.packetsReply);
  writeU64(r + slot::kCounters + counter::kBytesReply, e.bytesReply);
  writeU64(r + slot::kTimestamp + timestamp::kStart, e.tsStart);
  writeU64(r + slot::kTimestamp + timestamp::kStop, e.tsStop);
  r[slot::kTcp] = (static_cast<uint32_t>(e.tcpState) << tcp_word::kState) |
                  (static_cast<uint32_t>(e.wscaleOrig) << tcp_word::kWscaleOrig) |
                  (static_cast<uint32_t>(e.wscaleReply) << tcp_word::kWscaleReply) | (e.tcpHas << tcp_word::kHas);
  r[slot::kTcpFlags] = (static_cast<uint32_t>(e.flagsOrig) << tcp_flags_word::kFlagsOrig) |
                       (static_cast<uint32_t>(e.maskOrig) << tcp_flags_word::kMaskOrig) |
                       (static_cast<uint32_t>(e.flagsReply) << tcp_flags_word::kFlagsReply) |
                       (static_cast<uint32_t>(e.maskReply) << tcp_flags_word::kMaskReply);
  r[slot::kSctp] = (static_cast<uint32_t>(e.sctpState) << sctp_word::kState) | (e.sctpHas << sctp_word::kHas);
  r[slot::kSctpVtagOrig] = e.vtagOrig;
  r[slot::kSctpVtagReply] = e.vtagReply;
  r[slot::kDccp] = (static_cast<uint32_t>(e.dccpState) << dccp_word::kState) |
                   (static_cast<uint32_t>(e.dccpRole) << dccp_word::kRole) | (e.dccpHas << dccp_word::kHas);
  writeU64(r + slot::kDccpSeq, e.dccpSeq);
  if (e.present & kHasHelper) {
    size_t n = e.helperLen > string_ref::kMaxLength ? string_ref::kMaxLength : e.helperLen;
    uint32_t off = static_cast<uint32_t>(batch.text.size());
    batch.text.append(e.helper, n);
    r[slot::kHelper] = stringRef(off, n);
  }
  if (e.present & kHasSecctx) {
    r[slot::kSecctxOff] = static_cast<uint32_t>(batch.text.size());
    r[slot::kSecctxLen] = static_cast<uint32_t>(e.secctxLen);
    batch.text.append(e.secctx, e.secctxLen);
  }
  for (uint32_t i = 0; i < kLabelWords; ++i) r[slot::kLabels + i] = e.labels[i];
  writeSeqAdj(r + slot::kSeqAdjOrig, e.seqAdjOrig);
  writeSeqAdj(r + slot::kSeqAdjReply, e.seqAdjReply);
  r[slot::kEvent] = e.event;
  r[slot::kSynproxy + synproxy::kIsn] = e.synIsn;
  r[slot::kSynproxy + synproxy::kIts] = e.synIts;
  r[slot::kSynproxy + synproxy::kTsoff] = e.synTsoff;
  ++batch.count;
}

void writeTupleBlock(Batch& batch, uint32_t* block, const Tuple& tuple) {
  uint32_t srcRef = 0, dstRef = 0;
  writeTuple(batch, block, tuple, nullptr, 0, 0, srcRef, dstRef);
}

}  // namespace ct
