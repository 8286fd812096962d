// Short request/answer exchanges on a handle's socket: global stats, per-CPU stats, requests
// about one entry (get, create, update, delete, flush) and the expectation requests (the whole
// expectation table, small by design, arrives as one batch).
// The kernel answers within the send call, so a non-blocking socket normally completes the
// whole exchange at once; pump() can be called again after poll() when it did not.
#pragma once

#include <cstdint>
#include <vector>

#include "netlink_socket.h"
#include "records.h"
#include "sys_error.h"
#include "wire.h"

namespace ct {

struct CpuRow {
  uint32_t cpu;
  std::vector<uint32_t> pairs;  // (CTA_STATS_* number, value)...
};

class Transaction : public MessageSink {
 public:
  enum class Kind { kGlobalStats, kCpuStats, kExpectationCpuStats, kEntry };
  explicit Transaction(Kind kind) : kind_(kind) {}
  // kEntry: sends `request` (built by buildEntryRequest / buildFlushRequest /
  // buildExpectationRequest; its sequence number is set here) and completes on the kernel's
  // acknowledgement or NLMSG_DONE. Entries and expectations answered land in batch().
  explicit Transaction(std::vector<uint8_t> request) : kind_(Kind::kEntry), request_(std::move(request)) {}

  // Starts (or restarts: the answer vectors keep their capacity, so a reused transaction
  // allocates nothing) the exchange.
  bool begin(NetlinkSocket& socket, SysError& err);
  // 1: complete; 0: nothing more queued yet (poll and call again); -1: error.
  // `buffer` (kReceiveBufferSize bytes) belongs to the caller, reused across requests.
  int pump(NetlinkSocket& socket, std::vector<uint8_t>& buffer, SysError& err);

  Kind kind() const { return kind_; }
  const std::vector<uint32_t>& pairs() const { return pairs_; }
  const std::vector<CpuRow>& rows() const { return rows_; }
  Batch& batch() { return batch_; }

  bool onMessage(const MessageView& message, SysError& err) override;

 private:
  Kind kind_;
  uint32_t seq_ = 0;
  bool complete_ = false;
  std::vector<uint32_t> pairs_;
  std::vector<CpuRow> rows_;
  std::vector<uint8_t> request_;
  Batch batch_;
};

}  // namespace ct
