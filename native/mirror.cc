#include "mirror.h"

#include <cstring>

namespace ct {
namespace {

// Pointers into the datagram do not outlive it: the store keeps no helper or security context.
Entry stored(const Entry& e) {
  Entry copy = e;
  copy.helper = nullptr;
  copy.helperLen = 0;
  copy.secctx = nullptr;
  copy.secctxLen = 0;
  copy.present &= ~(kHasHelper | kHasSecctx);
  copy.event = kEventNone;
  return copy;
}

}  // namespace

std::string mirrorKey(const Tuple& t, uint32_t zone) {
  size_t alen = addressLength(t.family);
  std::string key;
  key.reserve(2 + 2 * alen + 8);
  key.push_back(static_cast<char>(t.family));
  key.push_back(static_cast<char>(t.proto));
  key.append(reinterpret_cast<const char*>(t.srcAddr), alen);
  key.append(reinterpret_cast<const char*>(t.dstAddr), alen);
  uint16_t ports[4] = {t.sport, t.dport, t.icmpId, static_cast<uint16_t>(t.icmpType << 8 | t.icmpCode)};
  key.append(reinterpret_cast<const char*>(ports), sizeof ports);
  uint16_t z = static_cast<uint16_t>(zone);
  key.append(reinterpret_cast<const char*>(&z), sizeof z);
  return key;
}

void MirrorStore::beginSync() {
  std::lock_guard<std::mutex> lock(mu_);
  ++gen_;
  syncing_ = true;
}

void MirrorStore::applyDump(const Entry& e) {
  std::string key = mirrorKey(e.orig, zoneOf(e));
  std::lock_guard<std::mutex> lock(mu_);
  auto [it, fresh] = slots_.try_emplace(std::move(key));
  Slot& s = it->second;
  // An event during this sync is newer than (or as new as) the dump's copy, destroys included.
  if (!fresh && s.eventGen == gen_) return;
  if (fresh || s.destroyed) ++live_;
  s.entry = stored(e);
  s.seenGen = gen_;
  s.destroyed = false;
}

void MirrorStore::applyEvent(const Entry& e) {
  std::string key = mirrorKey(e.orig, zoneOf(e));
  std::lock_guard<std::mutex> lock(mu_);
  if (e.event == kEventDestroy) {
    auto it = slots_.find(key);
    if (!syncing_) {
      if (it != slots_.end()) {
        if (!it->second.destroyed) --live_;
        slots_.erase(it);
      }
      return;
    }
    if (it == slots_.end()) it = slots_.try_emplace(std::move(key)).first;
    else if (!it->second.destroyed) --live_;
    it->second.destroyed = true;
    it->second.eventGen = gen_;
    return;
  }
  auto [it, fresh] = slots_.try_emplace(std::move(key));
  Slot& s = it->second;
  if (fresh || s.destroyed) ++live_;
  s.entry = stored(e);
  s.seenGen = gen_;
  s.eventGen = syncing_ ? gen_ : 0;
  s.destroyed = false;
}

void MirrorStore::endSync() {
  std::lock_guard<std::mutex> lock(mu_);
  for (auto it = slots_.begin(); it != slots_.end();) {
    if (it->second.destroyed || it->second.seenGen != gen_) {
      if (!it->second.destroyed) --live_;
      it = slots_.erase(it);
    } else {
      ++it;
    }
  }
  syncing_ = false;
}

size_t MirrorStore::size() {
  std::lock_guard<std::mutex> lock(mu_);
  return live_;
}

bool MirrorStore::get(const std::string& key, Batch& batch) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = slots_.find(key);
  if (it == slots_.end() || it->second.destroyed) return false;
  appendRecord(batch, it->second.entry);
  return true;
}

void MirrorStore::entries(const Filter* filter, Batch& batch) {
  std::lock_guard<std::mutex> lock(mu_);
  for (const auto& [key, s] : slots_) {
    if (s.destroyed || (filter && !matches(*filter, s.entry))) continue;
    appendRecord(batch, s.entry);
  }
}

void MirrorStore::summarize(const Filter* filter, Grouper& grouper) {
  std::lock_guard<std::mutex> lock(mu_);
  for (const auto& [key, s] : slots_) {
    if (s.destroyed || (filter && !matches(*filter, s.entry))) continue;
    grouper.add(s.entry);
  }
}

size_t MirrorStore::bytes() {
  std::lock_guard<std::mutex> lock(mu_);
  // Node: the pair, the next pointer and the cached hash; a key longer than the small-string
  // buffer lives on the heap too.
  size_t perNode = sizeof(std::pair<const std::string, Slot>) + 2 * sizeof(void*);
  size_t total = slots_.size() * perNode + slots_.bucket_count() * sizeof(void*);
  for (const auto& [key, s] : slots_) if (key.size() > 15) total += key.capacity() + 1;
  return total;
}

}  // namespace ct
