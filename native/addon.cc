// The JS binding: converts between JS values and the native layers, nothing more.
// Kernel I/O happens on non-blocking sockets or off the main thread.
#include <napi.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <memory>
#include <type_traits>
#include <mutex>
#include <string>
#include <vector>

#include "ct_codec.h"
#include "ct_dump.h"
#include "ct_request.h"
#include "netlink_socket.h"
#include "netns.h"

namespace {

using ct::SysError;

Napi::Error toJsError(Napi::Env env, const SysError& err) {
  std::string message;
  if (err.protocol) {
    message = "malformed kernel message: " + err.detail;
  } else if (err.errnum == 0) {  // a C++ exception without an errno
    message = err.op + " failed";
    if (!err.detail.empty()) message += " (" + err.detail + ")";
  } else {
    message = err.op + ": " + std::strerror(err.errnum);
    if (!err.detail.empty()) message += " (" + err.detail + ")";
  }
  Napi::Error e = Napi::Error::New(env, message);
  Napi::Object obj = e.Value();
  if (err.errnum != 0) obj.Set("errno", Napi::Number::New(env, err.errnum));
  obj.Set("syscall", Napi::String::New(env, err.op));
  if (!err.detail.empty()) obj.Set("detail", Napi::String::New(env, err.detail));
  if (err.protocol) obj.Set("protocol", Napi::Boolean::New(env, true));
  return e;
}

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

Napi::Array pairsToArray(Napi::Env env, const std::vector<uint32_t>& pairs) {
  Napi::Array out = Napi::Array::New(env, pairs.size());
  for (size_t i = 0; i < pairs.size(); ++i) out.Set(static_cast<uint32_t>(i), Napi::Number::New(env, pairs[i]));
  return out;
}

Napi::Object batchToJs(Napi::Env env, ct::Batch&& batch);

Napi::Value transactionResult(Napi::Env env, ct::Transaction& t) {
  if (t.kind() == ct::Transaction::Kind::kGlobalStats) return pairsToArray(env, t.pairs());
  if (t.kind() == ct::Transaction::Kind::kEntry) return batchToJs(env, std::move(t.batch()));
  Napi::Array rows = Napi::Array::New(env, t.rows().size());
  for (size_t i = 0; i < t.rows().size(); ++i) {
    Napi::Object row = Napi::Object::New(env);
    row.Set("cpu", Napi::Number::New(env, t.rows()[i].cpu));
    row.Set("attrs", pairsToArray(env, t.rows()[i].pairs));
    rows.Set(static_cast<uint32_t>(i), row);
  }
  return rows;
}

// Constructors per environment (worker threads each load the addon into their own).
struct AddonData {
  Napi::FunctionReference dumpConstructor;
  Napi::FunctionReference handleConstructor;
};

// ---- filter conversion ----------------------------------------------------------------------

uint32_t u32Of(const Napi::Object& o, const char* key) {
  return o.Get(key).As<Napi::Number>().Uint32Value();
}

bool readFilter(const Napi::Value& value, ct::Filter& f) {
  if (value.IsNull() || value.IsUndefined()) return false;
  Napi::Object o = value.As<Napi::Object>();
  f.family = static_cast<uint8_t>(u32Of(o, "family"));
  f.protocol = o.Get("protocol").As<Napi::Number>().Int32Value();
  f.tcpStates = u32Of(o, "tcpStates");
  f.markValue = u32Of(o, "markValue");
  f.markMask = u32Of(o, "markMask");
  f.zone = o.Get("zone").As<Napi::Number>().Int32Value();
  f.statusSet = u32Of(o, "statusSet");
  f.statusUnset = u32Of(o, "statusUnset");
  f.kernel = o.Get("kernel").ToBoolean().Value();
  Napi::Array addresses = o.Get("addresses").As<Napi::Array>();
  for (uint32_t i = 0; i < addresses.Length(); ++i) {
    Napi::Object a = addresses.Get(i).As<Napi::Object>();
    ct::AddressMatch m;
    m.tuple = static_cast<uint8_t>(u32Of(a, "tuple"));
    m.end = static_cast<uint8_t>(u32Of(a, "end"));
    m.family = static_cast<uint8_t>(u32Of(a, "family"));
    m.prefix = static_cast<uint8_t>(u32Of(a, "prefix"));
    Napi::Uint8Array bytes = a.Get("bytes").As<Napi::Uint8Array>();
    size_t want = m.family == AF_INET6 ? 16 : 4;
    if (bytes.ByteLength() != want || m.prefix > want * 8)
      throw Napi::TypeError::New(value.Env(), "address filter: wrong address length or prefix");
    std::memcpy(m.bytes, bytes.Data(), want);
    f.addresses.push_back(m);
  }
  Napi::Array ports = o.Get("ports").As<Napi::Array>();
  for (uint32_t i = 0; i < ports.Length(); ++i) {
    Napi::Object p = ports.Get(i).As<Napi::Object>();
    ct::PortMatch m;
    m.tuple = static_cast<uint8_t>(u32Of(p, "tuple"));
    m.end = static_cast<uint8_t>(u32Of(p, "end"));
    m.low = static_cast<uint16_t>(u32Of(p, "low"));
    m.high = static_cast<uint16_t>(u32Of(p, "high"));
    f.ports.push_back(m);
  }
  return true;
}

// ---- entry requests -----------------------------------------------------------------------------

// A key set to undefined counts as absent, as in JS.
bool given(const Napi::Object& o, const char* key) { return o.Has(key) && !o.Get(key).IsUndefined(); }

// { src?, dst?: Uint8Array (4 or 16 bytes), proto?, sport?, dport?, icmpType?, icmpCode?, icmpId?,
// zone? }: the parts given are sent. lib/table/entry-spec.ts validates every value first.
void readTuple(const Napi::Value& value, ct::Tuple& t) {
  if (!value.IsObject()) return;
  Napi::Object o = value.As<Napi::Object>();
  auto address = [&](const char* key, uint8_t* out, uint32_t bit) {
    if (!given(o, key)) return;
    Napi::Uint8Array bytes = o.Get(key).As<Napi::Uint8Array>();
    std::memcpy(out, bytes.Data(), std::min<size_t>(bytes.ByteLength(), 16));
    t.has |= bit;
  };
  address("src", t.srcAddr, ct::kTupleHasSrc);
  address("dst", t.dstAddr, ct::kTupleHasDst);
  if (given(o, "proto")) {
    t.proto = static_cast<uint8_t>(u32Of(o, "proto"));
    t.has |= ct::kTupleHasProto;
  }
  if (given(o, "sport")) {
    t.sport = static_cast<uint16_t>(u32Of(o, "sport"));
    t.dport = static_cast<uint16_t>(u32Of(o, "dport"));
    t.has |= ct::kTupleHasPorts;
  }
  if (given(o, "icmpType")) {
    t.icmpType = static_cast<uint8_t>(u32Of(o, "icmpType"));
    t.icmpCode = static_cast<uint8_t>(u32Of(o, "icmpCode"));
    t.icmpId = static_cast<uint16_t>(u32Of(o, "icmpId"));
    t.has |= ct::kTupleHasIcmp;
  }
  if (given(o, "zone")) {
    t.zone = static_cast<uint16_t>(u32Of(o, "zone"));
    t.has |= ct::kTupleHasZone;
  }
}

void readEntrySpec(const Napi::Object& o, ct::EntrySpec& s) {
  s.family = static_cast<uint8_t>(u32Of(o, "family"));
  readTuple(o.Get("orig"), s.orig);
  readTuple(o.Get("reply"), s.reply);
  auto optional = [&](const char* key, bool& has, auto& field) {
    if (!given(o, key)) return;
    has = true;
    field = static_cast<std::remove_reference_t<decltype(field)>>(u32Of(o, key));
  };
  optional("id", s.hasId, s.id);
  optional("mark", s.hasMark, s.mark);
  optional("timeout", s.hasTimeout, s.timeout);
  optional("status", s.hasStatus, s.status);
  optional("tcpState", s.hasTcpState, s.tcpState);
  optional("zone", s.hasZone, s.zone);
  auto bits = [&](const char* key, bool& has, uint32_t (&out)[4]) {
    if (!given(o, key)) return;
    Napi::Uint32Array words = o.Get(key).As<Napi::Uint32Array>();
    for (size_t i = 0; i < 4 && i < words.ElementLength(); ++i) out[i] = words[i];
    has = true;
  };
  bits("labels", s.hasLabels, s.labels);
  bits("labelsMask", s.hasLabelsMask, s.labelsMask);
}

// Summary key numbers (ct::SummaryKey); anything but an array is no summary.
std::vector<ct::SummaryKey> readSummaryKeys(Napi::Env env, const Napi::Value& value) {
  std::vector<ct::SummaryKey> keys;
  if (!value.IsArray()) return keys;
  Napi::Array list = value.As<Napi::Array>();
  for (uint32_t i = 0; i < list.Length(); ++i) {
    uint32_t k = list.Get(i).As<Napi::Number>().Uint32Value();
    if (k >= ct::kSummaryKeyCount) throw Napi::RangeError::New(env, "unknown summary key");
    keys.push_back(static_cast<ct::SummaryKey>(k));
  }
  return keys;
}

// ---- batches ----------------------------------------------------------------------------------

Napi::Object batchToJs(Napi::Env env, ct::Batch&& batch) {
  Napi::Object out = Napi::Object::New(env);
  size_t bytes = batch.count * ct::slot::kCount * sizeof(uint32_t);
  out.Set("overflowsBefore", Napi::Number::New(env, batch.overflowsBefore));
  if (!batch.counts.empty()) {
    Napi::Uint32Array counts = Napi::Uint32Array::New(env, batch.counts.size());
    std::copy(batch.counts.begin(), batch.counts.end(), counts.Data());
    out.Set("counts", counts);
  }
  if (bytes == 0) {
    out.Set("records", Napi::ArrayBuffer::New(env, 0));
    out.Set("count", Napi::Number::New(env, 0));
    out.Set("strings", Napi::String::New(env, ""));
    return out;
  }
  // Hand the record memory to JS without copying; JS frees it with the ArrayBuffer.
  auto* owned = new std::vector<uint32_t>(std::move(batch.records));
  Napi::ArrayBuffer records = Napi::ArrayBuffer::New(
      env, owned->data(), bytes, [](Napi::Env, void*, std::vector<uint32_t>* v) { delete v; }, owned);
  out.Set("records", records);
  out.Set("count", Napi::Number::New(env, static_cast<double>(batch.count)));
  // Latin-1: one char per byte, so JS slices the text at the byte offsets the records hold.
  napi_value text;
  NAPI_THROW_IF_FAILED(env, napi_create_string_latin1(env, batch.text.data(), batch.text.size(), &text), out);
  out.Set("strings", text);
  return out;
}

// ---- dumps ----------------------------------------------------------------------------------

// Shared by the JS wrapper and the thread-safe function's calls, which may arrive after the
// wrapper is gone.
struct DumpState {
  std::unique_ptr<ct::DumpSession> session;
  Napi::ThreadSafeFunction wake;
  bool wakeLive = false;
  std::unique_ptr<Napi::Promise::Deferred> pending;
  bool ended = false;  // end or error delivered, or closed
  bool hookRegistered = false;
  Napi::Env env;

