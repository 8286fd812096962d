// The JS binding's module: what it exports. The binding converts between JS values and the
// native layers, nothing more (addon_values.*: conversion; addon_handle.*, addon_dump.*: the
// handle and dump objects; addon_workers.*: work on the thread pool). Kernel I/O happens on
// non-blocking sockets or off the main thread.
#include <napi.h>

#include <memory>

#include "addon.h"
#include "addon_bulk.h"
#include "addon_dump.h"
#include "addon_mirror.h"
#include "addon_handle.h"
#include "addon_values.h"
#include "addon_workers.h"
#include "batch_sink.h"

namespace ct::addon {
namespace {

// decode(datagram, filter | null, events?, summaryKeys?, expectations?): one captured datagram's batch (tests).
Napi::Value Decode(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsTypedArray() || info[0].As<Napi::TypedArray>().TypedArrayType() != napi_uint8_array)
    throw Napi::TypeError::New(env, "datagram must be a Uint8Array");
  Napi::Uint8Array data = info[0].As<Napi::Uint8Array>();
  ct::Filter filter;
  bool hasFilter = info.Length() > 1 && readFilter(info[1], filter);
  // Third argument true: decode as event messages (no de-duplication, event types recorded).
  bool events = info.Length() > 2 && info[2].ToBoolean().Value();
  // Fourth argument, summary key numbers: the datagram's group counts instead of its entries.
  std::unique_ptr<ct::Grouper> grouper;
  if (info.Length() > 3 && info[3].IsArray()) grouper = std::make_unique<ct::Grouper>(readSummaryKeys(env, info[3]));
  // Fifth argument true: the datagram's expectation messages, as expectation records.
  bool expectations = info.Length() > 4 && info[4].ToBoolean().Value();
  ct::Batch batch;
  ct::KeySet seen;
  SysError err;
  if (!ct::decodeDatagramToBatch(data.Data(), data.ByteLength(), hasFilter ? &filter : nullptr,
                                 events ? nullptr : &seen, batch, err, events, grouper.get(), expectations))
    throw toJsError(env, err);
  return batchToJs(env, std::move(batch));
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  auto* data = new AddonData();
  data->dumpConstructor = Napi::Persistent(defineDumpClass(env));
  data->handleConstructor = Napi::Persistent(defineHandleClass(env));
  data->mirrorConstructor = Napi::Persistent(defineMirrorClass(env));
  data->bulkConstructor = Napi::Persistent(defineBulkClass(env));
  data->deleteRunConstructor = Napi::Persistent(defineDeleteRunClass(env));
  env.SetInstanceData(data);  // deleted with the environment
  exports.Set("open", Napi::Function::New(env, openHandle));
  exports.Set("netnsReadFile", Napi::Function::New(env, netnsReadFile));
  exports.Set("netnsWriteFile", Napi::Function::New(env, netnsWriteFile));
  exports.Set("netnsListDir", Napi::Function::New(env, netnsListDir));
  exports.Set("decode", Napi::Function::New(env, Decode));
  exports.Set("layout", layoutToJs(env));
  exports.Set("flushSupport", Napi::Function::New(env, flushSupportToJs));
  return exports;
}

}  // namespace
}  // namespace ct::addon

using ct::addon::Init;
NODE_API_MODULE(conntrack, Init)
