#include "decode.h"

#include <linux/netfilter/nfnetlink.h>
#include <linux/netfilter/nfnetlink_conntrack.h>

#include <cstring>

#include "wire.h"

namespace ct {
namespace {

bool decodeTupleIp(const Attr& nest, Tuple& t, SysError& err) {
  return forEachAttr(nest.data, nest.len, "CTA_TUPLE_IP", err, [&](const Attr& a) {
    switch (a.type) {
      case CTA_IP_V4_SRC:
        if (!expectLen(a, 4, "CTA_IP_V4_SRC", err)) return false;
        t.family = AF_INET;
        std::memcpy(t.srcAddr, a.data, 4);
        t.has |= kTupleHasSrc;
        break;
      case CTA_IP_V4_DST:
        if (!expectLen(a, 4, "CTA_IP_V4_DST", err)) return false;
        t.family = AF_INET;
        std::memcpy(t.dstAddr, a.data, 4);
        t.has |= kTupleHasDst;
        break;
      case CTA_IP_V6_SRC:
        if (!expectLen(a, 16, "CTA_IP_V6_SRC", err)) return false;
        t.family = AF_INET6;
        std::memcpy(t.srcAddr, a.data, 16);
        t.has |= kTupleHasSrc;
        break;
      case CTA_IP_V6_DST:
        if (!expectLen(a, 16, "CTA_IP_V6_DST", err)) return false;
        t.family = AF_INET6;
        std::memcpy(t.dstAddr, a.data, 16);
        t.has |= kTupleHasDst;
        break;
      default:
        break;  // unknown: skip
    }
    return true;
  });
}

bool decodeTupleProto(const Attr& nest, Tuple& t, SysError& err) {
  return forEachAttr(nest.data, nest.len, "CTA_TUPLE_PROTO", err, [&](const Attr& a) {
    switch (a.type) {
      case CTA_PROTO_NUM:
        if (!expectLen(a, 1, "CTA_PROTO_NUM", err)) return false;
        t.proto = a.data[0];
        t.has |= kTupleHasProto;
        break;
      case CTA_PROTO_SRC_PORT:
        if (!expectLen(a, 2, "CTA_PROTO_SRC_PORT", err)) return false;
        t.sport = be16(a.data);
        t.has |= kTupleHasPorts;
        break;
      case CTA_PROTO_DST_PORT:
        if (!expectLen(a, 2, "CTA_PROTO_DST_PORT", err)) return false;
        t.dport = be16(a.data);
        t.has |= kTupleHasPorts;
        break;
      case CTA_PROTO_ICMP_ID:
      case CTA_PROTO_ICMPV6_ID:
        if (!expectLen(a, 2, "CTA_PROTO_ICMP_ID", err)) return false;
        t.icmpId = be16(a.data);
        t.has |= kTupleHasIcmp;
        break;
      case CTA_PROTO_ICMP_TYPE:
      case CTA_PROTO_ICMPV6_TYPE:
        if (!expectLen(a, 1, "CTA_PROTO_ICMP_TYPE", err)) return false;
        t.icmpType = a.data[0];
        t.has |= kTupleHasIcmp;
        break;
      case CTA_PROTO_ICMP_CODE:
      case CTA_PROTO_ICMPV6_CODE:
        if (!expectLen(a, 1, "CTA_PROTO_ICMP_CODE", err)) return false;
        t.icmpCode = a.data[0];
        t.has |= kTupleHasIcmp;
        break;
      default:
        break;
    }
    return true;
  });
}

bool decodeTuple(const Attr& nest, Tuple& t, SysError& err) {
  return forEachAttr(nest.data, nest.len, "tuple", err, [&](const Attr& a) {
    switch (a.type) {
      case CTA_TUPLE_IP:
        return decodeTupleIp(a, t, err);
      case CTA_TUPLE_PROTO:
        return decodeTupleProto(a, t, err);
      case CTA_TUPLE_ZONE:
        if (!expectLen(a, 2, "CTA_TUPLE_ZONE", err)) return false;
        t.zone = be16(a.data);
        t.has |= kTupleHasZone;
        return true;
      default:
        return true;
    }
  });
}

bool decodeProtoinfo(const Attr& nest, Entry& e, SysError& err) {
  return forEachAttr(nest.data, nest.len, "CTA_PROTOINFO", err, [&](const Attr& p) {
    switch (p.type) {
      case CTA_PROTOINFO_TCP:
        e.present |= kHasTcp;
        return forEachAttr(p.data, p.len, "CTA_PROTOINFO_TCP", err, [&](const Attr& a) {
          switch (a.type) {
            case CTA_PROTOINFO_TCP_STATE:
              if (!expectLen(a, 1, "CTA_PROTOINFO_TCP_STATE", err)) return false;
              e.tcpState = a.data[0];
              e.tcpHas |= kTcpHasState;
              break;
            case CTA_PROTOINFO_TCP_WSCALE_ORIGINAL:
              if (!expectLen(a, 1, "CTA_PROTOINFO_TCP_WSCALE_ORIGINAL", err)) return false;
              e.wscaleOrig = a.data[0];
              e.tcpHas |= kTcpHasWscaleOrig;
              break;
            case CTA_PROTOINFO_TCP_WSCALE_REPLY:
              if (!expectLen(a, 1, "CTA_PROTOINFO_TCP_WSCALE_REPLY", err)) return false;
              e.wscaleReply = a.data[0];
              e.tcpHas |= kTcpHasWscaleReply;
              break;
            case CTA_PROTOINFO_TCP_FLAGS_ORIGINAL:  // struct nf_ct_tcp_flags { flags, mask }
              if (!expectLen(a, 2, "CTA_PROTOINFO_TCP_FLAGS_ORIGINAL", err)) return false;
              e.flagsOrig = a.data[0];
              e.maskOrig = a.data[1];
              e.tcpHas |= kTcpHasFlagsOrig;
              break;
            case CTA_PROTOINFO_TCP_FLAGS_REPLY:
              if (!expectLen(a, 2, "CTA_PROTOINFO_TCP_FLAGS_REPLY", err)) return false;
              e.flagsReply = a.data[0];
              e.maskReply = a.data[1];
              e.tcpHas |= kTcpHasFlagsReply;
              break;
            default:
              break;
          }
          return true;
        });
      case CTA_PROTOINFO_SCTP:
        e.present |= kHasSctp;
        return forEachAttr(p.data, p.len, "CTA_PROTOINFO_SCTP", err, [&](const Attr& a) {
          switch (a.type) {
            case CTA_PROTOINFO_SCTP_STATE:
              if (!expectLen(a, 1, "CTA_PROTOINFO_SCTP_STATE", err)) return false;
              e.sctpState = a.data[0];
              e.sctpHas |= kSctpHasState;
              break;
            case CTA_PROTOINFO_SCTP_VTAG_ORIGINAL:
              if (!expectLen(a, 4, "CTA_PROTOINFO_SCTP_VTAG_ORIGINAL", err)) return false;
              e.vtagOrig = be32(a.data);
              e.sctpHas |= kSctpHasVtagOrig;
              break;
            case CTA_PROTOINFO_SCTP_VTAG_REPLY:
              if (!expectLen(a, 4, "CTA_PROTOINFO_SCTP_VTAG_REPLY", err)) return false;
              e.vtagReply = be32(a.data);
              e.sctpHas |= kSctpHasVtagReply;
              break;
            default:
              break;
          }
          return true;
        });
      case CTA_PROTOINFO_DCCP:
        e.present |= kHasDccp;
        return forEachAttr(p.data, p.len, "CTA_PROTOINFO_DCCP", err, [&](const Attr& a) {
          switch (a.type) {
            case CTA_PROTOINFO_DCCP_STATE:
              if (!expectLen(a, 1, "CTA_PROTOINFO_DCCP_STATE", err)) return false;
              e.dccpState = a.data[0];
              e.dccpHas |= kDccpHasState;
              break;
            case CTA_PROTOINFO_DCCP_ROLE:
              if (!expectLen(a, 1, "CTA_PROTOINFO_DCCP_ROLE", err)) return false;
              e.dccpRole = a.data[0];
              e.dccpHas |= kDccpHasRole;
              break;
            case CTA_PROTOINFO_DCCP_HANDSHAKE_SEQ:
              if (!expectLen(a, 8, "CTA_PROTOINFO_DCCP_HANDSHAKE_SEQ", err)) return false;
              e.dccpSeq = be64(a.data);
              e.dccpHas |= kDccpHasSeq;
              break;
            default:
              break;
          }
          return true;
        });
      default:
        return true;
    }
  });
}

bool decodeCountersNest(const Attr& nest, uint64_t& packets, uint64_t& bytes, SysError& err) {
  return forEachAttr(nest.data, nest.len, "counters", err, [&](const Attr& a) {
    switch (a.type) {
      case CTA_COUNTERS_PACKETS:
        if (!expectLen(a, 8, "CTA_COUNTERS_PACKETS", err)) return false;
        packets = be64(a.data);
        break;
      case CTA_COUNTERS_BYTES:
        if (!expectLen(a, 8, "CTA_COUNTERS_BYTES", err)) return false;
        bytes = be64(a.data);
        break;
      case CTA_COUNTERS32_PACKETS:  // kernels before 2.6.x sent 32-bit counters
        if (!expectLen(a, 4, "CTA_COUNTERS32_PACKETS", err)) return false;
        packets = be32(a.data);
        break;
      case CTA_COUNTERS32_BYTES:
        if (!expectLen(a, 4, "CTA_COUNTERS32_BYTES", err)) return false;
        bytes = be32(a.data);
        break;
      default:
        break;  // CTA_COUNTERS_PAD and unknown
    }
    return true;
  });
}

bool decodeSeqAdj(const Attr& nest, SeqAdj& s, SysError& err) {
  return forEachAttr(nest.data, nest.len, "CTA_SEQ_ADJ", err, [&](const Attr& a) {
    uint32_t* field = nullptr;
    switch (a.type) {
      case CTA_SEQADJ_CORRECTION_POS: field = &s.correctionPos; break;
      case CTA_SEQADJ_OFFSET_BEFORE: field = &s.offsetBefore; break;
      case CTA_SEQADJ_OFFSET_AFTER: field = &s.offsetAfter; break;
      default: return true;
    }
    if (!expectLen(a, 4, "CTA_SEQADJ_*", err)) return false;
    *field = be32(a.data);
    return true;
  });
}

}  // namespace

bool decodeEntry(const MessageView& m, Entry& e, SysError& err) {
  e.family = m.family;
  return forEachAttr(m.attrs, m.attrsLen, "conntrack message", err, [&](const Attr& a) {
    switch (a.type) {
      case CTA_TUPLE_ORIG:
        e.present |= kHasOrig;
        return decodeTuple(a, e.orig, err);
      case CTA_TUPLE_REPLY:
        e.present |= kHasReply;
        return decodeTuple(a, e.reply, err);
      case CTA_TUPLE_MASTER:
        e.present |= kHasMaster;
        return decodeTuple(a, e.master, err);
      case CTA_STATUS:
        if (!expectLen(a, 4, "CTA_STATUS", err)) return false;
        e.status = be32(a.data);
        e.present |= kHasStatus;
        return true;
      case CTA_PROTOINFO:
        return decodeProtoinfo(a, e, err);
      case CTA_HELP:
        return forEachAttr(a.data, a.len, "CTA_HELP", err, [&](const Attr& h) {
          if (h.type == CTA_HELP_NAME) {
            readString(h, e.helper, e.helperLen);
            e.present |= kHasHelper;
          }
          return true;
        });
      case CTA_TIMEOUT:
        if (!expectLen(a, 4, "CTA_TIMEOUT", err)) return false;
        e.timeout = be32(a.data);
        e.present |= kHasTimeout;
        return true;
      case CTA_MARK:
        if (!expectLen(a, 4, "CTA_MARK", err)) return false;
        e.mark = be32(a.data);
        e.present |= kHasMark;
        return true;
      case CTA_COUNTERS_ORIG:
        e.present |= kHasCountersOrig;
        return decodeCountersNest(a, e.packetsOrig, e.bytesOrig, err);
      case CTA_COUNTERS_REPLY:
        e.present |= kHasCountersReply;
        return decodeCountersNest(a, e.packetsReply, e.bytesReply, err);
      case CTA_USE:
        if (!expectLen(a, 4, "CTA_USE", err)) return false;
        e.use = be32(a.data);
        e.present |= kHasUse;
        return true;
      case CTA_ID:
        if (!expectLen(a, 4, "CTA_ID", err)) return false;
        e.id = be32(a.data);
        e.present |= kHasId;
        return true;
      case CTA_SEQ_ADJ_ORIG:
        e.present |= kHasSeqAdjOrig;
        return decodeSeqAdj(a, e.seqAdjOrig, err);
      case CTA_SEQ_ADJ_REPLY:
        e.present |= kHasSeqAdjReply;
        return decodeSeqAdj(a, e.seqAdjReply, err);
      case CTA_SECMARK:
        if (!expectLen(a, 4, "CTA_SECMARK", err)) return false;
        e.secmark = be32(a.data);
        e.present |= kHasSecmark;
        return true;
      case CTA_ZONE:
        if (!expectLen(a, 2, "CTA_ZONE", err)) return false;
        e.zone = be16(a.data);
        e.present |= kHasZone;
        return true;
      case CTA_SECCTX:
        return forEachAttr(a.data, a.len, "CTA_SECCTX", err, [&](const Attr& s) {
          if (s.type == CTA_SECCTX_NAME) {
            readString(s, e.secctx, e.secctxLen);
            e.present |= kHasSecctx;
          }
          return true;
        });
      case CTA_TIMESTAMP:
        return forEachAttr(a.data, a.len, "CTA_TIMESTAMP", err, [&](const Attr& t) {
          if (t.type == CTA_TIMESTAMP_START) {
            if (!expectLen(t, 8, "CTA_TIMESTAMP_START", err)) return false;
            e.tsStart = be64(t.data);
            e.present |= kHasTimestampStart;
          } else if (t.type == CTA_TIMESTAMP_STOP) {
            if (!expectLen(t, 8, "CTA_TIMESTAMP_STOP", err)) return false;
            e.tsStop = be64(t.data);
            e.present |= kHasTimestampStop;
          }
          return true;
        });
      case CTA_LABELS: {
        // The kernel sends its bitmap of unsigned longs in host order.
        if (a.len == 0 || a.len > 16 || a.len % sizeof(unsigned long) != 0) {
          err = SysError::malformed("CTA_LABELS has " + std::to_string(a.len) + " bytes");
          return false;
        }
        unsigned long words[16 / sizeof(unsigned long)] = {};
        std::memcpy(words, a.data, a.len);
        constexpr size_t kWordBits = sizeof(unsigned long) * 8;
        for (size_t bit = 0; bit < a.len * 8; ++bit)
          if (words[bit / kWordBits] & (1UL << (bit % kWordBits))) e.labels[bit / 32] |= 1u << (bit % 32);
        e.present |= kHasLabels;
        return true;
      }
      case CTA_SYNPROXY:
        e.present |= kHasSynproxy;
        return forEachAttr(a.data, a.len, "CTA_SYNPROXY", err, [&](const Attr& s) {
          uint32_t* field = nullptr;
          switch (s.type) {
            case CTA_SYNPROXY_ISN: field = &e.synIsn; break;
            case CTA_SYNPROXY_ITS: field = &e.synIts; break;
            case CTA_SYNPROXY_TSOFF: field = &e.synTsoff; break;
            default: return true;
          }
          if (!expectLen(s, 4, "CTA_SYNPROXY_*", err)) return false;
          *field = be32(s.data);
          return true;
        });
      default:
        return true;  // unknown or not for dumps (CTA_NAT_*): skip
    }
  });
}

bool decodeCounters(const MessageView& m, std::vector<uint32_t>& pairs, SysError& err) {
  return forEachAttr(m.attrs, m.attrsLen, "stats message", err, [&](const Attr& a) {
    if (a.len == 4) {
      pairs.push_back(a.type);
      pairs.push_back(be32(a.data));
    }
    return true;  // other sizes: not a counter we can read; skip like any unknown
  });
}

EventType eventTypeOf(const MessageView& m) {
  if (NFNL_MSG_TYPE(m.type) == IPCTNL_MSG_CT_DELETE) return kEventDestroy;
  if (m.flags & (NLM_F_CREATE | NLM_F_EXCL)) return kEventNew;
  return kEventUpdate;
}

bool decodeTupleAttr(const Attr& nest, Tuple& tuple, SysError& err) { return decodeTuple(nest, tuple, err); }

}  // namespace ct