  static void OnTeardown(void* arg) {
    auto* self = static_cast<DumpState*>(arg);
    self->hookRegistered = false;
    self->close(true);
  }
  explicit DumpState(Napi::Env e) : env(e) {}

  // The session's threads call `wake` until they are joined: stop them first, or a thread that
  // published the end and was descheduled before its last call finds `wake` freed.
  void releaseWake() {
    if (session) session->stop();
    if (wakeLive) {
      wake.Release();
      wakeLive = false;
    }
  }

  // Main thread: settle the pending read if the session has something.
  void drain() {
    if (!pending) return;
    ct::Batch batch;
    SysError err;
    switch (ended ? ct::DumpSession::Take::kEnd : session->take(batch, err)) {
      case ct::DumpSession::Take::kNothing:
        return;
      case ct::DumpSession::Take::kBatch:
        settle([&](Napi::Promise::Deferred& d) { d.Resolve(batchToJs(env, std::move(batch))); });
        return;
      case ct::DumpSession::Take::kEnd:
        ended = true;
        settle([&](Napi::Promise::Deferred& d) { d.Resolve(env.Null()); });
        releaseWake();
        return;
      case ct::DumpSession::Take::kError:
        ended = true;
        settle([&](Napi::Promise::Deferred& d) { d.Reject(toJsError(env, err).Value()); });
        releaseWake();
        return;
    }
  }

