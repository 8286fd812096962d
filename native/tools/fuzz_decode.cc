// libFuzzer harness for the decoder: any bytes in, never a crash, a leak or undefined
// behaviour out (built with ASan and UBSan), and every record it writes (entries and
// expectations) points inside its batch's text; spec records of any bytes build requests that
// fit their buffer. Build and run: scripts/fuzz.sh.
#include <cstdint>
#include <cstdlib>
#include <cstring>

#include "../batch_sink.h"
#include "../decode.h"
#include "../entry_specs.h"
#include "../expectation.h"
#include "../requests.h"

namespace {

void checkBatch(const ct::Batch& batch) {
  if (batch.records.size() != batch.count * ct::slot::kCount) std::abort();
  for (size_t i = 0; i < batch.count; ++i) {
    const uint32_t* r = batch.records.data() + i * ct::slot::kCount;
    for (uint32_t tuple : {ct::slot::kOrig, ct::slot::kReply, ct::slot::kMaster}) {
      for (uint32_t end : {ct::slot::kTupleSrc, ct::slot::kTupleDst}) {
        uint32_t ref = r[tuple + end];
        if ((ref & ct::string_ref::kOffsetMask) + (ref >> ct::string_ref::kLengthShift) > batch.text.size()) std::abort();
      }
    }
    if (r[ct::slot::kSecctxOff] + r[ct::slot::kSecctxLen] > batch.text.size()) std::abort();
  }
}

// Expectation records: every string ref (four tuple blocks, helper, function) inside the text.
void checkExpectations(const ct::Batch& batch) {
  if (batch.records.size() != batch.count * ct::slot::kCount) std::abort();
  auto inside = [&](uint32_t ref) {
    if ((ref & ct::string_ref::kOffsetMask) + (ref >> ct::string_ref::kLengthShift) > batch.text.size()) std::abort();
  };
  for (size_t i = 0; i < batch.count; ++i) {
    const uint32_t* r = batch.records.data() + i * ct::slot::kCount;
    for (uint32_t tuple : {ct::expect_slot::kTuple, ct::expect_slot::kMask, ct::expect_slot::kMaster, ct::expect_slot::kNatTuple})
      for (uint32_t end : {ct::slot::kTupleSrc, ct::slot::kTupleDst}) inside(r[tuple + end]);
    inside(r[ct::expect_slot::kHelper]);
    inside(r[ct::expect_slot::kFn]);
    if (r[ct::expect_slot::kEvent] > ct::kEventDestroy) std::abort();
  }
}

class CountersSink : public ct::MessageSink {
 public:
  bool onMessage(const ct::MessageView& m, ct::SysError& err) override {
    std::vector<uint32_t> pairs;
    if (!ct::decodeCounters(m, pairs, err)) return false;
    if (pairs.size() % 2 != 0) std::abort();
    return true;
  }
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  ct::SysError err;
  ct::Batch batch;
  ct::KeySet seen;
  ct::decodeDatagramToBatch(data, size, nullptr, &seen, batch, err);
  checkBatch(batch);

  // Grouped by every key: the counts add up to the entries, and every group is a valid record.
  {
    std::vector<ct::SummaryKey> keys;
    for (uint8_t k = 0; k < ct::kSummaryKeyCount; ++k) keys.push_back(static_cast<ct::SummaryKey>(k));
    ct::Grouper grouper(keys);
    ct::Batch groups;
    ct::KeySet groupSeen;
    if (ct::decodeDatagramToBatch(data, size, nullptr, &groupSeen, groups, err, false, &grouper)) {
      checkBatch(groups);
      uint64_t total = 0;
      for (uint32_t c : groups.counts) total += c;
      if (groups.counts.size() != groups.count || total != batch.count) std::abort();
    }
  }

  // As event messages: every record's event type is one of the four.
  ct::Batch events;
  ct::decodeDatagramToBatch(data, size, nullptr, nullptr, events, err, true);
  checkBatch(events);
  for (size_t i = 0; i < events.count; ++i)
    if (events.records[i * ct::slot::kCount + ct::slot::kEvent] > ct::kEventDestroy) std::abort();

  // As expectation messages (a dump, then events): records of their own layout.
  ct::Batch expectations;
  ct::decodeDatagramToBatch(data, size, nullptr, nullptr, expectations, err, false, nullptr, true);
  checkExpectations(expectations);
  ct::Batch expectationEvents;
  ct::decodeDatagramToBatch(data, size, nullptr, nullptr, expectationEvents, err, true, nullptr, true);
  checkExpectations(expectationEvents);

  // The same bytes through a filter: the first bytes choose it.
  ct::Filter filter;
  if (size > 8) {
    filter.family = data[0] & 1 ? 2 : 10;
    filter.protocol = data[1] & 1 ? data[2] : -1;
    filter.tcpStates = data[3];
    filter.markMask = data[4];
    filter.zone = data[5] & 1 ? data[6] : -1;
    ct::AddressMatch address;
    address.family = filter.family;
    address.prefix = static_cast<uint8_t>(data[7] % (filter.family == 2 ? 33 : 129));
    address.tuple = data[8] & 1;
    address.end = (data[8] >> 1) & 1;
    filter.addresses.push_back(address);
  }
  ct::Batch filtered;
  ct::decodeDatagramToBatch(data, size, &filter, nullptr, filtered, err);
  checkBatch(filtered);
  if (filtered.count > batch.count + 64) std::abort();

  // Requests built from the filter fit their buffer or are refused, never overrun.
  uint8_t request[512];
  ct::buildDumpRequest(request, sizeof request, 1, &filter);
  ct::buildFilteredFlushRequest(request, sizeof request, 1, filter);
  // Spec records (JS's bulk input) of any bytes build requests that fit, or are refused.
  if (size >= ct::spec_slot::kCount * sizeof(uint32_t)) {
    std::vector<uint32_t> records(ct::spec_slot::kCount);
    std::memcpy(records.data(), data, records.size() * sizeof(uint32_t));
    ct::EntrySpec spec;
    ct::readSpecRecord(records.data(), 0, spec);
    for (ct::EntryOp op : {ct::EntryOp::kCreate, ct::EntryOp::kUpdate, ct::EntryOp::kDelete})
      ct::buildEntryRequest(request, sizeof request, op, 1, spec);
  }

  CountersSink counters;
  bool done = false;
  ct::walkDatagram(data, size, 0, counters, done, err);
  return 0;
}
