// The filter of a dump or an event subscription, matched natively on every entry: the kernel's
// own filtering (requests.*) is only a shortcut, which older kernels ignore in part.
#pragma once

#include <cstdint>
#include <vector>

#include "entry.h"

namespace ct {

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
// The same conditions, field for field (the `kernel` shortcut aside).
bool sameFilter(const Filter& a, const Filter& b);

}  // namespace ct