  template <typename F>
  void settle(F&& settleWith) {
    std::unique_ptr<Napi::Promise::Deferred> deferred = std::move(pending);
    settleFromLoop(env, deferred.get(), [&] { settleWith(*deferred); });
    if (wakeLive) wake.Unref(env);  // nobody waits: let the process exit
  }

  // `teardown`: the environment is going away; settle nothing, just stop the thread.
  void close(bool teardown = false) {
    if (session) session->stop();
    ended = true;
    if (pending && !teardown) settle([&](Napi::Promise::Deferred& d) { d.Resolve(env.Null()); });
    pending.reset();
    releaseWake();
  }
};

class DumpWrap : public Napi::ObjectWrap<DumpWrap> {
 public:

  static Napi::Function Init(Napi::Env env) {
    return DefineClass(env, "NativeDump",
                       {InstanceMethod<&DumpWrap::Read>("read"), InstanceMethod<&DumpWrap::Close>("close"),
                        InstanceMethod<&DumpWrap::Counters>("counters")});
  }

  explicit DumpWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<DumpWrap>(info) {}

  ~DumpWrap() override {
    if (state_) {
      if (state_->hookRegistered) napi_remove_env_cleanup_hook(state_->env, &DumpState::OnTeardown, state_.get());
      state_->hookRegistered = false;
      state_->close();
    }
  }

