// Conversion between JS values and the native structs: errors, batches, statistics, filters,
// entry specs, summary keys and the record layout. lib/binding/native.ts states the JS side.
#pragma once

#include <napi.h>

#include <cstdint>
#include <vector>

#include "expectation.h"
#include "filter.h"
#include "record_layout.h"
#include "records.h"
#include "requests.h"
#include "sys_error.h"
#include "transaction.h"

namespace ct::addon {

// An Error with errno, syscall, detail and protocol properties, as lib/ expects.
Napi::Error toJsError(Napi::Env env, const SysError& err);

// Runs the body of a callback from the event loop (an AsyncWorker's OnOK or OnError, a call of a
// thread-safe function) that settles `deferred`. Nothing may escape such a callback: node-addon-api
// would rethrow it into JS, and while the environment is torn down (a worker being terminated) JS
// cannot run, so that rethrow fails with a C++ exception that ends the whole process. A failure
// rejects the promise while JS can run; when it cannot, the result is dropped quietly.
template <typename Body>
void settleFromLoop(Napi::Env env, Napi::Promise::Deferred* deferred, Body&& body) noexcept {
  try {
    body();
    return;
  } catch (const Napi::Error& e) {
    if (deferred == nullptr) return;
    try {
      deferred->Reject(e.Value());
    } catch (...) {
    }
  } catch (...) {
    if (deferred == nullptr) return;
    try {
      deferred->Reject(toJsError(env, SysError::fromCurrentException("callback")).Value());
    } catch (...) {
    }
  }
}

// { records: ArrayBuffer (owned by JS from now on), count, strings, overflowsBefore, counts? }.
Napi::Object batchToJs(Napi::Env env, ct::Batch&& batch);

// A finished transaction's answer: stats pairs, per-CPU rows, or a batch (entry requests).
Napi::Value transactionResult(Napi::Env env, ct::Transaction& t);

// False for null or undefined (no filter). A value of the wrong type or out of range throws a
// TypeError or RangeError (as every reader here): nothing unchecked reaches native structs.
bool readFilter(const Napi::Value& value, ct::Filter& f);

void readEntrySpec(const Napi::Value& value, ct::EntrySpec& s);

// An integer argument in [min, max], else a TypeError or RangeError naming it.
double integerArgument(const Napi::Value& value, const char* what, double min, double max);

// { family, master?, tuple?, mask?, natTuple? (tuples as readEntrySpec's), timeout?, id?, zone?,
// flags?, class?, natDir?, helper?, fn? }, validated by lib/table/expectations.ts.
void readExpectationSpec(const Napi::Value& value, ct::ExpectationSpec& s);

// Summary key numbers (ct::SummaryKey); anything but an array is no summary.
std::vector<ct::SummaryKey> readSummaryKeys(Napi::Env env, const Napi::Value& value);

// kLayoutConstants as { group: { name: value } }.
Napi::Object layoutToJs(Napi::Env env);

}  // namespace ct::addon
