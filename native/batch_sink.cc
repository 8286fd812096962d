#include "batch_sink.h"

#include <linux/netlink.h>

#include <cstdint>

#include "decode.h"
#include "expectation.h"

namespace ct {

bool EntrySink::onMessage(const MessageView& m, SysError& err) {
  if (expectations) return m.kind == MessageKind::kExpectation ? onExpectation(m, err) : true;
  if (m.kind != MessageKind::kEntry) return true;
  if (counters_) {
    counters_->messages.fetch_add(1, std::memory_order_relaxed);
    if (m.flags & NLM_F_DUMP_FILTERED) counters_->kernelFiltered.store(true, std::memory_order_relaxed);
  }
  Entry e;
  if (!decodeEntry(m, e, err)) return false;
  if (classifyEvents) e.event = eventTypeOf(m);
  if (filter_ && !matches(*filter_, e)) {
    if (counters_) counters_->filteredOut.fetch_add(1, std::memory_order_relaxed);
    return true;
  }
  // A dump that resumes inside a changed hash bucket can send an entry twice.
  if (seen_ && !seen_->insert(dedupKey(e))) {
    if (counters_) counters_->duplicates.fetch_add(1, std::memory_order_relaxed);
    return true;
  }
  if (grouper) {
    grouper->add(e);
    return true;
  }
  if (consumer) {
    consumer(e);
    return true;
  }
  appendRecord(batch_, e);
  // A batch holds at most batchSize entries, even in the middle of a datagram.
  if (batchFull_ && (batch_.count >= batchSize_ || batch_.text.size() >= kMaxBatchText) && !batchFull_()) {
    stopped = true;
    return false;
  }
  return true;
}

// Expectation messages (expectation.*), as event subscriptions to the expectation groups get them:
// one record each, unfiltered (filters describe entries), not de-duplicated (events come once).
bool EntrySink::onExpectation(const MessageView& m, SysError& err) {
  if (counters_) counters_->messages.fetch_add(1, std::memory_order_relaxed);
  Expectation e;
  if (!decodeExpectation(m, e, err)) return false;
  if (classifyEvents) e.event = eventTypeOf(m);
  appendExpectationRecord(batch_, e);
  if (batchFull_ && (batch_.count >= batchSize_ || batch_.text.size() >= kMaxBatchText) && !batchFull_()) {
    stopped = true;
    return false;
  }
  return true;
}

bool decodeDatagramToBatch(const uint8_t* data, size_t len, const Filter* filter, KeySet* seen,
                           Batch& batch, SysError& err, bool events, Grouper* grouper, bool expectations) {
  EntrySink sink(filter, seen, batch);
  sink.classifyEvents = events;
  sink.grouper = expectations ? nullptr : grouper;
  sink.expectations = expectations;
  bool done = false;
  if (!walkDatagram(data, len, 0, sink, done, err)) return false;
  if (sink.grouper) grouper->emit(batch, SIZE_MAX, [] { return true; });
  return true;
}

}  // namespace ct