  void Begin(Napi::Env env, int nsFd, const ct::Filter* filter, size_t batchSize,
             const ct::EventOptions* events = nullptr, std::vector<ct::SummaryKey> summary = {}) {
    state_ = std::make_shared<DumpState>(env);
    std::shared_ptr<DumpState> state = state_;
    state->wake = Napi::ThreadSafeFunction::New(env, Napi::Function::New(env, [](const Napi::CallbackInfo&) {}),
                                                "conntrack-dump", 0, 1);
    state->wakeLive = true;
    state->wake.Unref(env);
    Napi::ThreadSafeFunction wake = state->wake;
    std::weak_ptr<DumpState> weak = state;
    state->session = std::make_unique<ct::DumpSession>(nsFd, filter, batchSize, [wake, weak]() mutable {
      // Dump thread: ask the main thread to drain. The state may be gone by the time it runs.
      try {
        wake.NonBlockingCall([weak](Napi::Env env, Napi::Function) {
          if (auto s = weak.lock()) settleFromLoop(env, nullptr, [&] { s->drain(); });
        });
      } catch (...) {  // bad_alloc: this wake-up is lost, not the process
      }
    }, events);
    if (!summary.empty()) state->session->summarizeBy(std::move(summary));
    // The session calls `wake` from its thread until stop() joins it; stop() runs before Release().
    // The environment may end before this wrapper is collected: stop the thread then.
    napi_add_env_cleanup_hook(env, &DumpState::OnTeardown, state.get());
    state->hookRegistered = true;
    SysError err;
    if (!state->session->start(err)) {
      state->close();  // gives the wake-up function back now, not when JS collects this object
      throw toJsError(env, err);
    }
  }

 private:
  Napi::Value Read(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    auto deferred = std::make_unique<Napi::Promise::Deferred>(env);
    Napi::Promise promise = deferred->Promise();
    if (state_->pending) {
      deferred->Reject(Napi::Error::New(env, "a read is already pending").Value());
      return promise;
    }
    state_->pending = std::move(deferred);
    if (!state_->wakeLive) {
      state_->drain();
      return promise;
    }
    state_->wake.Ref(env);  // someone waits: keep the loop alive
    // Settle in a later turn of the event loop even when a batch is ready now: a consumer
    // that awaits batch after batch would otherwise run them all in one microtask queue
    // and starve timers and I/O.
    std::weak_ptr<DumpState> weak = state_;
    state_->wake.NonBlockingCall([weak](Napi::Env env, Napi::Function) {
      if (auto s = weak.lock()) settleFromLoop(env, nullptr, [&] { s->drain(); });
    });
    return promise;
  }

  Napi::Value Close(const Napi::CallbackInfo& info) {
    state_->close();
    return info.Env().Undefined();
  }

  Napi::Value Counters(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    ct::DumpCounters c = state_->session ? state_->session->counters() : ct::DumpCounters{};
    Napi::Object o = Napi::Object::New(env);
    o.Set("messages", Napi::Number::New(env, static_cast<double>(c.messages)));
    o.Set("entries", Napi::Number::New(env, static_cast<double>(c.entries)));
    o.Set("duplicates", Napi::Number::New(env, static_cast<double>(c.duplicates)));
    o.Set("filteredOut", Napi::Number::New(env, static_cast<double>(c.filteredOut)));
    o.Set("kernelFiltered", Napi::Boolean::New(env, c.kernelFiltered));
    o.Set("overflows", Napi::Number::New(env, static_cast<double>(c.overflows)));
    return o;
  }

  std::shared_ptr<DumpState> state_;
};

// ---- handles ----------------------------------------------------------------------------------

class HandleWrap;

// Finishes a request whose answer was not queued yet: waits on a pool thread.
class PendingRequest : public Napi::AsyncWorker {
 public:
  PendingRequest(Napi::Env env, HandleWrap* handle, std::unique_ptr<ct::Transaction> t)
      : Napi::AsyncWorker(env, "conntrack-request"), handle_(handle), transaction_(std::move(t)),
        deferred_(Napi::Promise::Deferred::New(env)) {}
  Napi::Promise Promise() { return deferred_.Promise(); }
  void Execute() override;
  void OnOK() override;
  void OnError(const Napi::Error& e) override;

 private:
  void AwaitAnswer();
  HandleWrap* handle_;
  std::unique_ptr<ct::Transaction> transaction_;
  Napi::Promise::Deferred deferred_;
  SysError err_;
};

class HandleWrap : public Napi::ObjectWrap<HandleWrap> {
 public:

  static Napi::Function Init(Napi::Env env) {
    return DefineClass(env, "NativeHandle",
                       {InstanceMethod<&HandleWrap::GlobalStats>("globalStats"),
                        InstanceMethod<&HandleWrap::GlobalStatsFunction>("globalStatsFunction"),
                        InstanceMethod<&HandleWrap::CpuStats>("cpuStats"),
                        InstanceMethod<&HandleWrap::StartDump>("startDump"),
                        InstanceMethod<&HandleWrap::StartEvents>("startEvents"),
                        InstanceMethod<&HandleWrap::EntryRequest>("entryRequest"),
                        InstanceMethod<&HandleWrap::Flush>("flush"),
                        InstanceMethod<&HandleWrap::Close>("close")});
  }

  explicit HandleWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<HandleWrap>(info) {}
  ~HandleWrap() override { closeFds(); }

  void Adopt(int nsFd, int socketFd, uint32_t portId);
  ct::NetlinkSocket& socket() { return socket_; }
  std::vector<uint8_t>& buffer() { return buffer_; }
  void requestDone() { busy_ = false; Unref(); }

