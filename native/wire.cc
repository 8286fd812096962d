#include "wire.h"

#include <errno.h>

#include <linux/netfilter/nfnetlink_conntrack.h>

namespace ct {
namespace {

// The extended-ack attributes at `skip` in a payload: the kernel's text goes into `err.detail`.
void readExtAckText(const uint8_t* payload, size_t payloadLen, size_t skip, SysError& err) {
  if (skip >= payloadLen) return;
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

// An NLMSG_ERROR that is not an acknowledgement: the errno, and the kernel's extended-ack text
// when it sent one.
SysError requestError(const nlmsghdr& h, const uint8_t* payload, size_t payloadLen, int errnum) {
  SysError err = SysError::fromErrno(errnum, "ctnetlink request");
  // Extended ack text follows the echoed request header (NETLINK_CAP_ACK: header only).
  if ((h.nlmsg_flags & NLM_F_ACK_TLVS) && payloadLen >= sizeof(nlmsgerr)) {
    nlmsgerr e;
    std::memcpy(&e, payload, sizeof e);
    size_t skip = sizeof(nlmsgerr);
    if (!(h.nlmsg_flags & NLM_F_CAPPED)) skip += NLMSG_ALIGN(e.msg.nlmsg_len) - NLMSG_HDRLEN;
    readExtAckText(payload, payloadLen, skip, err);
  }
  return err;
}

MessageKind kindOf(uint16_t type) {
  uint16_t subsys = NFNL_SUBSYS_ID(type);
  uint16_t msg = NFNL_MSG_TYPE(type);
  if (subsys == NFNL_SUBSYS_CTNETLINK) {
    // Kernels before 5.19 label dying and unconfirmed list answers with the request's type.
    if (msg == IPCTNL_MSG_CT_NEW || msg == IPCTNL_MSG_CT_GET || msg == IPCTNL_MSG_CT_DELETE ||
        msg == IPCTNL_MSG_CT_GET_CTRZERO || msg == IPCTNL_MSG_CT_GET_DYING || msg == IPCTNL_MSG_CT_GET_UNCONFIRMED)
      return MessageKind::kEntry;
    if (msg == IPCTNL_MSG_CT_GET_STATS) return MessageKind::kStatsGlobal;
    if (msg == IPCTNL_MSG_CT_GET_STATS_CPU) return MessageKind::kStatsCpu;
  } else if (subsys == NFNL_SUBSYS_CTNETLINK_EXP) {
    if (msg == IPCTNL_MSG_EXP_GET_STATS_CPU) return MessageKind::kExpStatsCpu;
    if (msg == IPCTNL_MSG_EXP_NEW || msg == IPCTNL_MSG_EXP_GET || msg == IPCTNL_MSG_EXP_DELETE)
      return MessageKind::kExpectation;
  }
  return MessageKind::kOther;
}

}  // namespace

bool walkDatagram(const uint8_t* data, size_t len, uint32_t expectSeq, MessageSink& sink, bool& done,
                  SysError& err) {
  return forEachMessage(data, len, err, [&](const nlmsghdr& h, const uint8_t* payload, size_t payloadLen) {
    bool ours = expectSeq == 0 || h.nlmsg_seq == expectSeq;
    if (!ours) return Next::kContinue;
    if (h.nlmsg_type == NLMSG_DONE) {
      done = true;
      if (payloadLen >= sizeof(int)) {
        int code;
        std::memcpy(&code, payload, sizeof code);
        int errnum = 0;
        if (kernelErrno(code, errnum)) {
          err = SysError::fromErrno(errnum, "ctnetlink dump");
          // A dump that fails midway says why after the code (netlink_dump_done(), with NETLINK_EXT_ACK).
          if (h.nlmsg_flags & NLM_F_ACK_TLVS) readExtAckText(payload, payloadLen, NLMSG_ALIGN(sizeof code), err);
          return Next::kFail;
        }
        if (code < 0) {
          err = SysError::malformed("NLMSG_DONE carries error code " + std::to_string(code));
          return Next::kFail;
        }
      }
      return Next::kStop;
    }
    if (h.nlmsg_type == NLMSG_ERROR) {
      if (payloadLen < sizeof(int)) {
        err = SysError::malformed("NLMSG_ERROR without an error code");
        return Next::kFail;
      }
      int code;
      std::memcpy(&code, payload, sizeof code);
      if (code == 0) {  // an acknowledgement
        done = true;
        return Next::kStop;
      }
      int errnum = 0;
      if (!kernelErrno(code, errnum)) {
        err = SysError::malformed("NLMSG_ERROR carries error code " + std::to_string(code));
        return Next::kFail;
      }
      err = requestError(h, payload, payloadLen, errnum);
      return Next::kFail;
    }
    if (h.nlmsg_type == NLMSG_OVERRUN) {
      err = SysError::fromErrno(ENOBUFS, "netlink overrun");
      return Next::kFail;
    }
    if (h.nlmsg_type < NLMSG_MIN_TYPE) return Next::kContinue;
    if (payloadLen < sizeof(nfgenmsg)) {
      err = SysError::malformed("message too short for its nfgenmsg header");
      return Next::kFail;
    }
    nfgenmsg gen;
    std::memcpy(&gen, payload, sizeof gen);
    MessageView view;
    view.kind = kindOf(h.nlmsg_type);
    view.type = h.nlmsg_type;
    view.flags = h.nlmsg_flags;
    view.family = gen.nfgen_family;
    view.resId = be16toh(gen.res_id);
    view.attrs = payload + NLMSG_ALIGN(sizeof(nfgenmsg));
    view.attrsLen = payloadLen - NLMSG_ALIGN(sizeof(nfgenmsg));
    return sink.onMessage(view, err) ? Next::kContinue : Next::kFail;
  });
}

void writeHeader(Writer& w, uint16_t type, uint16_t flags, uint32_t seq, uint8_t family, uint16_t resId,
                 uint8_t version) {
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

size_t finishMessage(Writer& w) {
  if (!w.ok()) return 0;
  uint32_t len = static_cast<uint32_t>(w.size());
  std::memcpy(w.at(0), &len, sizeof len);  // nlmsg_len is the header's first field
  return len;
}

}  // namespace ct
