// ctnetlink codec: builds requests and decodes the kernel's answers. No Node headers, no I/O,
// so it builds alone for unit tests, sanitizers and fuzzing. One decoder serves dumps,
// single answers and (later) events.
#pragma once

#include <cstddef>
#include <atomic>
#include <cstdint>
#include <functional>
#include <string>
#include <unordered_map>
#include <vector>

#include "sys_error.h"

namespace ct {

// ---------------------------------------------------------------------------------------
// Record layout handed to JS: one entry = kSlots little u32 slots. lib/table/records.ts mirrors it
// (a unit test compares the two through the binding's `layout`).
namespace slot {
enum : uint32_t {
  kPresent = 0,  // Present* bits
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
  kCounters = 27,  // orig packets lo/hi, orig bytes lo/hi, reply packets lo/hi, reply bytes lo/hi
  kTimestamp = 35, // start lo/hi, stop lo/hi
  kTcp = 39,       // state | wscale orig << 8 | wscale reply << 16 | TcpHas bits << 24
  kTcpFlags = 40,  // flags orig | mask orig << 8 | flags reply << 16 | mask reply << 24
  kSctp = 41,      // state | SctpHas bits << 8
  kSctpVtagOrig = 42,
  kSctpVtagReply = 43,
  kDccp = 44,      // state | role << 8 | DccpHas bits << 16
  kDccpSeqLo = 45,
  kDccpSeqHi = 46,
  kHelper = 47,    // string ref
  kSecctxOff = 48,
  kSecctxLen = 49,
  kLabels = 50,    // 4 slots: label bits 0..127
  kSeqAdjOrig = 54,   // correction pos, offset before, offset after
  kSeqAdjReply = 57,
  kSynproxy = 60,     // isn, its, tsoff
  kEvent = 63,        // EventType of an event message; kEventNone in dumps
  kCount = 64,
};
// Within a tuple block.
enum : uint32_t {
  kTupleProto = 0,  // protocol number | TupleHas bits << 8
  kTuplePorts = 1,  // sport | dport << 16
  kTupleIcmp = 2,   // type | code << 8 | id << 16
  kTupleZone = 3,
  kTupleSrc = 4,    // string ref
  kTupleDst = 5,    // string ref
  kTupleSlots = 6,
};
}  // namespace slot

// A string ref packs an offset into the batch text (low 24 bits) and a length (high 8 bits).
constexpr uint32_t kStringRefMaxLen = 255;
constexpr uint32_t kStringRefMaxOffset = (1u << 24) - 1;

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

// What an event message reports (ctnetlink_conntrack_event(): DELETE is a destroy, NEW with
// NLM_F_CREATE | NLM_F_EXCL a new entry, NEW without them an update).
enum EventType : uint8_t { kEventNone = 0, kEventNew = 1, kEventUpdate = 2, kEventDestroy = 3 };

enum SctpHas : uint32_t { kSctpHasState = 1, kSctpHasVtagOrig = 2, kSctpHasVtagReply = 4 };
enum DccpHas : uint32_t { kDccpHasState = 1, kDccpHasRole = 2, kDccpHasSeq = 4 };

// ---------------------------------------------------------------------------------------
// Decoded entry, native form. Addresses stay binary until the record is written.
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
  uint32_t present = 0;
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
  uint32_t labels[4] = {};
  SeqAdj seqAdjOrig, seqAdjReply;
  uint32_t synIsn = 0, synIts = 0, synTsoff = 0;
  uint8_t event = kEventNone;
};

// ---------------------------------------------------------------------------------------
// Filter, matched natively on every entry (the kernel's own filtering is only a shortcut).
struct AddressMatch {
  uint8_t tuple = 0;  // 0 original, 1 reply
  uint8_t end = 0;    // 0 source, 1 destination
  uint8_t family = 0; // AF_INET / AF_INET6
  uint8_t prefix = 0; // bits
  uint8_t bytes[16] = {};
};

struct PortMatch {
  uint8_t tuple = 0, end = 0;
  uint16_t low = 0, high = 0;
};

struct Filter {
  uint8_t family = 0;     // 0 any
  int protocol = -1;      // -1 any
  uint32_t tcpStates = 0; // bit per state number; 0 any
  uint32_t markValue = 0, markMask = 0;
  int zone = -1;
  uint32_t statusSet = 0, statusUnset = 0;
  std::vector<AddressMatch> addresses;
  std::vector<PortMatch> ports;
  bool kernel = true;  // also ask the kernel to pre-filter