 private:
  // Sends one request and answers with `syncResult(env, transaction)` when the kernel already
  // replied (the usual case), else with a promise settled from a pool thread.
  template <typename SyncResult>
  Napi::Value Run(Napi::Env env, ct::Transaction::Kind kind, SyncResult&& syncResult) {
    if (closed_) throw Napi::Error::New(env, "closed");
    if (busy_) throw Napi::Error::New(env, "busy");
    // One transaction per kind, reused: a poller's call allocates nothing natively.
    std::unique_ptr<ct::Transaction>& t = transactions_[static_cast<size_t>(kind)];
    if (!t) t = std::make_unique<ct::Transaction>(kind);
    return RunTransaction(env, t, std::forward<SyncResult>(syncResult));
  }

  template <typename SyncResult>
  Napi::Value RunTransaction(Napi::Env env, std::unique_ptr<ct::Transaction>& t, SyncResult&& syncResult) {
    if (closed_) throw Napi::Error::New(env, "closed");
    if (busy_) throw Napi::Error::New(env, "busy");
    SysError err;
    if (!t->begin(socket_, err)) throw toJsError(env, err);
    int state = t->pump(socket_, buffer_, err);
    if (state < 0) throw toJsError(env, err);
    if (state == 1) return syncResult(env, *t);
    // Not answered within the send: finish off the main thread, and keep this handle alive.
    busy_ = true;
    Ref();
    auto* worker = new PendingRequest(env, this, std::move(t));
    Napi::Promise promise = worker->Promise();
    worker->Queue();
    return promise;
  }

  Napi::Value GlobalStats(const Napi::CallbackInfo& info) {
    return Run(info.Env(), ct::Transaction::Kind::kGlobalStats, transactionResult);
  }

  // globalStatsFunction() -> { call, out }: `call()` is globalStats() for a poller. It writes the
  // (attribute, value) pairs of a synchronous answer into `out` and returns their count (else a
  // promise of the pairs, as globalStats()). On this VM every syscall flushes the TLB, so each
  // page a call touches costs: the function carries the handle and the output memory, so a call
  // skips unwrapping the handle and typed-array lookups.
  struct StatsFunctionData {
    HandleWrap* handle;
    Napi::ObjectReference handleRef;  // strong: the handle lives as long as this function
    Napi::Reference<Napi::ArrayBuffer> outRef;
    uint32_t* out;
    size_t outLen;
  };

  static Napi::Value CallGlobalStats(const Napi::CallbackInfo& info) {
    auto* d = static_cast<StatsFunctionData*>(info.Data());
    return d->handle->Run(info.Env(), ct::Transaction::Kind::kGlobalStats, [d](Napi::Env env, const ct::Transaction& t) {
      size_t n = std::min(t.pairs().size(), d->outLen);
      std::copy(t.pairs().begin(), t.pairs().begin() + static_cast<std::ptrdiff_t>(n), d->out);
      return Napi::Number::New(env, static_cast<double>(n));
    });
  }

  Napi::Value GlobalStatsFunction(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    constexpr size_t kLen = 32;
    Napi::ArrayBuffer buffer = Napi::ArrayBuffer::New(env, kLen * sizeof(uint32_t));  // stable memory
    auto* d = new StatsFunctionData{this, Napi::Persistent(Value()), Napi::Persistent(buffer),
                                    static_cast<uint32_t*>(buffer.Data()), kLen};
    Napi::Function call = Napi::Function::New<CallGlobalStats>(env, "globalStats", d);
    call.AddFinalizer([](Napi::Env, StatsFunctionData* data) { delete data; }, d);
    Napi::Object result = Napi::Object::New(env);
    result.Set("call", call);
    result.Set("out", Napi::Uint32Array::New(env, kLen, buffer, 0));
    return result;
  }

  Napi::Value CpuStats(const Napi::CallbackInfo& info) {
    bool expectations = info.Length() > 0 && info[0].ToBoolean().Value();
    return Run(info.Env(), expectations ? ct::Transaction::Kind::kExpectationCpuStats : ct::Transaction::Kind::kCpuStats,
               transactionResult);
  }

  // entryRequest(op, spec): get / create / update / delete one entry; a batch (a GET's entry, else
  // empty) or a promise of one. flush(family): every entry of the namespace.
  Napi::Value EntryRequest(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    ct::EntrySpec spec;
    readEntrySpec(info[1].As<Napi::Object>(), spec);
    std::vector<uint8_t> request(1024);
    size_t len = ct::buildEntryRequest(request.data(), request.size(),
                                       static_cast<ct::EntryOp>(info[0].As<Napi::Number>().Uint32Value()), 0, spec);
    return RunRequest(env, std::move(request), len);
  }

  Napi::Value Flush(const Napi::CallbackInfo& info) {
    std::vector<uint8_t> request(64);
    size_t len = ct::buildFlushRequest(request.data(), request.size(), 0,
                                       static_cast<uint8_t>(info[0].As<Napi::Number>().Uint32Value()));
    return RunRequest(info.Env(), std::move(request), len);
  }

