// De-duplication of dumps: a dump that resumes inside a changed hash bucket can send an entry
// twice, so every entry's key goes through a set and repeats are dropped.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "entry.h"

namespace ct {

// The id (high 32 bits) and a hash of the original tuple and zone: the id alone collides among
// a million entries (it is 32 bits).
uint64_t dedupKey(const Entry& entry);

// Open-addressing set of 64-bit keys; grows as needed.
class KeySet {
 public:
  // True when the key was new. Inline: it runs once per entry of a dump.
  bool insert(uint64_t key) {
    if (key == 0) {  // 0 marks an empty slot
      bool fresh = !hasZero_;
      hasZero_ = true;
      size_ += fresh;
      return fresh;
    }
    if ((size_ + 1) * 2 > slots_.size()) rehash(slots_.empty() ? 1024 : slots_.size() * 2);
    size_t mask = slots_.size() - 1;
    size_t i = static_cast<size_t>((key * 0x9E3779B97F4A7C15ull) >> 20) & mask;
    for (;;) {
      if (slots_[i] == key) return false;
      if (slots_[i] == 0) {
        slots_[i] = key;
        ++size_;
        return true;
      }
      i = (i + 1) & mask;
    }
  }
  // Makes room for `count` keys at once: no rehash while they arrive.
  void reserve(size_t count);
  size_t size() const { return size_; }

 private:
  std::vector<uint64_t> slots_;
  size_t size_ = 0;
  bool hasZero_ = false;
  void rehash(size_t capacity);
};

}  // namespace ct
