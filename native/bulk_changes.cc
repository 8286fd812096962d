#include "bulk_changes.h"

#include <fcntl.h>
#include <unistd.h>

#include "entry_specs.h"
#include "netns.h"
#include "pipeline.h"

namespace ct {
namespace {

// Room for any create or update request (tuples, NAT ranges, labels): about 300 bytes at most.
constexpr size_t kMaxChangeRequest = 1024;

}  // namespace

BulkChanges::BulkChanges(int nsFd) : netns_(nsFd) {}

BulkChanges::~BulkChanges() { close(); }

void BulkChanges::close() {
  socket_.close();
  netns_.reset();
  std::vector<uint8_t>().swap(buffer_);
}

bool BulkChanges::open(SysError& err) {
  if (socket_.fd() >= 0) return true;
  bool opened = false;
  auto work = [&] { opened = socket_.open(true, err); };
  if (!netns_.run(work, err) || !opened) return false;
  perBatch_ = prepareBatchSocket(socket_);
  buffer_.resize(kReceiveBufferSize);
  return true;
}

bool BulkChanges::apply(EntryOp op, const uint32_t* records, size_t count, std::vector<int32_t>& errnos,
                        SysError& err) {
  errnos.assign(count, 0);
  if (count == 0) return true;
  if (!open(err)) return false;
  RequestBatch batch;
  EntrySpec spec;
  auto refused = [&errnos](uint64_t index, int errnum) { errnos[index] = errnum; };
  for (size_t i = 0; i < count; ++i) {
    readSpecRecord(records, i, spec);
    uint8_t* at = batch.reserve(kMaxChangeRequest);
    size_t len = buildEntryRequest(at, kMaxChangeRequest, op, 0, spec);
    if (len == 0) {
      errnos[i] = EMSGSIZE;
      continue;
    }
    batch.commit(len, i);
    if (batch.count() >= perBatch_) {
      if (!sendBatch(socket_, batch, buffer_, refused, err)) return false;
      batch.clear();
    }
  }
  return sendBatch(socket_, batch, buffer_, refused, err);
}

}  // namespace ct
