#include "summary.h"

#include <algorithm>
#include <cstring>
#include <string_view>

namespace ct {
namespace {

constexpr uint8_t kNoState = 0xff;

// An address key: present, family, 16 bytes.
void putAddress(std::string& key, const Tuple& t, uint32_t bit, bool src, bool tuplePresent) {
  bool has = tuplePresent && (t.has & bit);
  key.push_back(static_cast<char>(has));
  key.push_back(static_cast<char>(has ? t.family : 0));
  const uint8_t* addr = src ? t.srcAddr : t.dstAddr;
  for (int i = 0; i < 16; ++i) key.push_back(static_cast<char>(has ? addr[i] : 0));
}

void putPort(std::string& key, const Tuple& t, bool tuplePresent, uint16_t port) {
  bool has = tuplePresent && (t.has & kTupleHasPorts);
  key.push_back(static_cast<char>(has));
  key.push_back(static_cast<char>(has ? port >> 8 : 0));
  key.push_back(static_cast<char>(has ? port & 0xff : 0));
}

uint8_t u8At(std::string_view key, size_t& at) { return static_cast<uint8_t>(key[at++]); }

// Two bytes, high first. Each read is its own statement: the operands of `|` are unsequenced, so
// `(u8At(key, at) << 8) | u8At(key, at)` leaves the byte order to the compiler.
uint16_t be16At(std::string_view key, size_t& at) {
  uint16_t high = u8At(key, at);
  uint16_t low = u8At(key, at);
  return static_cast<uint16_t>((high << 8) | low);
}

void takeAddress(std::string_view key, size_t& at, Entry& e, Tuple& t, uint32_t bit, bool src, uint32_t tupleBit) {
  bool has = u8At(key, at) != 0;
  uint8_t family = u8At(key, at);
  uint8_t* addr = src ? t.srcAddr : t.dstAddr;
  for (int i = 0; i < 16; ++i) addr[i] = u8At(key, at);
  if (!has) return;
  t.has |= bit;
  t.family = family;
  if (e.family == 0) e.family = family;
  e.present |= tupleBit;
}

uint32_t load32(const uint8_t* p) {
  uint32_t v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

void store32(uint8_t* p, uint32_t v) { std::memcpy(p, &v, sizeof v); }

// FNV-1a over the key bytes, then a final mix so the low bits (the slot index) depend on all of them.
uint32_t hashOf(const std::string& key) {
  uint32_t h = 2166136261u;
  for (char c : key) h = (h ^ static_cast<uint8_t>(c)) * 16777619u;
  h ^= h >> 16;
  h *= 0x7feb352du;
  h ^= h >> 15;
  return h;
}

constexpr size_t kMinSlots = 16;

bool isAddressKey(SummaryKey k) {
  return k == SummaryKey::kSrc || k == SummaryKey::kDst || k == SummaryKey::kReplySrc || k == SummaryKey::kReplyDst;
}

using Ranked = std::vector<std::pair<uint32_t, const uint8_t*>>;

// Largest count first (ties in any order): a radix sort on the count, a byte per pass, skipping
// the bytes every count shares; `spare` is its working memory.
void rankByCount(Ranked& ranked, Ranked& spare) {
  spare.resize(ranked.size());
  for (int shift = 0; shift < 32; shift += 8) {
    size_t buckets[257] = {};
    for (const auto& group : ranked) ++buckets[256 - ((group.first >> shift) & 0xff)];
    if (buckets[256 - ((ranked.front().first >> shift) & 0xff)] == ranked.size()) continue;
    for (size_t b = 1; b < 257; ++b) buckets[b] += buckets[b - 1];
    for (const auto& group : ranked) spare[buckets[255 - ((group.first >> shift) & 0xff)]++] = group;
    ranked.swap(spare);
  }
}

}  // namespace

Grouper::Grouper(std::vector<SummaryKey> keys) : keys_(std::move(keys)) {
  // Every key of these keys has the same length: that of an empty entry's.
  keyOf(Entry{});
  keyLen_ = key_.size();
  stride_ = kSlotHeader + keyLen_;
}

uint8_t* Grouper::slotOf(uint32_t hash) {
  size_t mask = capacity_ - 1;
  for (size_t i = hash & mask;; i = (i + 1) & mask) {
    uint8_t* slot = &slots_[i * stride_];
    if (load32(slot + 4) == 0) return slot;
    if (load32(slot) == hash && std::memcmp(slot + kSlotHeader, key_.data(), keyLen_) == 0) return slot;
  }
}

void Grouper::grow() {
  size_t capacity = capacity_ == 0 ? kMinSlots : capacity_ * 2;
  std::vector<uint8_t> old(capacity * stride_, 0);
  old.swap(slots_);
  size_t oldCapacity = capacity_;
  capacity_ = capacity;
  size_t mask = capacity_ - 1;
  for (size_t j = 0; j < oldCapacity; ++j) {
    const uint8_t* from = &old[j * stride_];
    if (load32(from + 4) == 0) continue;
    size_t i = load32(from) & mask;
    while (load32(&slots_[i * stride_] + 4) != 0) i = (i + 1) & mask;
    std::memcpy(&slots_[i * stride_], from, stride_);
  }
}

void Grouper::keyOf(const Entry& e) {
  key_.clear();
  bool orig = (e.present & kHasOrig) != 0;
  bool reply = (e.present & kHasReply) != 0;
  for (SummaryKey k : keys_) {
    switch (k) {
      case SummaryKey::kFamily: key_.push_back(static_cast<char>(e.family)); break;
      case SummaryKey::kProtocol: key_.push_back(static_cast<char>(orig && (e.orig.has & kTupleHasProto) ? e.orig.proto : 0)); break;
      case SummaryKey::kTcpState:
        key_.push_back(static_cast<char>((e.present & kHasTcp) && (e.tcpHas & kTcpHasState) ? e.tcpState : kNoState));
        break;
      case SummaryKey::kSrc: putAddress(key_, e.orig, kTupleHasSrc, true, orig); break;
      case SummaryKey::kDst: putAddress(key_, e.orig, kTupleHasDst, false, orig); break;
      case SummaryKey::kSport: putPort(key_, e.orig, orig, e.orig.sport); break;
      case SummaryKey::kDport: putPort(key_, e.orig, orig, e.orig.dport); break;
      case SummaryKey::kReplySrc: putAddress(key_, e.reply, kTupleHasSrc, true, reply); break;
      case SummaryKey::kReplyDst: putAddress(key_, e.reply, kTupleHasDst, false, reply); break;
      case SummaryKey::kMark:
        for (int shift = 24; shift >= 0; shift -= 8) key_.push_back(static_cast<char>(e.mark >> shift));
        break;
      case SummaryKey::kZone: {
        bool has = (e.present & kHasZone) != 0;
        key_.push_back(static_cast<char>(has));
        key_.push_back(static_cast<char>(has ? e.zone >> 8 : 0));
        key_.push_back(static_cast<char>(has ? e.zone & 0xff : 0));
        break;
      }
      case SummaryKey::kAssured: key_.push_back(static_cast<char>((e.status & status::kAssured) != 0)); break;
      case SummaryKey::kNat: key_.push_back(static_cast<char>((e.status & status::kNat) != 0)); break;
      case SummaryKey::kSeenReply: key_.push_back(static_cast<char>((e.status & status::kSeenReply) != 0)); break;
    }
  }
}

void Grouper::add(const Entry& e) {
  keyOf(e);
  // Keeps the load at most 3/4 so probes stay short.
  if ((used_ + 1) * 4 > capacity_ * 3) grow();
  uint32_t hash = hashOf(key_);
  uint8_t* slot = slotOf(hash);
  uint32_t count = load32(slot + 4);
  if (count == 0) {
    store32(slot, hash);
    store32(slot + 8, takeId());
    std::memcpy(slot + kSlotHeader, key_.data(), keyLen_);
    ++used_;
  }
  store32(slot + 4, count + 1);
}

uint32_t Grouper::takeId() {
  uint32_t id;
  if (freeIds_.empty()) {
    id = static_cast<uint32_t>(generations_.size());
    generations_.push_back(0);
  } else {
    id = freeIds_.back();
    freeIds_.pop_back();
  }
  // 0 means "none" to a caller's KnownGroups.
  if (++generations_[id] == 0) generations_[id] = 1;
  return id;
}

void Grouper::remove(const Entry& e) {
  if (used_ == 0) return;
  keyOf(e);
  uint8_t* slot = slotOf(hashOf(key_));
  uint32_t count = load32(slot + 4);
  if (count == 0) return;
  if (count > 1) {
    store32(slot + 4, count - 1);
    return;
  }
  // The group goes: backward shift, moving later slots of the run into the hole when their home
  // allows it (no tombstones).
  size_t mask = capacity_ - 1;
  size_t hole = static_cast<size_t>(slot - slots_.data()) / stride_;
  freeIds_.push_back(load32(slot + 8));
  std::memset(slot, 0, stride_);
  --used_;
  for (size_t i = (hole + 1) & mask; load32(&slots_[i * stride_] + 4) != 0; i = (i + 1) & mask) {
    size_t home = load32(&slots_[i * stride_]) & mask;
    bool movable = hole <= i ? (home <= hole || home > i) : (home <= hole && home > i);
    if (movable) {
      std::memcpy(&slots_[hole * stride_], &slots_[i * stride_], stride_);
      std::memset(&slots_[i * stride_], 0, stride_);
      hole = i;
    }
  }
}

Entry Grouper::entryOfKey(const uint8_t* keyBytes) const {
  std::string_view key(reinterpret_cast<const char*>(keyBytes), keyLen_);
  Entry e;
  size_t at = 0;
  for (SummaryKey k : keys_) {
    switch (k) {
      case SummaryKey::kFamily: e.family = u8At(key, at); break;
      case SummaryKey::kProtocol:
        e.orig.proto = u8At(key, at);
        e.orig.has |= kTupleHasProto;
        e.present |= kHasOrig;
        break;
      case SummaryKey::kTcpState: {
        uint8_t state = u8At(key, at);
        if (state != kNoState) {
          e.tcpState = state;
          e.tcpHas |= kTcpHasState;
          e.present |= kHasTcp;
        }
        break;
      }
      case SummaryKey::kSrc: takeAddress(key, at, e, e.orig, kTupleHasSrc, true, kHasOrig); break;
      case SummaryKey::kDst: takeAddress(key, at, e, e.orig, kTupleHasDst, false, kHasOrig); break;
      case SummaryKey::kReplySrc: takeAddress(key, at, e, e.reply, kTupleHasSrc, true, kHasReply); break;
      case SummaryKey::kReplyDst: takeAddress(key, at, e, e.reply, kTupleHasDst, false, kHasReply); break;
      case SummaryKey::kSport:
      case SummaryKey::kDport: {
        bool has = u8At(key, at) != 0;
        uint16_t port = be16At(key, at);
        if (has) {
          (k == SummaryKey::kSport ? e.orig.sport : e.orig.dport) = port;
          e.orig.has |= kTupleHasPorts;
          e.present |= kHasOrig;
        }
        break;
      }
      case SummaryKey::kMark:
        for (int i = 0; i < 4; ++i) e.mark = (e.mark << 8) | u8At(key, at);
        break;
      case SummaryKey::kZone: {
        bool has = u8At(key, at) != 0;
        uint16_t zone = be16At(key, at);
        if (has) {
          e.zone = zone;
          e.present |= kHasZone;
        }
        break;
      }
      case SummaryKey::kAssured:
      case SummaryKey::kNat:
      case SummaryKey::kSeenReply:
        if (u8At(key, at)) {
          e.status |= k == SummaryKey::kAssured ? status::kAssured : k == SummaryKey::kNat ? status::kNat : status::kSeenReply;
        }
        e.present |= kHasStatus;
        break;
    }
  }
  if (e.orig.family == 0) e.orig.family = e.family;
  if (e.reply.family == 0) e.reply.family = e.family;
  return e;
}

bool Grouper::emit(Batch& batch, size_t batchSize, const std::function<bool()>& full) {
  for (size_t slotIndex = 0; slotIndex < capacity_; ++slotIndex) {
    const uint8_t* slot = &slots_[slotIndex * stride_];
    uint32_t count = load32(slot + 4);
    if (count == 0) continue;
    // An entry with only the grouped fields, read back by lib/table/summary.ts like any record.
    appendRecord(batch, entryOfKey(slot + kSlotHeader));
    batch.counts.push_back(count);
    if (batch.count >= batchSize && !full()) return false;
  }
  return true;
}

void Grouper::columns(size_t top, const KnownGroups& known, SummaryColumns& out) const {
  Ranked& ranked = out.ranked;
  ranked.clear();
  ranked.reserve(used_);
  out.total = 0;
  for (size_t i = 0; i < capacity_; ++i) {
    const uint8_t* slot = &slots_[i * stride_];
    uint32_t count = load32(slot + 4);
    if (count == 0) continue;
    ranked.emplace_back(count, slot);
    out.total += count;
  }
  auto larger = [](const auto& a, const auto& b) { return a.first > b.first; };
  if (top > 0 && top < ranked.size()) {
    std::partial_sort(ranked.begin(), ranked.begin() + static_cast<std::ptrdiff_t>(top), ranked.end(), larger);
    ranked.resize(top);
  } else if (!ranked.empty()) {
    rankByCount(ranked, out.spare);
  }
  size_t n = ranked.size();
  out.counts.resize(n);
  out.ids.resize(n);
  out.generations.resize(n);
  out.numbers.resize(keys_.size());
  out.addresses.resize(keys_.size());
  for (size_t k = 0; k < keys_.size(); ++k) {
    if (isAddressKey(keys_[k])) {
      out.numbers[k].clear();
      out.addresses[k].assign(n, std::string());
    } else {
      out.addresses[k].clear();
      out.numbers[k].assign(n, -1);
    }
  }
  for (size_t i = 0; i < n; ++i) {
    out.counts[i] = ranked[i].first;
    uint32_t id = load32(ranked[i].second + 8);
    out.ids[i] = id;
    out.generations[i] = generations_[id];
    if (known.holds(id, generations_[id])) continue;
    // The key read back as entryOfKey() reads it for a dump's group records: one reader of the layout.
    Entry e = entryOfKey(ranked[i].second + kSlotHeader);
    for (size_t k = 0; k < keys_.size(); ++k) {
      std::vector<double>& numbers = out.numbers[k];
      switch (keys_[k]) {
        case SummaryKey::kFamily: numbers[i] = e.family; break;
        case SummaryKey::kProtocol: numbers[i] = e.orig.proto; break;
        case SummaryKey::kTcpState: numbers[i] = (e.present & kHasTcp) ? e.tcpState : -1; break;
        case SummaryKey::kSrc:
        case SummaryKey::kDst:
        case SummaryKey::kReplySrc:
        case SummaryKey::kReplyDst: {
          bool reply = keys_[k] == SummaryKey::kReplySrc || keys_[k] == SummaryKey::kReplyDst;
          bool src = keys_[k] == SummaryKey::kSrc || keys_[k] == SummaryKey::kReplySrc;
          const Tuple& t = reply ? e.reply : e.orig;
          if (t.has & (src ? kTupleHasSrc : kTupleHasDst)) {
            char text[64];
            size_t len = formatAddress(t.family, src ? t.srcAddr : t.dstAddr, text);
            out.addresses[k][i].assign(text, len);
          }
          break;
        }
        case SummaryKey::kSport: numbers[i] = (e.orig.has & kTupleHasPorts) ? e.orig.sport : -1; break;
        case SummaryKey::kDport: numbers[i] = (e.orig.has & kTupleHasPorts) ? e.orig.dport : -1; break;
        case SummaryKey::kMark: numbers[i] = e.mark; break;
        case SummaryKey::kZone: numbers[i] = (e.present & kHasZone) ? e.zone : -1; break;
        case SummaryKey::kAssured: numbers[i] = (e.status & status::kAssured) != 0; break;
        case SummaryKey::kNat: numbers[i] = (e.status & status::kNat) != 0; break;
        case SummaryKey::kSeenReply: numbers[i] = (e.status & status::kSeenReply) != 0; break;
      }
    }
  }
}

}  // namespace ct
