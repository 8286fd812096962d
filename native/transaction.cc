#include "transaction.h"

#include <linux/netfilter/nfnetlink.h>
#include <linux/netfilter/nfnetlink_conntrack.h>
#include <linux/netlink.h>

#include <cstring>

#include "decode.h"
#include "expectation.h"
#include "requests.h"

namespace ct {

bool Transaction::begin(NetlinkSocket& socket, SysError& err) {
  uint8_t request[64];
  complete_ = false;
  pairs_.clear();
  rows_.clear();
  seq_ = socket.nextSeq();
  if (kind_ == Kind::kEntry) {
    batch_.clear();
    if (request_.size() < NLMSG_HDRLEN) {
      err = SysError::fromErrno(EINVAL, "build request");
      return false;
    }
    std::memcpy(request_.data() + offsetof(nlmsghdr, nlmsg_seq), &seq_, sizeof seq_);
    return socket.send(request_.data(), request_.size(), err);
  }
  size_t len = 0;
  switch (kind_) {
    case Kind::kGlobalStats:  // answered with one message, no NLMSG_DONE
      len = buildRequest(request, sizeof request,
                         static_cast<uint16_t>((NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_GET_STATS),
                         NLM_F_REQUEST, seq_, 0);
      break;
    case Kind::kCpuStats:  // only answered as a dump
      len = buildRequest(request, sizeof request,
                         static_cast<uint16_t>((NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_GET_STATS_CPU),
                         NLM_F_REQUEST | NLM_F_DUMP, seq_, 0);
      break;
    case Kind::kEntry:
      break;
    case Kind::kExpectationCpuStats:
      len = buildRequest(request, sizeof request,
                         static_cast<uint16_t>((NFNL_SUBSYS_CTNETLINK_EXP << 8) | IPCTNL_MSG_EXP_GET_STATS_CPU),
                         NLM_F_REQUEST | NLM_F_DUMP, seq_, 0);
      break;
  }
  return socket.send(request, len, err);
}

int Transaction::pump(NetlinkSocket& socket, std::vector<uint8_t>& buffer, SysError& err) {
  if (buffer.size() < kReceiveBufferSize) buffer.resize(kReceiveBufferSize);
  while (!complete_) {
    long n = socket.receive(buffer.data(), buffer.size(), err, true);
    if (n < 0) return -1;
    if (n == 0) return 0;
    bool done = false;
    if (!walkDatagram(buffer.data(), static_cast<size_t>(n), seq_, *this, done, err)) return -1;
    if (done) complete_ = true;
  }
  return 1;
}

bool Transaction::onMessage(const MessageView& message, SysError& err) {
  switch (message.kind) {
    case MessageKind::kStatsGlobal:
      if (kind_ != Kind::kGlobalStats) return true;
      complete_ = true;
      return decodeCounters(message, pairs_, err);
    case MessageKind::kEntry:
      if (kind_ == Kind::kEntry) {
        Entry e;
        if (!decodeEntry(message, e, err)) return false;
        appendRecord(batch_, e);
        return true;
      }
      // The kernel labels expectation stats NFNL_SUBSYS_CTNETLINK message 3, the number of
      // IPCTNL_MSG_CT_GET_CTRZERO (ctnetlink_exp_stat_fill_info, every version since 3.7).
      if (kind_ != Kind::kExpectationCpuStats) return true;
      rows_.push_back(CpuRow{message.resId, {}});
      return decodeCounters(message, rows_.back().pairs, err);
    case MessageKind::kExpectation: {
      // An expectation request's answer: one expectation, or (a dump) all of them, into batch().
      if (kind_ != Kind::kEntry) return true;
      Expectation e;
      if (!decodeExpectation(message, e, err)) return false;
      appendExpectationRecord(batch_, e);
      return true;
    }
    case MessageKind::kStatsCpu:
    case MessageKind::kExpStatsCpu: {
      bool wanted = (message.kind == MessageKind::kStatsCpu) == (kind_ == Kind::kCpuStats);
      if (kind_ == Kind::kGlobalStats || !wanted) return true;
      rows_.push_back(CpuRow{message.resId, {}});
      return decodeCounters(message, rows_.back().pairs, err);
    }
    default:
      return true;
  }
}

}  // namespace ct
