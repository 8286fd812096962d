#include "expectation.h"

#include <linux/netfilter/nfnetlink.h>
#include <linux/netfilter/nfnetlink_conntrack.h>

#include "decode.h"
#include "requests.h"

namespace ct {
namespace {

bool readBe32(const Attr& a, const char* name, uint32_t& out, SysError& err) {
  if (!expectLen(a, 4, name, err)) return false;
  out = be32(a.data);
  return true;
}

bool decodeNat(const Attr& nest, Expectation& e, SysError& err) {
  return forEachAttr(nest.data, nest.len, "CTA_EXPECT_NAT", err, [&](const Attr& a) {
    switch (a.type) {
      case CTA_EXPECT_NAT_DIR:
        return readBe32(a, "CTA_EXPECT_NAT_DIR", e.natDir, err);
      case CTA_EXPECT_NAT_TUPLE:
        return decodeTupleAttr(a, e.natTuple, err);
      default:
        return true;
    }
  });
}

uint32_t stringRef(Batch& batch, const char* s, size_t n) {
  if (n > string_ref::kMaxLength) n = string_ref::kMaxLength;
  uint32_t offset = static_cast<uint32_t>(batch.text.size());
  batch.text.append(s, n);
  return offset | (static_cast<uint32_t>(n) << string_ref::kLengthShift);
}

}  // namespace

bool decodeExpectation(const MessageView& m, Expectation& e, SysError& err) {
  e.family = m.family;
  return forEachAttr(m.attrs, m.attrsLen, "expectation message", err, [&](const Attr& a) {
    switch (a.type) {
      case CTA_EXPECT_TUPLE:
        e.present |= kExpectHasTuple;
        return decodeTupleAttr(a, e.tuple, err);
      case CTA_EXPECT_MASK:
        e.present |= kExpectHasMask;
        return decodeTupleAttr(a, e.mask, err);
      case CTA_EXPECT_MASTER:
        e.present |= kExpectHasMaster;
        return decodeTupleAttr(a, e.master, err);
      case CTA_EXPECT_TIMEOUT:
        e.present |= kExpectHasTimeout;
        return readBe32(a, "CTA_EXPECT_TIMEOUT", e.timeout, err);
      case CTA_EXPECT_ID:
        e.present |= kExpectHasId;
        return readBe32(a, "CTA_EXPECT_ID", e.id, err);
      case CTA_EXPECT_FLAGS:
        e.present |= kExpectHasFlags;
        return readBe32(a, "CTA_EXPECT_FLAGS", e.flags, err);
      case CTA_EXPECT_CLASS:
        e.present |= kExpectHasClass;
        return readBe32(a, "CTA_EXPECT_CLASS", e.klass, err);
      case CTA_EXPECT_ZONE:
        if (!expectLen(a, 2, "CTA_EXPECT_ZONE", err)) return false;
        e.zone = be16(a.data);
        e.present |= kExpectHasZone;
        return true;
      case CTA_EXPECT_HELP_NAME:
        readString(a, e.helper, e.helperLen);
        e.present |= kExpectHasHelper;
        return true;
      case CTA_EXPECT_FN:
        readString(a, e.fn, e.fnLen);
        e.present |= kExpectHasFn;
        return true;
      case CTA_EXPECT_NAT:
        e.present |= kExpectHasNat;
        return decodeNat(a, e, err);
      default:
        return true;  // unknown: skip
    }
  });
}

void appendExpectationRecord(Batch& batch, const Expectation& e) {
  size_t base = batch.records.size();
  batch.records.resize(base + slot::kCount, 0);
  uint32_t* r = batch.records.data() + base;
  r[expect_slot::kPresent] = e.present;
  r[expect_slot::kFamily] = e.family;
  r[expect_slot::kId] = e.id;
  r[expect_slot::kTimeout] = e.timeout;
  r[expect_slot::kFlags] = e.flags;
  r[expect_slot::kClass] = e.klass;
  r[expect_slot::kZone] = e.zone;
  r[expect_slot::kNatDir] = e.natDir;
  // Written one after another: `r` stays valid, the tuples only add to the batch text.
  if (e.present & kExpectHasTuple) writeTupleBlock(batch, r + expect_slot::kTuple, e.tuple);
  if (e.present & kExpectHasMask) writeTupleBlock(batch, r + expect_slot::kMask, e.mask);
  if (e.present & kExpectHasMaster) writeTupleBlock(batch, r + expect_slot::kMaster, e.master);
  if (e.present & kExpectHasNat) writeTupleBlock(batch, r + expect_slot::kNatTuple, e.natTuple);
  if (e.present & kExpectHasHelper) r[expect_slot::kHelper] = stringRef(batch, e.helper, e.helperLen);
  if (e.present & kExpectHasFn) r[expect_slot::kFn] = stringRef(batch, e.fn, e.fnLen);
  r[expect_slot::kEvent] = e.event;
  ++batch.count;
}

size_t buildExpectationRequest(uint8_t* buf, size_t cap, ExpectationOp op, uint32_t seq,
                               const ExpectationSpec& s) {
  Writer w(buf, cap);
  uint16_t msg = op == ExpectationOp::kCreate   ? IPCTNL_MSG_EXP_NEW
                 : op == ExpectationOp::kDelete ? IPCTNL_MSG_EXP_DELETE
                                                : IPCTNL_MSG_EXP_GET;
  uint16_t flags = NLM_F_REQUEST | NLM_F_ACK;
  if (op == ExpectationOp::kDump) flags = NLM_F_REQUEST | NLM_F_DUMP;
  // As for entries: NLM_F_EXCL makes an existing expectation EEXIST rather than an update.
  if (op == ExpectationOp::kCreate) flags |= NLM_F_CREATE | NLM_F_EXCL;
  writeHeader(w, static_cast<uint16_t>((NFNL_SUBSYS_CTNETLINK_EXP << 8) | msg), flags, seq, s.family, 0);
  if (s.master.has && (op == ExpectationOp::kCreate || op == ExpectationOp::kDump))
    putTupleAttr(w, CTA_EXPECT_MASTER, s.master, s.family);
  if (s.tuple.has && op != ExpectationOp::kDump) putTupleAttr(w, CTA_EXPECT_TUPLE, s.tuple, s.family);
  if (s.mask.has && op == ExpectationOp::kCreate) putTupleAttr(w, CTA_EXPECT_MASK, s.mask, s.family);
  if (s.hasZone) w.putBe16(CTA_EXPECT_ZONE, s.zone);
  // ctnetlink_del_expect() compares CTA_EXPECT_ID with the expectation's address rather than
  // the id it reports (as in the 6.x sources read): with a delete it would never match.
  if (s.hasId && op == ExpectationOp::kGet) w.putBe32(CTA_EXPECT_ID, s.id);
  if (op == ExpectationOp::kCreate) {
    if (s.hasTimeout) w.putBe32(CTA_EXPECT_TIMEOUT, s.timeout);
    if (s.hasFlags) w.putBe32(CTA_EXPECT_FLAGS, s.flags);
    if (s.hasClass) w.putBe32(CTA_EXPECT_CLASS, s.klass);
    if (!s.fn.empty()) w.put(CTA_EXPECT_FN, s.fn.c_str(), s.fn.size() + 1);
    if (s.hasNat) {
      size_t nat = w.beginNest(CTA_EXPECT_NAT);
      w.putBe32(CTA_EXPECT_NAT_DIR, s.natDir);
      putTupleAttr(w, CTA_EXPECT_NAT_TUPLE, s.natTuple, s.family);
      w.endNest(nat);
    }
  }
  // A helper name creates with that helper, or (a delete without a tuple) flushes its expectations.
  if (!s.helper.empty() && (op == ExpectationOp::kCreate || (op == ExpectationOp::kDelete && !s.tuple.has)))
    w.put(CTA_EXPECT_HELP_NAME, s.helper.c_str(), s.helper.size() + 1);
  return finishMessage(w);
}

}  // namespace ct
