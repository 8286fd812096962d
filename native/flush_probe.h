// Which filters the kernel's filtered flush (IPCTNL_MSG_CT_DELETE without a tuple) honours.
// A kernel that does not know an attribute ignores it and flushes more than asked (older ones
// read only the family and the mark; status and zone came later), and nothing in its answer
// says so. So the kernel is asked in a network namespace of its own, made for the
// probe on a thread of its own and gone with it: entries are made there, one filtered flush
// with every attribute is sent, and what remains tells which attributes were honoured. Once per process; without the right to make a
// namespace (CAP_SYS_ADMIN) nothing counts as supported, and deletes go entry by entry.
#pragma once

#include <string>

#include "filter.h"

namespace ct {

struct FlushSupport {
  bool family = false;  // nfgen_family with version 1
  bool mark = false;    // CTA_MARK with CTA_MARK_MASK
  bool status = false;  // CTA_STATUS with CTA_STATUS_MASK
  bool zone = false;    // CTA_ZONE (not zone 0, which the kernel reads as "any")
  std::string problem;  // why the probe could not run, when it could not
};

// The probe's answer; the first call runs it (a few milliseconds), later ones wait for and reuse it.
const FlushSupport& flushSupport();

// True when `filter` has only what a filtered flush can carry (family, mark, status, a zone other
// than 0): worth probing the kernel for.
bool flushCanExpress(const Filter& filter);

// True when one filtered flush deletes exactly what `filter` selects on this kernel.
bool flushCovers(const Filter& filter, const FlushSupport& support);

}  // namespace ct
