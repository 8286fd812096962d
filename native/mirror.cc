#include "mirror.h"

#include <malloc.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <new>
#include <string_view>

namespace ct {
namespace {

// ---- the compact form ---------------------------------------------------------------------
// A block: a 16-byte header, the key (original tuple and zone), then the rest of the entry,
// each optional part only when its `present` bit is set. Helper name and security context are
// not kept (they point into the datagram).
constexpr size_t kHashAt = 0, kSeenGenAt = 4, kEventGenAt = 8, kSizeAt = 12, kKeyLenAt = 14, kFlagsAt = 15;
constexpr size_t kHeader = 16;
constexpr uint8_t kDestroyed = 1;      // a destroy during a sync: kept so the dump does not revive it
constexpr uint8_t kReplyReversed = 2;  // the reply tuple is the original reversed: not stored
constexpr size_t kMaxBlock = 512;

template <typename T>
T load(const uint8_t* p) {
  T v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
template <typename T>
void store(uint8_t* p, T v) {
  std::memcpy(p, &v, sizeof v);
}

uint32_t hashOf(const uint8_t* key, size_t len) {
  return static_cast<uint32_t>(std::hash<std::string_view>{}(std::string_view(reinterpret_cast<const char*>(key), len)));
}

class Writer {
 public:
  explicit Writer(uint8_t* p) : start_(p), p_(p) {}
  template <typename T>
  void put(T v) {
    store(p_, v);
    p_ += sizeof v;
  }
  void bytes(const void* src, size_t n) {
    std::memcpy(p_, src, n);
    p_ += n;
  }
  size_t size() const { return static_cast<size_t>(p_ - start_); }

 private:
  uint8_t* start_;
  uint8_t* p_;
};

class Reader {
 public:
  explicit Reader(const uint8_t* p) : p_(p) {}
  template <typename T>
  T get() {
    T v = load<T>(p_);
    p_ += sizeof v;
    return v;
  }
  void bytes(void* dst, size_t n) {
    std::memcpy(dst, p_, n);
    p_ += n;
  }

 private:
  const uint8_t* p_;
};

// The key: what identifies the entry; its layout is also the original tuple's, minus has/zone.
void writeKey(Writer& w, const Tuple& t, uint32_t zone) {
  size_t alen = addressLength(t.family);
  w.put<uint8_t>(t.family);
  w.put<uint8_t>(t.proto);
  w.bytes(t.srcAddr, alen);
  w.bytes(t.dstAddr, alen);
  w.put<uint16_t>(t.sport);
  w.put<uint16_t>(t.dport);
  w.put<uint16_t>(t.icmpId);
  w.put<uint8_t>(t.icmpType);
  w.put<uint8_t>(t.icmpCode);
  w.put<uint16_t>(static_cast<uint16_t>(zone));
}

// Returns the zone written last.
uint16_t readKey(Reader& r, Tuple& t) {
  t.family = r.get<uint8_t>();
  t.proto = r.get<uint8_t>();
  size_t alen = addressLength(t.family);
  r.bytes(t.srcAddr, alen);
  r.bytes(t.dstAddr, alen);
  t.sport = r.get<uint16_t>();
  t.dport = r.get<uint16_t>();
  t.icmpId = r.get<uint16_t>();
  t.icmpType = r.get<uint8_t>();
  t.icmpCode = r.get<uint8_t>();
  return r.get<uint16_t>();
}

void writeTuple(Writer& w, const Tuple& t) {
  w.put<uint8_t>(static_cast<uint8_t>(t.has));
  writeKey(w, t, t.zone);
}

void readTuple(Reader& r, Tuple& t) {
  t.has = r.get<uint8_t>();
  t.zone = readKey(r, t);
}

bool isReversed(const Tuple& orig, const Tuple& reply) {
  size_t alen = addressLength(orig.family);
  return reply.has == orig.has && reply.family == orig.family && reply.proto == orig.proto &&
         std::memcmp(reply.srcAddr, orig.dstAddr, alen) == 0 && std::memcmp(reply.dstAddr, orig.srcAddr, alen) == 0 &&
         reply.sport == orig.dport && reply.dport == orig.sport && reply.icmpId == orig.icmpId &&
         reply.icmpType == orig.icmpType && reply.icmpCode == orig.icmpCode && reply.zone == orig.zone;
}

Tuple reversed(const Tuple& orig) {
  Tuple t = orig;
  std::memcpy(t.srcAddr, orig.dstAddr, sizeof t.srcAddr);
  std::memcpy(t.dstAddr, orig.srcAddr, sizeof t.dstAddr);
  t.sport = orig.dport;
  t.dport = orig.sport;
  return t;
}

// Writes the block for `e` into `buf` (kMaxBlock bytes); returns its size.
size_t encode(const Entry& e, uint32_t seenGen, uint32_t eventGen, uint8_t* buf) {
  uint32_t present = e.present & ~(kHasHelper | kHasSecctx);
  uint8_t flags = 0;
  if ((present & kHasReply) && isReversed(e.orig, e.reply)) flags |= kReplyReversed;
  Writer w(buf + kHeader);
  writeKey(w, e.orig, zoneOf(e));
  size_t keyLen = w.size();
  w.put<uint32_t>(present);
  w.put<uint8_t>(e.family);
  w.put<uint8_t>(static_cast<uint8_t>(e.orig.has));
  w.put<uint16_t>(e.orig.zone);
  if (present & kHasId) w.put(e.id);
  if (present & kHasStatus) w.put(e.status);
  if (present & kHasTimeout) w.put(e.timeout);
  if (present & kHasMark) w.put(e.mark);
  if (present & kHasUse) w.put(e.use);
  if (present & kHasZone) w.put(e.zone);
  if (present & kHasSecmark) w.put(e.secmark);
  if ((present & kHasReply) && !(flags & kReplyReversed)) writeTuple(w, e.reply);
  if (present & kHasMaster) writeTuple(w, e.master);
  if (present & kHasCountersOrig) w.put(e.packetsOrig), w.put(e.bytesOrig);
  if (present & kHasCountersReply) w.put(e.packetsReply), w.put(e.bytesReply);
  if (present & kHasTimestampStart) w.put(e.tsStart);
  if (present & kHasTimestampStop) w.put(e.tsStop);
  if (present & kHasTcp) {
    w.put<uint8_t>(static_cast<uint8_t>(e.tcpHas));
    w.put(e.tcpState), w.put(e.wscaleOrig), w.put(e.wscaleReply);
    w.put(e.flagsOrig), w.put(e.maskOrig), w.put(e.flagsReply), w.put(e.maskReply);
  }
  if (present & kHasSctp) w.put<uint8_t>(static_cast<uint8_t>(e.sctpHas)), w.put(e.sctpState), w.put(e.vtagOrig), w.put(e.vtagReply);
  if (present & kHasDccp) w.put<uint8_t>(static_cast<uint8_t>(e.dccpHas)), w.put(e.dccpState), w.put(e.dccpRole), w.put(e.dccpSeq);
  if (present & kHasLabels) w.bytes(e.labels, sizeof e.labels);
  if (present & kHasSeqAdjOrig) w.put(e.seqAdjOrig.correctionPos), w.put(e.seqAdjOrig.offsetBefore), w.put(e.seqAdjOrig.offsetAfter);
  if (present & kHasSeqAdjReply) w.put(e.seqAdjReply.correctionPos), w.put(e.seqAdjReply.offsetBefore), w.put(e.seqAdjReply.offsetAfter);
  if (present & kHasSynproxy) w.put(e.synIsn), w.put(e.synIts), w.put(e.synTsoff);
  size_t size = kHeader + w.size();
  store<uint32_t>(buf + kHashAt, hashOf(buf + kHeader, keyLen));
  store<uint32_t>(buf + kSeenGenAt, seenGen);
  store<uint32_t>(buf + kEventGenAt, eventGen);
  store<uint16_t>(buf + kSizeAt, static_cast<uint16_t>(size));
  buf[kKeyLenAt] = static_cast<uint8_t>(keyLen);
  buf[kFlagsAt] = flags;
  return size;
}

void decode(const uint8_t* block, Entry& e) {
  e = Entry{};
  Reader r(block + kHeader);
  readKey(r, e.orig);  // the key's zone is zoneOf(e), restored from the body below
  uint32_t present = r.get<uint32_t>();
  e.present = present;
  e.family = r.get<uint8_t>();
  e.orig.has = r.get<uint8_t>();
  e.orig.zone = r.get<uint16_t>();
  if (present & kHasId) e.id = r.get<uint32_t>();
  if (present & kHasStatus) e.status = r.get<uint32_t>();
  if (present & kHasTimeout) e.timeout = r.get<uint32_t>();
  if (present & kHasMark) e.mark = r.get<uint32_t>();
  if (present & kHasUse) e.use = r.get<uint32_t>();
  if (present & kHasZone) e.zone = r.get<uint16_t>();
  if (present & kHasSecmark) e.secmark = r.get<uint32_t>();
  if (present & kHasReply) {
    if (block[kFlagsAt] & kReplyReversed) {
      e.reply = reversed(e.orig);
    } else {
      readTuple(r, e.reply);
    }
  }
  if (present & kHasMaster) readTuple(r, e.master);
  if (present & kHasCountersOrig) e.packetsOrig = r.get<uint64_t>(), e.bytesOrig = r.get<uint64_t>();
  if (present & kHasCountersReply) e.packetsReply = r.get<uint64_t>(), e.bytesReply = r.get<uint64_t>();
  if (present & kHasTimestampStart) e.tsStart = r.get<uint64_t>();
  if (present & kHasTimestampStop) e.tsStop = r.get<uint64_t>();
  if (present & kHasTcp) {
    e.tcpHas = r.get<uint8_t>();
    e.tcpState = r.get<uint8_t>(), e.wscaleOrig = r.get<uint8_t>(), e.wscaleReply = r.get<uint8_t>();
    e.flagsOrig = r.get<uint8_t>(), e.maskOrig = r.get<uint8_t>(), e.flagsReply = r.get<uint8_t>(), e.maskReply = r.get<uint8_t>();
  }
  if (present & kHasSctp) e.sctpHas = r.get<uint8_t>(), e.sctpState = r.get<uint8_t>(), e.vtagOrig = r.get<uint32_t>(), e.vtagReply = r.get<uint32_t>();
  if (present & kHasDccp) e.dccpHas = r.get<uint8_t>(), e.dccpState = r.get<uint8_t>(), e.dccpRole = r.get<uint8_t>(), e.dccpSeq = r.get<uint64_t>();
  if (present & kHasLabels) r.bytes(e.labels, sizeof e.labels);
  if (present & kHasSeqAdjOrig) e.seqAdjOrig.correctionPos = r.get<uint32_t>(), e.seqAdjOrig.offsetBefore = r.get<uint32_t>(), e.seqAdjOrig.offsetAfter = r.get<uint32_t>();
  if (present & kHasSeqAdjReply) e.seqAdjReply.correctionPos = r.get<uint32_t>(), e.seqAdjReply.offsetBefore = r.get<uint32_t>(), e.seqAdjReply.offsetAfter = r.get<uint32_t>();
  if (present & kHasSynproxy) e.synIsn = r.get<uint32_t>(), e.synIts = r.get<uint32_t>(), e.synTsoff = r.get<uint32_t>();
}

// An update event carries some parts only when they changed: protocol state with IPCT_PROTOINFO,
// labels with IPCT_LABEL, sequence adjustments and synproxy with theirs, the master only when the
// entry is new, counters and timestamps only at its destroy, the use count never. The mirror keeps
// its copy of each part the event lacks. (The mark is sent whenever it is not 0: absent means 0.)
void keepWhatEventLacks(Entry& now, const Entry& before) {
  auto lacks = [&](uint32_t bit) {
    bool keep = !(now.present & bit) && (before.present & bit);
    if (keep) now.present |= bit;
    return keep;
  };
  if (lacks(kHasTcp)) {
    now.tcpHas = before.tcpHas, now.tcpState = before.tcpState;
    now.wscaleOrig = before.wscaleOrig, now.wscaleReply = before.wscaleReply;
    now.flagsOrig = before.flagsOrig, now.maskOrig = before.maskOrig;
    now.flagsReply = before.flagsReply, now.maskReply = before.maskReply;
  }
  if (lacks(kHasSctp)) now.sctpHas = before.sctpHas, now.sctpState = before.sctpState, now.vtagOrig = before.vtagOrig, now.vtagReply = before.vtagReply;
  if (lacks(kHasDccp)) now.dccpHas = before.dccpHas, now.dccpState = before.dccpState, now.dccpRole = before.dccpRole, now.dccpSeq = before.dccpSeq;
  if (lacks(kHasLabels)) std::memcpy(now.labels, before.labels, sizeof now.labels);
  if (lacks(kHasMaster)) now.master = before.master;
  if (lacks(kHasSeqAdjOrig)) now.seqAdjOrig = before.seqAdjOrig;
  if (lacks(kHasSeqAdjReply)) now.seqAdjReply = before.seqAdjReply;
  if (lacks(kHasSynproxy)) now.synIsn = before.synIsn, now.synIts = before.synIts, now.synTsoff = before.synTsoff;
  if (lacks(kHasCountersOrig)) now.packetsOrig = before.packetsOrig, now.bytesOrig = before.bytesOrig;
  if (lacks(kHasCountersReply)) now.packetsReply = before.packetsReply, now.bytesReply = before.bytesReply;
  if (lacks(kHasTimestampStart)) now.tsStart = before.tsStart;
  if (lacks(kHasTimestampStop)) now.tsStop = before.tsStop;
  if (lacks(kHasUse)) now.use = before.use;
  if (lacks(kHasSecmark)) now.secmark = before.secmark;
}

uint8_t flagsOf(const uint8_t* b) { return b[kFlagsAt]; }
uint32_t seenGenOf(const uint8_t* b) { return load<uint32_t>(b + kSeenGenAt); }
uint32_t eventGenOf(const uint8_t* b) { return load<uint32_t>(b + kEventGenAt); }
uint32_t hashOfBlock(const uint8_t* b) { return load<uint32_t>(b + kHashAt); }
size_t allocated(const uint8_t* b) { return malloc_usable_size(const_cast<uint8_t*>(b)) + sizeof(size_t); }

uint8_t* copyBlock(const uint8_t* buf, size_t size) {
  auto* block = static_cast<uint8_t*>(std::malloc(size));
  if (!block) throw std::bad_alloc();
  std::memcpy(block, buf, size);
  return block;
}

// A destroy marker: the key and nothing else.
size_t encodeMarker(const Entry& e, uint32_t gen, uint8_t* buf) {
  Writer w(buf + kHeader);
  writeKey(w, e.orig, zoneOf(e));
  size_t keyLen = w.size();
  store<uint32_t>(buf + kHashAt, hashOf(buf + kHeader, keyLen));
  store<uint32_t>(buf + kSeenGenAt, gen);
  store<uint32_t>(buf + kEventGenAt, gen);
  store<uint16_t>(buf + kSizeAt, static_cast<uint16_t>(kHeader + keyLen));
  buf[kKeyLenAt] = static_cast<uint8_t>(keyLen);
  buf[kFlagsAt] = kDestroyed;
  return kHeader + keyLen;
}

constexpr size_t kMinCapacity = 64;

}  // namespace

std::string mirrorKey(const Tuple& t, uint32_t zone) {
  uint8_t buf[64];
  Writer w(buf);
  writeKey(w, t, zone);
  return std::string(reinterpret_cast<const char*>(buf), w.size());
}

MirrorStore::MirrorStore() : table_(kMinCapacity, nullptr) {}

MirrorStore::~MirrorStore() {
  for (uint8_t* b : table_) std::free(b);
}

uint8_t** MirrorStore::find(const uint8_t* key, size_t keyLen, uint32_t hash) {
  size_t mask = table_.size() - 1;
  for (size_t i = hash & mask;; i = (i + 1) & mask) {
    uint8_t* b = table_[i];
    if (!b) return &table_[i];
    if (hashOfBlock(b) == hash && b[kKeyLenAt] == keyLen && std::memcmp(b + kHeader, key, keyLen) == 0) return &table_[i];
  }
}

void MirrorStore::insertNew(uint8_t* block) {
  // Keeps the load at most 3/4 so probes stay short.
  if ((used_ + 1) * 4 > table_.size() * 3) rehash(table_.size() * 2);
  size_t mask = table_.size() - 1;
  size_t i = hashOfBlock(block) & mask;
  while (table_[i]) i = (i + 1) & mask;
  table_[i] = block;
  ++used_;
  blockBytes_ += allocated(block);
}

void MirrorStore::replace(uint8_t** slot, uint8_t* block) {
  blockBytes_ -= allocated(*slot);
  std::free(*slot);
  *slot = block;
  blockBytes_ += allocated(block);
}

void MirrorStore::eraseAt(size_t index) {
  blockBytes_ -= allocated(table_[index]);
  std::free(table_[index]);
  table_[index] = nullptr;
  --used_;
  // Backward shift: moves later blocks of the run into the hole when their home allows it.
  size_t mask = table_.size() - 1;
  size_t hole = index;
  for (size_t i = (index + 1) & mask; table_[i]; i = (i + 1) & mask) {
    size_t home = hashOfBlock(table_[i]) & mask;
    // Movable when its home is not in (hole, i], cyclically.
    bool movable = hole <= i ? (home <= hole || home > i) : (home <= hole && home > i);
    if (movable) {
      table_[hole] = table_[i];
      table_[i] = nullptr;
      hole = i;
    }
  }
}

void MirrorStore::rehash(size_t capacity) {
  std::vector<uint8_t*> old(capacity, nullptr);
  old.swap(table_);
  size_t mask = capacity - 1;
  for (uint8_t* b : old) {
    if (!b) continue;
    size_t i = hashOfBlock(b) & mask;
    while (table_[i]) i = (i + 1) & mask;
    table_[i] = b;
  }
}

void MirrorStore::beginSync() {
  std::lock_guard<std::mutex> lock(mu_);
  ++gen_;
  syncing_ = true;
  syncAdded_ = 0;
}

void MirrorStore::applyDump(const Entry& e) {
  uint8_t buf[kMaxBlock];
  size_t size = encode(e, gen_, 0, buf);
  std::lock_guard<std::mutex> lock(mu_);
  store<uint32_t>(buf + kSeenGenAt, gen_);
  uint8_t** slot = find(buf + kHeader, buf[kKeyLenAt], hashOfBlock(buf));
  if (!*slot) {
    uint8_t* block = copyBlock(buf, size);
    changed(nullptr, &e);
    insertNew(block);
    ++live_;
    ++syncAdded_;
    return;
  }
  // An event during this sync is newer than (or as new as) the dump's copy, destroys included.
  if (eventGenOf(*slot) == gen_) return;
  uint8_t* block = copyBlock(buf, size);
  bool wasLive = !(flagsOf(*slot) & kDestroyed);
  if (!wasLive) ++live_, ++syncAdded_;
  changedBlock(wasLive ? *slot : nullptr, &e);
  replace(slot, block);
}

MirrorChange MirrorStore::applyEvent(const Entry& e) {
  uint8_t buf[kMaxBlock];
  std::lock_guard<std::mutex> lock(mu_);
  if (e.event == kEventDestroy) {
    encodeMarker(e, gen_, buf);
    uint8_t** slot = find(buf + kHeader, buf[kKeyLenAt], hashOfBlock(buf));
    bool wasLive = *slot && !(flagsOf(*slot) & kDestroyed);
    if (wasLive) --live_, changedBlock(*slot, nullptr);
    if (!syncing_) {
      if (*slot) eraseAt(static_cast<size_t>(slot - table_.data()));
    } else {
      size_t size = kHeader + buf[kKeyLenAt];
      if (*slot) replace(slot, copyBlock(buf, size));
      else insertNew(copyBlock(buf, size));
    }
    return wasLive ? MirrorChange::kDestroy : MirrorChange::kNone;
  }
  size_t size = encode(e, gen_, syncing_ ? gen_ : 0, buf);
  uint8_t** slot = find(buf + kHeader, buf[kKeyLenAt], hashOfBlock(buf));
  if (!*slot || (flagsOf(*slot) & kDestroyed)) {
    uint8_t* block = copyBlock(buf, size);
    ++live_;
    changed(nullptr, &e);
    if (*slot) replace(slot, block);
    else insertNew(block);
    return MirrorChange::kNew;
  }
  Entry before, now = e;
  decode(*slot, before);
  keepWhatEventLacks(now, before);
  size = encode(now, gen_, syncing_ ? gen_ : 0, buf);
  uint8_t* block = copyBlock(buf, size);
  changed(&before, &now);
  replace(slot, block);
  return MirrorChange::kUpdate;
}

MirrorStore::SyncResult MirrorStore::endSync() {
  std::lock_guard<std::mutex> lock(mu_);
  SyncResult result;
  result.added = syncAdded_;
  // Erasing shifts later blocks back: an index is looked at again after an erase there.
  for (size_t i = 0; i < table_.size();) {
    uint8_t* b = table_[i];
    if (b && ((flagsOf(b) & kDestroyed) || seenGenOf(b) != gen_)) {
      if (!(flagsOf(b) & kDestroyed)) --live_, ++result.removed, changedBlock(b, nullptr);
      eraseAt(i);
      continue;
    }
    ++i;
  }
  syncing_ = false;
  // Shrinks a table that emptied, keeping the load at most 3/4 afterwards.
  size_t capacity = table_.size();
  while (capacity > kMinCapacity && used_ * 8 < capacity) capacity /= 2;
  if (capacity != table_.size()) rehash(capacity);
  return result;
}

size_t MirrorStore::size() {
  std::lock_guard<std::mutex> lock(mu_);
  return live_;
}

bool MirrorStore::get(const std::string& key, Batch& batch) {
  const auto* k = reinterpret_cast<const uint8_t*>(key.data());
  std::lock_guard<std::mutex> lock(mu_);
  uint8_t** slot = find(k, key.size(), hashOf(k, key.size()));
  if (!*slot || (flagsOf(*slot) & kDestroyed)) return false;
  Entry e;
  decode(*slot, e);
  appendRecord(batch, e);
  return true;
}

void MirrorStore::entries(const Filter* filter, Batch& batch) {
  std::lock_guard<std::mutex> lock(mu_);
  Entry e;
  for (const uint8_t* b : table_) {
    if (!b || (flagsOf(b) & kDestroyed)) continue;
    decode(b, e);
    if (filter && !matches(*filter, e)) continue;
    appendRecord(batch, e);
  }
}

void MirrorStore::summarize(const Filter* filter, const std::vector<SummaryKey>& keys, size_t top, uint64_t knownGrouping,
                            const KnownGroups& known, SummaryColumns& out) {
  std::lock_guard<std::mutex> lock(mu_);
  ++asked_;
  for (auto& view : views_) {
    if (view->grouper.keys() != keys || view->filter.has_value() != (filter != nullptr)) continue;
    if (filter && !sameFilter(*view->filter, *filter)) continue;
    view->lastAsked = asked_;
    view->grouper.columns(top, view->id == knownGrouping ? known : KnownGroups{}, out);
    out.grouping = view->id;
    return;
  }
  auto view = std::make_unique<View>(View{filter ? std::optional<Filter>(*filter) : std::nullopt, Grouper(keys), asked_, ++viewsMade_});
  Entry e;
  // Blocks lie anywhere on the heap: ask for the ones a few slots ahead while decoding this one.
  constexpr size_t kAhead = 8;
  for (size_t i = 0; i < table_.size(); ++i) {
    if (i + kAhead < table_.size() && table_[i + kAhead]) __builtin_prefetch(table_[i + kAhead]);
    const uint8_t* b = table_[i];
    if (!b || (flagsOf(b) & kDestroyed)) continue;
    decode(b, e);
    if (filter && !matches(*filter, e)) continue;
    view->grouper.add(e);
  }
  view->grouper.columns(top, KnownGroups{}, out);
  if (view->grouper.groups() > kMaxViewGroups) return;
  out.grouping = view->id;
  if (views_.size() == kMaxViews) {
    auto oldest = std::min_element(views_.begin(), views_.end(), [](const auto& a, const auto& b) { return a->lastAsked < b->lastAsked; });
    views_.erase(oldest);
  }
  views_.push_back(std::move(view));
}

size_t MirrorStore::views() {
  std::lock_guard<std::mutex> lock(mu_);
  return views_.size();
}

void MirrorStore::changedBlock(const uint8_t* before, const Entry* after) {
  if (views_.empty()) return;
  Entry old;
  if (before) decode(before, old);
  changed(before ? &old : nullptr, after);
}

void MirrorStore::changed(const Entry* before, const Entry* after) {
  if (views_.empty()) return;
  for (auto& view : views_) {
    const Filter* f = view->filter ? &*view->filter : nullptr;
    if (before && (!f || matches(*f, *before))) view->grouper.remove(*before);
    if (after && (!f || matches(*f, *after))) view->grouper.add(*after);
  }
  // A grouping that outgrew the limit costs more to keep than to scan again.
  views_.erase(std::remove_if(views_.begin(), views_.end(), [](const auto& v) { return v->grouper.groups() > kMaxViewGroups; }),
               views_.end());
}

size_t MirrorStore::bytes() {
  std::lock_guard<std::mutex> lock(mu_);
  size_t viewBytes = 0;
  for (const auto& view : views_) viewBytes += view->grouper.bytes();
  return table_.capacity() * sizeof(uint8_t*) + blockBytes_ + viewBytes;
}

}  // namespace ct
