// createMany() and updateMany() in native code: a batch of spec records (entry_specs.*) becomes
// create or update requests, sent many per sendmsg (pipeline.*) on a socket of the batch's own,
// and each item's answer is reported by its index: 0, or the errno the kernel refused it with.
// One refusal does not stop the others.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "netlink_socket.h"
#include "netns.h"
#include "requests.h"
#include "sys_error.h"

namespace ct {

class BulkChanges {
 public:
  // `nsFd`: the namespace (-1: this thread's); it is duplicated.
  explicit BulkChanges(int nsFd);
  ~BulkChanges();
  BulkChanges(const BulkChanges&) = delete;
  BulkChanges& operator=(const BulkChanges&) = delete;

  // Sends `count` spec records as `op` (kCreate or kUpdate) and fills `errnos` (one per item, 0
  // when the kernel accepted it). Blocks; one call at a time. False with `err` when the socket
  // fails (then the items' fate is unknown from the first batch not answered).
  bool apply(EntryOp op, const uint32_t* records, size_t count, std::vector<int32_t>& errnos, SysError& err);
  void close();

 private:
  bool open(SysError& err);
  NetnsCopy netns_;
  NetlinkSocket socket_;
  size_t perBatch_ = 1;
  std::vector<uint8_t> buffer_;
};

}  // namespace ct
