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

}  // namespace ct
