// An expectation: a connection the kernel was told to expect (by a helper such as FTP's, or by
// a program over ctnetlink), with the master connection it belongs to. Here: decoding
// ctnetlink's expectation messages (NFNL_SUBSYS_CTNETLINK_EXP), writing one as a record
// (record_layout.h expect_slot) and building the requests that list, get, create and delete them.
// Unknown attributes are skipped; a known one of the wrong size is malformed.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "entry.h"
#include "records.h"
#include "sys_error.h"
#include "wire.h"

namespace ct {

struct Expectation {
  uint32_t present = 0;  // ExpectPresent
  uint8_t family = 0;
  Tuple tuple;     // CTA_EXPECT_TUPLE: the connection expected
  Tuple mask;      // CTA_EXPECT_MASK: which parts of `tuple` must match
  Tuple master;    // CTA_EXPECT_MASTER: the master connection's original tuple
  Tuple natTuple;  // CTA_EXPECT_NAT_TUPLE: where the expected connection is NATed to
  uint32_t timeout = 0, id = 0, flags = 0, klass = 0, natDir = 0;
  uint16_t zone = 0;
  const char* helper = nullptr;  // points into the datagram; valid while decoding it
  size_t helperLen = 0;
  const char* fn = nullptr;
  size_t fnLen = 0;
  uint8_t event = kEventNone;
};

// Decodes an expectation message's attributes. False with `err` on a malformed one.
bool decodeExpectation(const MessageView& message, Expectation& out, SysError& err);

// Appends `expectation` to `batch` as one record of slot::kCount slots (expect_slot layout).
void appendExpectationRecord(Batch& batch, const Expectation& expectation);

// What a request names or creates. Tuples are sent when their `has` is non-zero.
struct ExpectationSpec {
  uint8_t family = 0;
  Tuple master, tuple, mask, natTuple;
  bool hasTimeout = false, hasId = false, hasZone = false, hasFlags = false, hasClass = false,
       hasNat = false;
  uint32_t timeout = 0, id = 0, flags = 0, klass = 0, natDir = 0;
  uint16_t zone = 0;
  std::string helper, fn;  // empty: not sent
};

// lib/table/expectations.ts EXPECTATION_OP uses the same numbers.
enum class ExpectationOp : uint8_t {
  kDump = 0,    // every expectation (of `family`; of one master when `master` is given)
  kGet = 1,     // the one matching `tuple` (and `id` when given)
  kCreate = 2,  // master, tuple, mask and timeout required by the kernel
  kDelete = 3,  // the one matching `tuple`; without a tuple, all (of `helper` when given)
};

// The request for `op`, asking for an acknowledgement (a dump ends with NLMSG_DONE instead).
size_t buildExpectationRequest(uint8_t* buf, size_t cap, ExpectationOp op, uint32_t seq,
                               const ExpectationSpec& spec);

}  // namespace ct