  bool empty() const {
    return family == 0 && protocol < 0 && tcpStates == 0 && markMask == 0 && zone < 0 &&
           statusSet == 0 && statusUnset == 0 && addresses.empty() && ports.empty();
  }
};

bool matches(const Filter& filter, const Entry& entry);

// ---------------------------------------------------------------------------------------
// Requests. Each returns the message length written into `buf` (0 if `cap` is too small).
size_t buildRequest(uint8_t* buf, size_t cap, uint16_t type, uint16_t flags, uint32_t seq,
                    uint8_t family, uint16_t resId = 0);
// A table dump; with `filter` and `filter->kernel`, adds the attributes the kernel filters by.
size_t buildDumpRequest(uint8_t* buf, size_t cap, uint32_t seq, const Filter* filter);

// One entry to get, create, update or delete (IPCTNL_MSG_CT_GET / _NEW / _DELETE). Tuples
// use the decoder's Tuple; a part is sent when its `has` bit is set, a tuple when `has` != 0.
struct EntrySpec {
  uint8_t family = 0;  // AF_INET / AF_INET6
  Tuple orig, reply;
  bool hasId = false, hasMark = false, hasTimeout = false, hasStatus = false, hasTcpState = false,
       hasZone = false;
  uint32_t id = 0, mark = 0, timeout = 0, status = 0;
  uint8_t tcpState = 0;
  uint16_t zone = 0;
  // Label bits 0..127 (bit b: word b / 32, bit b % 32) and, with hasLabelsMask, which bits change.
  bool hasLabels = false, hasLabelsMask = false;
  uint32_t labels[4] = {}, labelsMask[4] = {};
};

enum class EntryOp : uint8_t { kGet = 0, kCreate = 1, kUpdate = 2, kDelete = 3 };

// The request for `op` on `spec`, asking for an acknowledgement (a GET's answer comes first).
size_t buildEntryRequest(uint8_t* buf, size_t cap, EntryOp op, uint32_t seq, const EntrySpec& spec);
// IPCTNL_MSG_CT_DELETE without a tuple: every entry of the namespace (of `family`, 0 for all).
size_t buildFlushRequest(uint8_t* buf, size_t cap, uint32_t seq, uint8_t family);

// ---------------------------------------------------------------------------------------
// Answers.
enum class MessageKind { kEntry, kStatsGlobal, kStatsCpu, kExpStatsCpu, kDone, kError, kOther };

// Walks one datagram's messages. For each message of our sequence number, calls
// `onMessage(kind, header, payload, payloadLen)`. Errors (NLMSG_ERROR != 0, a DONE carrying an
// error, framing faults) stop the walk and return false with `err` set.
struct MessageView {
  MessageKind kind;
  uint16_t type;
  uint16_t flags;
  uint8_t family;   // nfgen_family
  uint16_t resId;   // nfgen res_id, host order
  const uint8_t* attrs;
  size_t attrsLen;
};

class MessageSink {
 public:
  virtual ~MessageSink() = default;
  // Return false to stop the walk (with `err` set).
  virtual bool onMessage(const MessageView& message, SysError& err) = 0;
};

// Returns false on error. `done` is set when NLMSG_DONE (or a final ack) was seen.
// `expectSeq` 0 accepts any sequence number.
bool walkDatagram(const uint8_t* data, size_t len, uint32_t expectSeq, MessageSink& sink, bool& done,
                  SysError& err);

// Decodes a conntrack message's attributes into `entry`. False with `err` on a malformed one.
bool decodeEntry(const MessageView& message, Entry& entry, SysError& err);

// Flat (attribute number, u32 value) pairs of a stats message.
bool decodeCounters(const MessageView& message, std::vector<uint32_t>& pairs, SysError& err);

// ---------------------------------------------------------------------------------------
// Batches of records for JS.
struct Batch {
  std::vector<uint32_t> records;  // count * slot::kCount
  std::string text;
  size_t count = 0;
  // Events only: how many times the kernel reported lost events (ENOBUFS) after the previous
  // batch and before this batch's first record.
  uint32_t overflowsBefore = 0;
  // Summaries only: the number of entries in the group each record stands for.
  std::vector<uint32_t> counts;

