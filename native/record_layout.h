// The record layout handed to JS, defined once: one entry is slot::kCount little-endian u32 slots
// (records.cc writes them); an expectation is a record of the same size (expect_slot), and the
// entries JS hands over for bulk changes are spec records (spec_slot). Every slot, sub-offset,
// bit, shift and enum value that lib/table/records.ts, summary.ts, expectations.ts and
// entry-spec.ts use is listed in kLayoutConstants, which the binding exports as `layout`
// ({ group: { name: value } }); the TypeScript reads its numbers from there, so renumbering one
// here cannot make JS misread a record.
#pragma once

#include <linux/netfilter/nf_conntrack_common.h>

#include <cstddef>
#include <cstdint>

namespace ct {

// ---- slots ------------------------------------------------------------------------------------
namespace slot {
enum : uint32_t {
  kPresent = 0,  // Present bits
  kFamily = 1,
  kId = 2,
  kStatus = 3,
  kTimeout = 4,
  kMark = 5,
  kUse = 6,
  kZone = 7,
  kSecmark = 8,
  kOrig = 9,     // tuple block, kTupleSlots each
  kReply = 15,
  kMaster = 21,
  kCounters = 27,   // four u64 (counter::*)
  kTimestamp = 35,  // two u64 (timestamp::*)
  kTcp = 39,        // tcp_word::*
  kTcpFlags = 40,   // tcp_flags_word::*
  kSctp = 41,       // sctp_word::*
  kSctpVtagOrig = 42,
  kSctpVtagReply = 43,
  kDccp = 44,       // dccp_word::*
  kDccpSeq = 45,    // u64
  kHelper = 47,     // string ref
  kSecctxOff = 48,  // offset into the batch text (secctx has no length limit of a string ref)
  kSecctxLen = 49,
  kLabels = 50,       // kLabelWords slots: label bits 0..127
  kSeqAdjOrig = 54,   // seq_adj::*
  kSeqAdjReply = 57,
  kSynproxy = 60,     // synproxy::*
  kEvent = 63,        // EventType of an event message; kEventNone in dumps
  kCount = 64,
};
// Within a tuple block.
enum : uint32_t {
  kTupleProto = 0,  // tuple_word::*: protocol number, TupleHas bits
  kTuplePorts = 1,  // tuple_word::*: sport, dport
  kTupleIcmp = 2,   // tuple_word::*: type, code, id
  kTupleZone = 3,
  kTupleSrc = 4,    // string ref
  kTupleDst = 5,    // string ref
  kTupleSlots = 6,
};
}  // namespace slot

constexpr uint32_t kLabelWords = 4;

// A u64 takes two slots, low half first.
namespace u64_half {
enum : uint32_t { kLow = 0, kHigh = 1 };
}

// Within slot::kCounters, each a u64.
namespace counter {
enum : uint32_t { kPacketsOrig = 0, kBytesOrig = 2, kPacketsReply = 4, kBytesReply = 6 };
}
// Within slot::kTimestamp, each a u64 (ns).
namespace timestamp {
enum : uint32_t { kStart = 0, kStop = 2 };
}
// Within slot::kSeqAdjOrig and slot::kSeqAdjReply.
namespace seq_adj {
enum : uint32_t { kCorrectionPos = 0, kOffsetBefore = 1, kOffsetAfter = 2 };
}
// Within slot::kSynproxy.
namespace synproxy {
enum : uint32_t { kIsn = 0, kIts = 1, kTsoff = 2 };
}

// ---- packed words: where each field starts (bit shift) ---------------------------------------------
namespace tuple_word {
enum : uint32_t {
  kProto = 0, kHas = 8,           // slot::kTupleProto: u8 protocol, TupleHas bits
  kSport = 0, kDport = 16,        // slot::kTuplePorts: u16 each
  kIcmpType = 0, kIcmpCode = 8, kIcmpId = 16,  // slot::kTupleIcmp: u8, u8, u16
};
}
namespace tcp_word {
enum : uint32_t { kState = 0, kWscaleOrig = 8, kWscaleReply = 16, kHas = 24 };  // u8 each; TcpHas bits
}
namespace tcp_flags_word {
enum : uint32_t { kFlagsOrig = 0, kMaskOrig = 8, kFlagsReply = 16, kMaskReply = 24 };  // u8 each
}
namespace sctp_word {
enum : uint32_t { kState = 0, kHas = 8 };  // u8 state; SctpHas bits
}
namespace dccp_word {
enum : uint32_t { kState = 0, kRole = 8, kHas = 16 };  // u8 each; DccpHas bits
}

// A string ref packs an offset into the batch text (low 24 bits) and a length (high 8 bits).
namespace string_ref {
constexpr uint32_t kLengthShift = 24;
constexpr uint32_t kOffsetMask = (1u << kLengthShift) - 1;
constexpr size_t kMaxLength = 255;
}

// ---- bits -------------------------------------------------------------------------------------
// slot::kPresent: which of the entry's parts the kernel sent.
enum Present : uint32_t {
  kHasId = 1u << 0,
  kHasStatus = 1u << 1,
  kHasTimeout = 1u << 2,
  kHasMark = 1u << 3,
  kHasUse = 1u << 4,
  kHasZone = 1u << 5,
  kHasSecmark = 1u << 6,
  kHasOrig = 1u << 7,
  kHasReply = 1u << 8,
  kHasMaster = 1u << 9,
  kHasCountersOrig = 1u << 10,
  kHasCountersReply = 1u << 11,
  kHasTimestampStart = 1u << 12,
  kHasTimestampStop = 1u << 13,
  kHasTcp = 1u << 14,
  kHasSctp = 1u << 15,
  kHasDccp = 1u << 16,
  kHasHelper = 1u << 17,
  kHasSecctx = 1u << 18,
  kHasLabels = 1u << 19,
  kHasSeqAdjOrig = 1u << 20,
  kHasSeqAdjReply = 1u << 21,
  kHasSynproxy = 1u << 22,
};

enum TupleHas : uint32_t {
  kTupleHasProto = 1u << 0,
  kTupleHasPorts = 1u << 1,
  kTupleHasIcmp = 1u << 2,
  kTupleHasZone = 1u << 3,
  kTupleHasSrc = 1u << 4,
  kTupleHasDst = 1u << 5,
};

enum TcpHas : uint32_t {
  kTcpHasState = 1u << 0,
  kTcpHasWscaleOrig = 1u << 1,
  kTcpHasWscaleReply = 1u << 2,
  kTcpHasFlagsOrig = 1u << 3,
  kTcpHasFlagsReply = 1u << 4,
};

enum SctpHas : uint32_t { kSctpHasState = 1, kSctpHasVtagOrig = 2, kSctpHasVtagReply = 4 };
enum DccpHas : uint32_t { kDccpHasState = 1, kDccpHasRole = 2, kDccpHasSeq = 4 };

// slot::kStatus carries the kernel's IPS_* word; group records (summary.*) set only these bits.
namespace status {
enum : uint32_t {
  kSeenReply = IPS_SEEN_REPLY,
  kAssured = IPS_ASSURED,
  kNat = IPS_SRC_NAT | IPS_DST_NAT,
};
}

// ---- enums ------------------------------------------------------------------------------------
// What an event message reports (ctnetlink_conntrack_event(): DELETE is a destroy, NEW with
// NLM_F_CREATE | NLM_F_EXCL a new entry, NEW without them an update).
enum EventType : uint8_t { kEventNone = 0, kEventNew = 1, kEventUpdate = 2, kEventDestroy = 3 };

// Group-by keys of a summary (summary.*); JS names them by their `summaryKey` constants.
enum class SummaryKey : uint8_t {
  kFamily, kProtocol, kTcpState, kSrc, kDst, kSport, kDport, kReplySrc, kReplyDst, kMark, kZone, kAssured,
  kNat, kSeenReply,
};
constexpr uint8_t kSummaryKeyCount = 14;
static_assert(static_cast<uint8_t>(SummaryKey::kSeenReply) + 1 == kSummaryKeyCount, "kSummaryKeyCount");

// ---- expectation records ------------------------------------------------------------------------
// An expectation (expectation.*) is a record of slot::kCount slots too, so batches of either kind
// are handled alike; its slots are these. Tuple blocks have the entry's tuple layout (slot::kTuple*).
namespace expect_slot {
enum : uint32_t {
  kPresent = 0,  // ExpectPresent bits
  kFamily = 1,
  kId = 2,
  kTimeout = 3,
  kFlags = 4,    // NF_CT_EXPECT_* bits
  kClass = 5,
  kZone = 6,
  kNatDir = 7,   // 0 original, 1 reply
  kTuple = 8,    // the expected connection's tuple
  kMask = 14,    // which parts of kTuple must match (addresses and ports as the kernel masks them)
  kMaster = 20,  // the master connection's original tuple
  kNatTuple = 26,
  kHelper = 32,  // string ref
  kFn = 33,      // string ref: the expectation function's name
  kEvent = 34,   // EventType of an event message; kEventNone in dumps
  kUsed = 35,
};
}
static_assert(static_cast<uint32_t>(expect_slot::kUsed) <= static_cast<uint32_t>(slot::kCount), "an expectation record fits an entry record's size");

enum ExpectPresent : uint32_t {
  kExpectHasTuple = 1u << 0,
  kExpectHasMask = 1u << 1,
  kExpectHasMaster = 1u << 2,
  kExpectHasTimeout = 1u << 3,
  kExpectHasId = 1u << 4,
  kExpectHasHelper = 1u << 5,
  kExpectHasZone = 1u << 6,
  kExpectHasFlags = 1u << 7,
  kExpectHasClass = 1u << 8,
  kExpectHasNat = 1u << 9,
  kExpectHasFn = 1u << 10,
};

// ---- spec records: what JS sends for bulk changes -----------------------------------------------
// createMany() and updateMany() hand native code their validated entries as fixed-size records of
// spec_slot::kCount u32 slots (entry_specs.* reads them into an EntrySpec), not as objects.
// Addresses are network-order bytes in four slots (the bytes in memory order, whatever the host's).
namespace spec_slot {
enum : uint32_t {
  kFields = 0,     // SpecField bits: which parts are given
  kFamily = 1,
  kOrig = 2,       // spec tuple block, kTupleSlots each
  kReply = 14,
  kId = 26,
  kMark = 27,
  kTimeout = 28,
  kStatus = 29,
  kTcpState = 30,
  kZone = 31,
  kLabels = 32,      // kLabelWords slots
  kLabelsMask = 36,  // kLabelWords slots
  kNatSrc = 40,      // spec NAT block, kNatSlots each
  kNatDst = 50,
  kCount = 60,
  // Within a spec tuple block.
  kTupleHas = 0,    // TupleHas bits (src, dst, proto, ports, icmp, zone)
  kTupleProto = 1,  // tuple_word layout: u8 protocol (kHas unused here)
  kTuplePorts = 2,  // tuple_word layout: sport, dport
  kTupleIcmp = 3,   // tuple_word layout: type, code, id
  kTupleSrc = 4,    // 4 slots of address bytes
  kTupleDst = 8,    // 4 slots of address bytes
  kTupleSlots = 12,
  // Within a spec NAT block: an address range and a port range.
  kNatMin = 0,      // 4 slots of address bytes
  kNatMax = 4,      // 4 slots of address bytes
  kNatPorts = 8,    // min port (low 16 bits), max port (high 16 bits)
  kNatHasPorts = 9, // 1 when a port range is given
  kNatSlots = 10,
};
}
static_assert(spec_slot::kNatDst + spec_slot::kNatSlots == spec_slot::kCount, "spec slots add up");

enum SpecField : uint32_t {
  kSpecHasOrig = 1u << 0,
  kSpecHasReply = 1u << 1,
  kSpecHasId = 1u << 2,
  kSpecHasMark = 1u << 3,
  kSpecHasTimeout = 1u << 4,
  kSpecHasStatus = 1u << 5,
  kSpecHasTcpState = 1u << 6,
  kSpecHasZone = 1u << 7,
  kSpecHasLabels = 1u << 8,
  kSpecHasLabelsMask = 1u << 9,
  kSpecHasNatSrc = 1u << 10,
  kSpecHasNatDst = 1u << 11,
};

// ---- what JS reads ----------------------------------------------------------------------------
struct LayoutConstant {
  const char* group;
  const char* name;
  uint32_t value;
};

inline constexpr LayoutConstant kLayoutConstants[] = {
    {"record", "slots", slot::kCount},
    {"record", "labelWords", kLabelWords},

    {"slot", "present", slot::kPresent},
    {"slot", "family", slot::kFamily},
    {"slot", "id", slot::kId},
    {"slot", "status", slot::kStatus},
    {"slot", "timeout", slot::kTimeout},
    {"slot", "mark", slot::kMark},
    {"slot", "use", slot::kUse},
    {"slot", "zone", slot::kZone},
    {"slot", "secmark", slot::kSecmark},
    {"slot", "orig", slot::kOrig},
    {"slot", "reply", slot::kReply},
    {"slot", "master", slot::kMaster},
    {"slot", "counters", slot::kCounters},
    {"slot", "timestamp", slot::kTimestamp},
    {"slot", "tcp", slot::kTcp},
    {"slot", "tcpFlags", slot::kTcpFlags},
    {"slot", "sctp", slot::kSctp},
    {"slot", "sctpVtagOrig", slot::kSctpVtagOrig},
    {"slot", "sctpVtagReply", slot::kSctpVtagReply},
    {"slot", "dccp", slot::kDccp},
    {"slot", "dccpSeq", slot::kDccpSeq},
    {"slot", "helper", slot::kHelper},
    {"slot", "secctxOff", slot::kSecctxOff},
    {"slot", "secctxLen", slot::kSecctxLen},
    {"slot", "labels", slot::kLabels},
    {"slot", "seqAdjOrig", slot::kSeqAdjOrig},
    {"slot", "seqAdjReply", slot::kSeqAdjReply},
    {"slot", "synproxy", slot::kSynproxy},
    {"slot", "event", slot::kEvent},

    {"tuple", "slots", slot::kTupleSlots},
    {"tuple", "proto", slot::kTupleProto},
    {"tuple", "ports", slot::kTuplePorts},
    {"tuple", "icmp", slot::kTupleIcmp},
    {"tuple", "zone", slot::kTupleZone},
    {"tuple", "src", slot::kTupleSrc},
    {"tuple", "dst", slot::kTupleDst},

    {"u64", "low", u64_half::kLow},
    {"u64", "high", u64_half::kHigh},
    {"counter", "packetsOrig", counter::kPacketsOrig},
    {"counter", "bytesOrig", counter::kBytesOrig},
    {"counter", "packetsReply", counter::kPacketsReply},
    {"counter", "bytesReply", counter::kBytesReply},
    {"timestamp", "start", timestamp::kStart},
    {"timestamp", "stop", timestamp::kStop},
    {"seqAdj", "correctionPos", seq_adj::kCorrectionPos},
    {"seqAdj", "offsetBefore", seq_adj::kOffsetBefore},
    {"seqAdj", "offsetAfter", seq_adj::kOffsetAfter},
    {"synproxy", "isn", synproxy::kIsn},
    {"synproxy", "its", synproxy::kIts},
    {"synproxy", "tsoff", synproxy::kTsoff},

    {"tupleWord", "proto", tuple_word::kProto},
    {"tupleWord", "has", tuple_word::kHas},
    {"tupleWord", "sport", tuple_word::kSport},
    {"tupleWord", "dport", tuple_word::kDport},
    {"tupleWord", "icmpType", tuple_word::kIcmpType},
    {"tupleWord", "icmpCode", tuple_word::kIcmpCode},
    {"tupleWord", "icmpId", tuple_word::kIcmpId},
    {"tcpWord", "state", tcp_word::kState},
    {"tcpWord", "wscaleOrig", tcp_word::kWscaleOrig},
    {"tcpWord", "wscaleReply", tcp_word::kWscaleReply},
    {"tcpWord", "has", tcp_word::kHas},
    {"tcpFlagsWord", "flagsOrig", tcp_flags_word::kFlagsOrig},
    {"tcpFlagsWord", "maskOrig", tcp_flags_word::kMaskOrig},
    {"tcpFlagsWord", "flagsReply", tcp_flags_word::kFlagsReply},
    {"tcpFlagsWord", "maskReply", tcp_flags_word::kMaskReply},
    {"sctpWord", "state", sctp_word::kState},
    {"sctpWord", "has", sctp_word::kHas},
    {"dccpWord", "state", dccp_word::kState},
    {"dccpWord", "role", dccp_word::kRole},
    {"dccpWord", "has", dccp_word::kHas},
    {"stringRef", "lengthShift", string_ref::kLengthShift},
    {"stringRef", "offsetMask", string_ref::kOffsetMask},

    {"present", "id", kHasId},
    {"present", "status", kHasStatus},
    {"present", "timeout", kHasTimeout},
    {"present", "mark", kHasMark},
    {"present", "use", kHasUse},
    {"present", "zone", kHasZone},
    {"present", "secmark", kHasSecmark},
    {"present", "orig", kHasOrig},
    {"present", "reply", kHasReply},
    {"present", "master", kHasMaster},
    {"present", "countersOrig", kHasCountersOrig},
    {"present", "countersReply", kHasCountersReply},
    {"present", "timestampStart", kHasTimestampStart},
    {"present", "timestampStop", kHasTimestampStop},
    {"present", "tcp", kHasTcp},
    {"present", "sctp", kHasSctp},
    {"present", "dccp", kHasDccp},
    {"present", "helper", kHasHelper},
    {"present", "secctx", kHasSecctx},
    {"present", "labels", kHasLabels},
    {"present", "seqAdjOrig", kHasSeqAdjOrig},
    {"present", "seqAdjReply", kHasSeqAdjReply},
    {"present", "synproxy", kHasSynproxy},
    {"tupleHas", "proto", kTupleHasProto},
    {"tupleHas", "ports", kTupleHasPorts},
    {"tupleHas", "icmp", kTupleHasIcmp},
    {"tupleHas", "zone", kTupleHasZone},
    {"tupleHas", "src", kTupleHasSrc},
    {"tupleHas", "dst", kTupleHasDst},
    {"tcpHas", "state", kTcpHasState},
    {"tcpHas", "wscaleOrig", kTcpHasWscaleOrig},
    {"tcpHas", "wscaleReply", kTcpHasWscaleReply},
    {"tcpHas", "flagsOrig", kTcpHasFlagsOrig},
    {"tcpHas", "flagsReply", kTcpHasFlagsReply},
    {"sctpHas", "state", kSctpHasState},
    {"sctpHas", "vtagOrig", kSctpHasVtagOrig},
    {"sctpHas", "vtagReply", kSctpHasVtagReply},
    {"dccpHas", "state", kDccpHasState},
    {"dccpHas", "role", kDccpHasRole},
    {"dccpHas", "seq", kDccpHasSeq},
    {"status", "seenReply", status::kSeenReply},
    {"status", "assured", status::kAssured},
    {"status", "nat", status::kNat},

    {"event", "none", kEventNone},
    {"event", "new", kEventNew},
    {"event", "update", kEventUpdate},
    {"event", "destroy", kEventDestroy},
    {"summaryKey", "family", static_cast<uint32_t>(SummaryKey::kFamily)},
    {"summaryKey", "protocol", static_cast<uint32_t>(SummaryKey::kProtocol)},
    {"summaryKey", "tcpState", static_cast<uint32_t>(SummaryKey::kTcpState)},
    {"summaryKey", "src", static_cast<uint32_t>(SummaryKey::kSrc)},
    {"summaryKey", "dst", static_cast<uint32_t>(SummaryKey::kDst)},
    {"summaryKey", "sport", static_cast<uint32_t>(SummaryKey::kSport)},
    {"summaryKey", "dport", static_cast<uint32_t>(SummaryKey::kDport)},
    {"summaryKey", "replySrc", static_cast<uint32_t>(SummaryKey::kReplySrc)},
    {"summaryKey", "replyDst", static_cast<uint32_t>(SummaryKey::kReplyDst)},
    {"summaryKey", "mark", static_cast<uint32_t>(SummaryKey::kMark)},
    {"summaryKey", "zone", static_cast<uint32_t>(SummaryKey::kZone)},
    {"summaryKey", "assured", static_cast<uint32_t>(SummaryKey::kAssured)},
    {"summaryKey", "nat", static_cast<uint32_t>(SummaryKey::kNat)},
    {"summaryKey", "seenReply", static_cast<uint32_t>(SummaryKey::kSeenReply)},

    {"expectSlot", "present", expect_slot::kPresent},
    {"expectSlot", "family", expect_slot::kFamily},
    {"expectSlot", "id", expect_slot::kId},
    {"expectSlot", "timeout", expect_slot::kTimeout},
    {"expectSlot", "flags", expect_slot::kFlags},
    {"expectSlot", "class", expect_slot::kClass},
    {"expectSlot", "zone", expect_slot::kZone},
    {"expectSlot", "natDir", expect_slot::kNatDir},
    {"expectSlot", "tuple", expect_slot::kTuple},
    {"expectSlot", "mask", expect_slot::kMask},
    {"expectSlot", "master", expect_slot::kMaster},
    {"expectSlot", "natTuple", expect_slot::kNatTuple},
    {"expectSlot", "helper", expect_slot::kHelper},
    {"expectSlot", "fn", expect_slot::kFn},
    {"expectSlot", "event", expect_slot::kEvent},
    {"expectPresent", "tuple", kExpectHasTuple},
    {"expectPresent", "mask", kExpectHasMask},
    {"expectPresent", "master", kExpectHasMaster},
    {"expectPresent", "timeout", kExpectHasTimeout},
    {"expectPresent", "id", kExpectHasId},
    {"expectPresent", "helper", kExpectHasHelper},
    {"expectPresent", "zone", kExpectHasZone},
    {"expectPresent", "flags", kExpectHasFlags},
    {"expectPresent", "class", kExpectHasClass},
    {"expectPresent", "nat", kExpectHasNat},
    {"expectPresent", "fn", kExpectHasFn},

    {"specSlot", "count", spec_slot::kCount},
    {"specSlot", "fields", spec_slot::kFields},
    {"specSlot", "family", spec_slot::kFamily},
    {"specSlot", "orig", spec_slot::kOrig},
    {"specSlot", "reply", spec_slot::kReply},
    {"specSlot", "id", spec_slot::kId},
    {"specSlot", "mark", spec_slot::kMark},
    {"specSlot", "timeout", spec_slot::kTimeout},
    {"specSlot", "status", spec_slot::kStatus},
    {"specSlot", "tcpState", spec_slot::kTcpState},
    {"specSlot", "zone", spec_slot::kZone},
    {"specSlot", "labels", spec_slot::kLabels},
    {"specSlot", "labelsMask", spec_slot::kLabelsMask},
    {"specSlot", "natSrc", spec_slot::kNatSrc},
    {"specSlot", "natDst", spec_slot::kNatDst},
    {"specTuple", "has", spec_slot::kTupleHas},
    {"specTuple", "proto", spec_slot::kTupleProto},
    {"specTuple", "ports", spec_slot::kTuplePorts},
    {"specTuple", "icmp", spec_slot::kTupleIcmp},
    {"specTuple", "src", spec_slot::kTupleSrc},
    {"specTuple", "dst", spec_slot::kTupleDst},
    {"specNat", "min", spec_slot::kNatMin},
    {"specNat", "max", spec_slot::kNatMax},
    {"specNat", "ports", spec_slot::kNatPorts},
    {"specNat", "hasPorts", spec_slot::kNatHasPorts},
    {"specField", "orig", kSpecHasOrig},
    {"specField", "reply", kSpecHasReply},
    {"specField", "id", kSpecHasId},
    {"specField", "mark", kSpecHasMark},
    {"specField", "timeout", kSpecHasTimeout},
    {"specField", "status", kSpecHasStatus},
    {"specField", "tcpState", kSpecHasTcpState},
    {"specField", "zone", kSpecHasZone},
    {"specField", "labels", kSpecHasLabels},
    {"specField", "labelsMask", kSpecHasLabelsMask},
    {"specField", "natSrc", kSpecHasNatSrc},
    {"specField", "natDst", kSpecHasNatDst},
};

}  // namespace ct
