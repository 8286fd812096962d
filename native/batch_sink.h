// The batch sink: where decoded messages become records. It decodes each conntrack message,
// filters it, drops repeats and appends it to a batch (or counts it into a summary's groups),
// and hands over each full batch. The dump thread (ct_dump.cc), the binding's decode() for tests,
// the fuzzer and the decoder benchmark all decode through it.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <functional>

#include "dedup.h"
#include "filter.h"
#include "records.h"
#include "summary.h"
#include "sys_error.h"
#include "wire.h"

namespace ct {

// What a dump's decoding saw; atomics because another thread reads them while it runs.
struct DecodeCounters {
  std::atomic<uint64_t> messages{0};     // conntrack messages decoded
  std::atomic<uint64_t> duplicates{0};   // dropped as repeats
  std::atomic<uint64_t> filteredOut{0};  // dropped by the native filter
  std::atomic<bool> kernelFiltered{false};  // the kernel marked a reply NLM_F_DUMP_FILTERED
};

// Decodes conntrack messages, filters them (`filter` may be null), drops repeats (`seen`
// may be null) and appends records to `batch`. When `batchFull` is set and the batch reaches
// `batchSize` entries (or its text grows large), it is called; returning false ends the walk
// with `stopped` set.
class EntrySink : public MessageSink {
 public:
  EntrySink(const Filter* filter, KeySet* seen, Batch& batch, DecodeCounters* counters = nullptr,
            size_t batchSize = 0, std::function<bool()> batchFull = nullptr)
      : filter_(filter), seen_(seen), batch_(batch), counters_(counters), batchSize_(batchSize),
        batchFull_(std::move(batchFull)) {}

  bool onMessage(const MessageView& message, SysError& err) override;
  // Expectation messages become expectation records (record_layout.h expect_slot) and entries
  // are skipped; otherwise the other way round: a batch holds records of one kind.
  bool expectations = false;
  bool stopped = false;
  // Event messages: record each one's EventType (dump answers carry the same message types).
  bool classifyEvents = false;
  // Summaries: entries are counted here instead of written as records.
  Grouper* grouper = nullptr;
  // A mirror: entries go here instead of into records.
  std::function<void(const Entry&)> consumer;

 private:
  bool onExpectation(const MessageView& message, SysError& err);
  const Filter* filter_;
  KeySet* seen_;
  Batch& batch_;
  DecodeCounters* counters_;
  size_t batchSize_;
  std::function<bool()> batchFull_;
};

// Decodes a whole datagram of conntrack messages into `batch` (filtering and de-duplicating
// through `seen` when given; with `events`, recording each message's EventType). Used by the
// binding's decode() for tests, by the fuzzer and by the decoder benchmark.
// With `grouper`, the entries are counted there and its groups written as the batch's records.
// With `expectations`, the datagram's expectation messages instead (no filter, no grouping).
bool decodeDatagramToBatch(const uint8_t* data, size_t len, const Filter* filter, KeySet* seen,
                           Batch& batch, SysError& err, bool events = false, Grouper* grouper = nullptr,
                           bool expectations = false);

}  // namespace ct