  Napi::Value RunRequest(Napi::Env env, std::vector<uint8_t> request, size_t len) {
    if (len == 0) throw Napi::Error::New(env, "request does not fit");
    request.resize(len);
    auto t = std::make_unique<ct::Transaction>(std::move(request));
    return RunTransaction(env, t, transactionResult);
  }

  Napi::Value StartDump(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (closed_) throw Napi::Error::New(env, "closed");
    ct::Filter filter;
    bool hasFilter = readFilter(info[0], filter);
    size_t batchSize = info[1].As<Napi::Number>().Uint32Value();
    // Third argument, key numbers (ct::SummaryKey): group counts instead of entries.
    std::vector<ct::SummaryKey> summary = info.Length() > 2 ? readSummaryKeys(env, info[2]) : std::vector<ct::SummaryKey>{};
    Napi::Object obj = env.GetInstanceData<AddonData>()->dumpConstructor.New({});
    DumpWrap::Unwrap(obj)->Begin(env, nsFd_, hasFilter ? &filter : nullptr, batchSize, nullptr, std::move(summary));
    return obj;
  }

  // startEvents(filter | null, batchSize, groups, receiveBufferBytes): a NativeDump that never ends.
  Napi::Value StartEvents(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (closed_) throw Napi::Error::New(env, "closed");
    ct::Filter filter;
    bool hasFilter = readFilter(info[0], filter);
    size_t batchSize = info[1].As<Napi::Number>().Uint32Value();
    ct::EventOptions events;
    events.groups = info[2].As<Napi::Number>().Uint32Value();
    events.receiveBufferBytes = static_cast<int>(info[3].As<Napi::Number>().Uint32Value());
    Napi::Object obj = env.GetInstanceData<AddonData>()->dumpConstructor.New({});
    DumpWrap::Unwrap(obj)->Begin(env, nsFd_, hasFilter ? &filter : nullptr, batchSize, &events);
    return obj;
  }

  Napi::Value Close(const Napi::CallbackInfo& info) {
    if (!busy_) closeFds();
    closed_ = true;
    return info.Env().Undefined();
  }

  // Everything native a closed handle held goes now, not when JS collects the wrapper (V8 does
  // not see native memory, so that can be much later).
  void closeFds() {
    socket_.close();
    if (nsFd_ >= 0) {
      ::close(nsFd_);
      nsFd_ = -1;
    }
    std::vector<uint8_t>().swap(buffer_);
    for (auto& t : transactions_) t.reset();
  }

  friend class PendingRequest;
  ct::NetlinkSocket socket_;
  std::unique_ptr<ct::Transaction> transactions_[3];  // stats, by Transaction::Kind
  std::vector<uint8_t> buffer_ = std::vector<uint8_t>(ct::kReceiveBufferSize);  // reused by every request
  int nsFd_ = -1;
  bool busy_ = false;
  bool closed_ = false;
};

void PendingRequest::Execute() {
  try {
    AwaitAnswer();
  } catch (...) {  // bad_alloc: reject the request, do not end the process
    err_ = SysError::fromCurrentException("ctnetlink request");
    SetError("request");
  }
}

void PendingRequest::AwaitAnswer() {
  ct::NetlinkSocket& socket = handle_->socket();
  for (int waited = 0; waited < 50; ++waited) {  // at most 5 s
    pollfd fd{socket.fd(), POLLIN, 0};
    int ready = ::poll(&fd, 1, 100);
    if (ready < 0 && errno != EINTR) {
      err_ = SysError::fromErrno(errno, "poll");
      SetError("poll");
      return;
    }
    int state = transaction_->pump(socket, handle_->buffer(), err_);
    if (state < 0) {
      SetError("request");
      return;
    }
    if (state == 1) return;
  }
  err_ = SysError::fromErrno(ETIMEDOUT, "ctnetlink request");
  SetError("timeout");
}

void PendingRequest::OnOK() {
  Napi::Env env = Env();
  settleFromLoop(env, &deferred_, [&] {
    bool closeAfter = handle_->closed_;
    if (closeAfter) handle_->closeFds();
    handle_->requestDone();
    deferred_.Resolve(transactionResult(env, *transaction_));
  });
}

void PendingRequest::OnError(const Napi::Error&) {
  Napi::Env env = Env();
  settleFromLoop(env, &deferred_, [&] {
    bool closeAfter = handle_->closed_;
    if (closeAfter) handle_->closeFds();
    handle_->requestDone();
    deferred_.Reject(toJsError(env, err_).Value());
  });
}

void HandleWrap::Adopt(int nsFd, int socketFd, uint32_t portId) {
  nsFd_ = nsFd;
  socket_.adopt(socketFd, portId);
}

// ---- async entry points -----------------------------------------------------------------------

class OpenWorker : public Napi::AsyncWorker {
 public:
  OpenWorker(Napi::Env env, std::string path, bool hasPath)
      : Napi::AsyncWorker(env, "conntrack-open"), path_(std::move(path)), hasPath_(hasPath),
        deferred_(Napi::Promise::Deferred::New(env)) {}
  Napi::Promise Promise() { return deferred_.Promise(); }

