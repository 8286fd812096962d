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

// { records: ArrayBuffer (owned by JS from now on), count, strings, overflowsBefore, counts? }.
Napi::Object batchToJs(Napi::Env env, ct::Batch&& batch);

// A finished transaction's answer: stats pairs, per-CPU rows, or a batch (entry requests).
Napi::Value transactionResult(Napi::Env env, ct::Transaction& t);

// False for null or undefined (no filter).
bool readFilter(const Napi::Value& value, ct::Filter& f);

void readEntrySpec(const Napi::Object& o, ct::EntrySpec& s);

// { family, master?, tuple?, mask?, natTuple? (tuples as readEntrySpec's), timeout?, id?, zone?,
// flags?, class?, natDir?, helper?, fn? }, validated by lib/table/expectations.ts.
void readExpectationSpec(const Napi::Object& o, ct::ExpectationSpec& s);

// Summary key numbers (ct::SummaryKey); anything but an array is no summary.
std::vector<ct::SummaryKey> readSummaryKeys(Napi::Env env, const Napi::Value& value);

// kLayoutConstants as { group: { name: value } }.
Napi::Object layoutToJs(Napi::Env env);

}  // namespace ct::addon
