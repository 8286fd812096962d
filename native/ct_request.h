// Short request/answer exchanges on a handle's socket: global stats and per-CPU stats.
// The kernel answers within the send call, so a non-blocking socket normally completes the
// whole exchange at once; pump() can be called again after poll() when it did not.
#pragma once

#include <cstdint>
#include <vector>

#include "ct_codec.h"
#include "netlink_socket.h"

namespace ct {

struct CpuRow {
  uint32_t cpu;
  std::vector<uint32_t> pairs;  // (CTA_STATS_* number, value)...
};

class Transaction : public MessageSink {
 public:
  enum class Kind { kGlobalStats, kCpuStats, kExpectationCpuStats };
  explicit Transaction(Kind kind) : kind_(kind) {}

  // Starts (or restarts: the answer vectors keep their capacity, so a reused transaction
  // allocates nothing) the exchange.
  bool begin(NetlinkSocket& socket, SysError& err);
  // 1: complete; 0: nothing more queued yet (poll and call again); -1: error.
  // `buffer` (kReceiveBufferSize bytes) belongs to the caller, reused across requests.
  int pump(NetlinkSocket& socket, std::vector<uint8_t>& buffer, SysError& err);

  Kind kind() const { return kind_; }
  const std::vector<uint32_t>& pairs() const { return pairs_; }
  const std::vector<CpuRow>& rows() const { return rows_; }

  bool onMessage(const MessageView& message, SysError& err) override;

 private:
  Kind kind_;
  uint32_t seq_ = 0;
  bool complete_ = false;
  std::vector<uint32_t> pairs_;
  std::vector<CpuRow> rows_;
};

}  // namespace ct