  void Execute() override {
    try {
      OpenSocket();
    } catch (...) {  // bad_alloc: reject, do not end the process
      err_ = SysError::fromCurrentException("open");
      SetError("open");
    }
  }

  void OpenSocket() {
    if (hasPath_) {
      nsFd_ = ct::openNetns(path_, err_);
      if (nsFd_ < 0) return SetError("netns");
    }
    auto openSocket = [this] { opened_ = socket_.open(true, err_); };
    if (nsFd_ >= 0) {
      if (!ct::runInNetns(nsFd_, openSocket, err_)) return SetError("setns");
    } else {
      openSocket();
    }
    if (!opened_) SetError("socket");
  }

  // Dropped while a worker is terminated: the socket and namespace fd close with this worker.
  void OnOK() override {
    settleFromLoop(Env(), &deferred_, [&] {
      Napi::Object obj = Env().GetInstanceData<AddonData>()->handleConstructor.New({});
      HandleWrap::Unwrap(obj)->Adopt(nsFd_, socket_.release(), socket_.portId());
      nsFd_ = -1;
      deferred_.Resolve(obj);
    });
  }

  void OnError(const Napi::Error&) override {
    settleFromLoop(Env(), &deferred_, [&] { deferred_.Reject(toJsError(Env(), err_).Value()); });
  }

  ~OpenWorker() override {
    if (nsFd_ >= 0) ::close(nsFd_);
  }

 private:
  std::string path_;
  bool hasPath_;
  Napi::Promise::Deferred deferred_;
  SysError err_;
  int nsFd_ = -1;
  ct::NetlinkSocket socket_;
  bool opened_ = false;
};

Napi::Value Open(const Napi::CallbackInfo& info) {
  bool hasPath = info.Length() > 0 && info[0].IsString();
  auto* worker = new OpenWorker(info.Env(), hasPath ? info[0].As<Napi::String>().Utf8Value() : "", hasPath);
  Napi::Promise promise = worker->Promise();
  worker->Queue();
  return promise;
}

// File operations inside a network namespace (procfs and sysfs views follow it).
class NetnsFileWorker : public Napi::AsyncWorker {
 public:
  enum class Op { kRead, kWrite, kList };
  NetnsFileWorker(Napi::Env env, Op op, std::string ns, std::string path, std::string data)
      : Napi::AsyncWorker(env, "conntrack-netns-file"), op_(op), ns_(std::move(ns)), path_(std::move(path)),
        data_(std::move(data)), deferred_(Napi::Promise::Deferred::New(env)) {}
  Napi::Promise Promise() { return deferred_.Promise(); }

  void Execute() override {
    try {
      InNetns();
    } catch (...) {  // bad_alloc: reject, do not end the process
      err_ = SysError::fromCurrentException("netns file");
      SetError("file");
    }
  }

  void InNetns() {
    int nsFd = ct::openNetns(ns_, err_);
    if (nsFd < 0) return SetError("netns");
    bool entered = ct::runInNetns(nsFd, [this] { perform(); }, err_);
    ::close(nsFd);
    if (!entered || failed_) SetError("file");
  }

  void OnOK() override {
    settleFromLoop(Env(), &deferred_, [&] { Settle(); });
  }

  void Settle() {
    Napi::Env env = Env();
    switch (op_) {
      case Op::kRead:
        deferred_.Resolve(Napi::String::New(env, result_));
        break;
      case Op::kWrite:
        deferred_.Resolve(env.Undefined());
        break;
      case Op::kList: {
        Napi::Array names = Napi::Array::New(env, entries_.size());
        for (size_t i = 0; i < entries_.size(); ++i) names.Set(static_cast<uint32_t>(i), entries_[i]);
        deferred_.Resolve(names);
        break;
      }
    }
  }
  void OnError(const Napi::Error&) override {
    settleFromLoop(Env(), &deferred_, [&] { deferred_.Reject(toJsError(Env(), err_).Value()); });
  }

 private:
  void fail(const char* op) {
    err_ = SysError::fromErrno(errno, std::string(op) + " " + path_);
    failed_ = true;
  }

