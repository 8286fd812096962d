#include "dedup.h"

namespace ct {
namespace {

uint32_t hashBytes(uint32_t h, const uint8_t* p, size_t n) {
  for (size_t i = 0; i < n; ++i) {
    h ^= p[i];
    h *= 16777619u;  // FNV-1a
  }
  return h;
}

}  // namespace

uint64_t dedupKey(const Entry& e) {
  uint32_t h = 2166136261u;
  const Tuple& t = e.orig;
  size_t addrLen = addressLength(t.family);
  h = hashBytes(h, &t.family, 1);
  h = hashBytes(h, t.srcAddr, addrLen);
  h = hashBytes(h, t.dstAddr, addrLen);
  h = hashBytes(h, &t.proto, 1);
  const uint16_t ports[3] = {t.sport, t.dport, t.icmpId};
  h = hashBytes(h, reinterpret_cast<const uint8_t*>(ports), sizeof ports);
  uint32_t zone = zoneOf(e);
  h = hashBytes(h, reinterpret_cast<const uint8_t*>(&zone), sizeof zone);
  return (static_cast<uint64_t>(e.id) << 32) | h;
}

void KeySet::reserve(size_t count) {
  size_t capacity = 1024;
  while (capacity < count * 2) capacity *= 2;  // load stays at or under one half
  if (capacity > slots_.size()) rehash(capacity);
}

void KeySet::rehash(size_t capacity) {
  std::vector<uint64_t> old;
  old.swap(slots_);
  slots_.assign(capacity, 0);
  size_t mask = slots_.size() - 1;
  for (uint64_t key : old) {
    if (key == 0) continue;
    size_t i = static_cast<size_t>((key * 0x9E3779B97F4A7C15ull) >> 20) & mask;
    while (slots_[i] != 0) i = (i + 1) & mask;
    slots_[i] = key;
  }
}

}  // namespace ct