  void clear() {
    records.clear();
    text.clear();
    count = 0;
    overflowsBefore = 0;
    counts.clear();
  }
};

// Appends `entry` to `batch`. Fails only on a string that does not fit a string ref.
void appendRecord(Batch& batch, const Entry& entry);

// Formats an address as conntrack-tools prints it (inet_ntop form).
size_t formatAddress(uint8_t family, const uint8_t* addr, char* out /* >= 46 bytes */);

// Key for de-duplicating dumps: the id alone collides among a million entries (it is 32 bits).
uint64_t dedupKey(const Entry& entry);

// Open-addressing set of 64-bit keys; grows as needed.
class KeySet {
 public:
  // True when the key was new.
  bool insert(uint64_t key);
  // Makes room for `count` keys at once: no rehash while they arrive.
  void reserve(size_t count);
  size_t size() const { return size_; }

 private:
  std::vector<uint64_t> slots_;
  size_t size_ = 0;
  bool hasZero_ = false;
  void rehash(size_t capacity);
};

// Group-by keys of a summary, in lib/table/summary.ts SUMMARY_KEYS order.
enum class SummaryKey : uint8_t {
  kFamily, kProtocol, kTcpState, kSrc, kDst, kSport, kDport, kReplySrc, kReplyDst, kMark, kZone, kAssured,
  kNat, kSeenReply,
};
constexpr uint8_t kSummaryKeyCount = 14;

// Counts entries by the values of some keys. Each group is kept as its key bytes and a count,
// and comes out as a record with only the grouped fields set, so the records' reader serves both.
class Grouper {
 public:
  explicit Grouper(std::vector<SummaryKey> keys) : keys_(std::move(keys)) {}
  void add(const Entry& entry);
  // Appends every group to batches of at most `batchSize` records; `full(batch)` takes each
  // full batch (false: stop). The last, partial batch stays in `batch`.
  bool emit(Batch& batch, size_t batchSize, const std::function<bool()>& full);
  size_t groups() const { return groups_.size(); }

 private:
  std::vector<SummaryKey> keys_;
  std::unordered_map<std::string, uint32_t> groups_;
  std::string key_;
};

// What a dump's decoding saw; atomics because another thread reads them while it runs.
struct DecodeCounters {
  std::atomic<uint64_t> messages{0};     // conntrack messages decoded
  std::atomic<uint64_t> duplicates{0};   // dropped as repeats
  std::atomic<uint64_t> filteredOut{0};  // dropped by the native filter
  std::atomic<bool> kernelFiltered{false};  // the kernel marked a reply NLM_F_DUMP_FILTERED
};

// Decodes conntrack messages, filters them (`filter` may be null), drops repeats (`seen`
// may be null) and appends records to `batch`. When `batchFull` is set and the batch reaches
// `batchSize` entries (or its text grows large), it is called; returning false ends the walk
// with `stopped` set.
class EntrySink : public MessageSink {
 public:
  EntrySink(const Filter* filter, KeySet* seen, Batch& batch, DecodeCounters* counters = nullptr,
            size_t batchSize = 0, std::function<bool()> batchFull = nullptr)
      : filter_(filter), seen_(seen), batch_(batch), counters_(counters), batchSize_(batchSize),
        batchFull_(std::move(batchFull)) {}

  bool onMessage(const MessageView& message, SysError& err) override;
  bool stopped = false;
  // Event messages: record each one's EventType (dump answers carry the same message types).
  bool classifyEvents = false;
  // Summaries: entries are counted here instead of written as records.
  Grouper* grouper = nullptr;

 private:
  const Filter* filter_;
  KeySet* seen_;
  Batch& batch_;
  DecodeCounters* counters_;
  size_t batchSize_;
  std::function<bool()> batchFull_;
};

// A batch's text must fit string refs; batches are cut well before that.
constexpr size_t kMaxBatchText = 4u << 20;

// Decodes a whole datagram of conntrack messages into `batch` (filtering and de-duplicating
// through `seen` when given; with `events`, recording each message's EventType). Used by the
// binding's decode() for tests and by fuzzing.
// With `grouper`, the entries are counted there and its groups written as the batch's records.
bool decodeDatagramToBatch(const uint8_t* data, size_t len, const Filter* filter, KeySet* seen,
                           Batch& batch, SysError& err, bool events = false, Grouper* grouper = nullptr);

}  // namespace ct