  void perform() {
    std::string path = ct::threadLocalProcPath(path_);
    if (op_ == Op::kList) {
      DIR* dir = ::opendir(path.c_str());
      if (!dir) return fail("opendir");
      while (dirent* d = ::readdir(dir)) {
        if (std::strcmp(d->d_name, ".") != 0 && std::strcmp(d->d_name, "..") != 0) entries_.emplace_back(d->d_name);
      }
      ::closedir(dir);
      return;
    }
    int fd = ::open(path.c_str(), (op_ == Op::kRead ? O_RDONLY : O_WRONLY | O_TRUNC) | O_CLOEXEC);
    if (fd < 0) return fail("open");
    if (op_ == Op::kRead) {
      char buf[4096];
      for (;;) {
        ssize_t n = ::read(fd, buf, sizeof buf);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) {
          fail("read");
          break;
        }
        if (n == 0) break;
        result_.append(buf, static_cast<size_t>(n));
      }
    } else {
      ssize_t n = ::write(fd, data_.data(), data_.size());
      if (n < 0) fail("write");
    }
    ::close(fd);
  }

  Op op_;
  std::string ns_, path_, data_;
  Napi::Promise::Deferred deferred_;
  SysError err_;
  bool failed_ = false;
  std::string result_;
  std::vector<std::string> entries_;
};

Napi::Value NetnsFile(const Napi::CallbackInfo& info, NetnsFileWorker::Op op) {
  std::string ns = info[0].As<Napi::String>().Utf8Value();
  std::string path = info[1].As<Napi::String>().Utf8Value();
  std::string data = op == NetnsFileWorker::Op::kWrite ? info[2].As<Napi::String>().Utf8Value() : "";
  auto* worker = new NetnsFileWorker(info.Env(), op, std::move(ns), std::move(path), std::move(data));
  Napi::Promise promise = worker->Promise();
  worker->Queue();
  return promise;
}

Napi::Value Decode(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Uint8Array data = info[0].As<Napi::Uint8Array>();
  ct::Filter filter;
  bool hasFilter = info.Length() > 1 && readFilter(info[1], filter);
  // Third argument true: decode as event messages (no de-duplication, event types recorded).
  bool events = info.Length() > 2 && info[2].ToBoolean().Value();
  // Fourth argument, summary key numbers: the datagram's group counts instead of its entries.
  std::unique_ptr<ct::Grouper> grouper;
  if (info.Length() > 3 && info[3].IsArray()) grouper = std::make_unique<ct::Grouper>(readSummaryKeys(env, info[3]));
  ct::Batch batch;
  ct::KeySet seen;
  SysError err;
  if (!ct::decodeDatagramToBatch(data.Data(), data.ByteLength(), hasFilter ? &filter : nullptr,
                                 events ? nullptr : &seen, batch, err, events, grouper.get()))
    throw toJsError(env, err);
  return batchToJs(env, std::move(batch));
}

Napi::Object Layout(Napi::Env env) {
  Napi::Object o = Napi::Object::New(env);
  auto set = [&](const char* k, uint32_t v) { o.Set(k, Napi::Number::New(env, v)); };
  set("slots", ct::slot::kCount);
  set("present", ct::slot::kPresent);
  set("family", ct::slot::kFamily);
  set("id", ct::slot::kId);
  set("status", ct::slot::kStatus);
  set("timeout", ct::slot::kTimeout);
  set("mark", ct::slot::kMark);
  set("use", ct::slot::kUse);
  set("zone", ct::slot::kZone);
  set("secmark", ct::slot::kSecmark);
  set("orig", ct::slot::kOrig);
  set("reply", ct::slot::kReply);
  set("master", ct::slot::kMaster);
  set("counters", ct::slot::kCounters);
  set("timestamp", ct::slot::kTimestamp);
  set("tcp", ct::slot::kTcp);
  set("tcpFlags", ct::slot::kTcpFlags);
  set("sctp", ct::slot::kSctp);
  set("dccp", ct::slot::kDccp);
  set("helper", ct::slot::kHelper);
  set("secctxOff", ct::slot::kSecctxOff);
  set("labels", ct::slot::kLabels);
  set("seqAdjOrig", ct::slot::kSeqAdjOrig);
  set("seqAdjReply", ct::slot::kSeqAdjReply);
  set("synproxy", ct::slot::kSynproxy);
  set("event", ct::slot::kEvent);
  return o;
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  auto* data = new AddonData();
  data->dumpConstructor = Napi::Persistent(DumpWrap::Init(env));
  data->handleConstructor = Napi::Persistent(HandleWrap::Init(env));
  env.SetInstanceData(data);  // deleted with the environment
  exports.Set("open", Napi::Function::New(env, Open));
  exports.Set("netnsReadFile", Napi::Function::New(env, [](const Napi::CallbackInfo& i) {
    return NetnsFile(i, NetnsFileWorker::Op::kRead);
  }));
  exports.Set("netnsWriteFile", Napi::Function::New(env, [](const Napi::CallbackInfo& i) {
    return NetnsFile(i, NetnsFileWorker::Op::kWrite);
  }));
  exports.Set("netnsListDir", Napi::Function::New(env, [](const Napi::CallbackInfo& i) {
    return NetnsFile(i, NetnsFileWorker::Op::kList);
  }));
  exports.Set("decode", Napi::Function::New(env, Decode));
  exports.Set("layout", Layout(env));
  return exports;
}

}  // namespace

NODE_API_MODULE(conntrack, Init)
