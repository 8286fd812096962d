#include "addon_bulk.h"

#include <cstring>
#include <memory>

#include "addon.h"
#include "addon_values.h"
#include "bulk_changes.h"
#include "bulk_delete.h"
#include "flush_probe.h"
#include "record_layout.h"

namespace ct::addon {
namespace {

// ---- NativeBulk ---------------------------------------------------------------------------------

struct BulkState {
  explicit BulkState(int nsFd) : changes(nsFd) {}
  ct::BulkChanges changes;
  bool busy = false;
  bool closeWhenIdle = false;
};

// One batch on a pool thread: the records were copied, so JS may refill its buffer meanwhile.
class ApplyWorker : public Napi::AsyncWorker {
 public:
  ApplyWorker(Napi::Env env, std::shared_ptr<BulkState> state, ct::EntryOp op, std::vector<uint32_t> records,
              size_t count)
      : Napi::AsyncWorker(env, "conntrack-bulk"), state_(std::move(state)), op_(op), records_(std::move(records)),
        count_(count), deferred_(Napi::Promise::Deferred::New(env)) {}
  Napi::Promise Promise() { return deferred_.Promise(); }

  void Execute() override {
    try {
      if (!state_->changes.apply(op_, records_.data(), count_, errnos_, err_)) SetError("bulk");
    } catch (...) {  // bad_alloc: reject, do not end the process
      err_ = SysError::fromCurrentException("bulk changes");
      SetError("bulk");
    }
  }
  void OnOK() override {
    Napi::Env env = Env();
    idle();
    Napi::Int32Array out = Napi::Int32Array::New(env, errnos_.size());
    if (!errnos_.empty()) std::memcpy(out.Data(), errnos_.data(), errnos_.size() * sizeof(int32_t));
    deferred_.Resolve(out);
  }
  void OnError(const Napi::Error&) override {
    idle();
    deferred_.Reject(toJsError(Env(), err_).Value());
  }

 private:
  void idle() {
    state_->busy = false;
    if (state_->closeWhenIdle) state_->changes.close();
  }
  std::shared_ptr<BulkState> state_;
  ct::EntryOp op_;
  std::vector<uint32_t> records_;
  size_t count_;
  std::vector<int32_t> errnos_;
  SysError err_;
  Napi::Promise::Deferred deferred_;
};

class BulkWrap : public Napi::ObjectWrap<BulkWrap> {
 public:
  static Napi::Function Init(Napi::Env env) {
    return DefineClass(env, "NativeBulk",
                       {InstanceMethod<&BulkWrap::Apply>("apply"), InstanceMethod<&BulkWrap::Close>("close")});
  }
  explicit BulkWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<BulkWrap>(info) {}
  ~BulkWrap() override {
    if (state_ && !state_->busy) state_->changes.close();
    else if (state_) state_->closeWhenIdle = true;
  }
  void Begin(int nsFd) { state_ = std::make_shared<BulkState>(nsFd); }

 private:
  // apply(op, records: Uint32Array, count): a promise of an Int32Array, one errno per item.
  Napi::Value Apply(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (state_->closeWhenIdle) throw Napi::Error::New(env, "closed");
    if (state_->busy) throw Napi::Error::New(env, "busy");
    auto op = static_cast<uint32_t>(integerArgument(info[0], "bulk op", 0, 255));
    if (op != static_cast<uint32_t>(ct::EntryOp::kCreate) && op != static_cast<uint32_t>(ct::EntryOp::kUpdate))
      throw Napi::RangeError::New(env, "bulk changes create or update");
    if (!info[1].IsTypedArray() || info[1].As<Napi::TypedArray>().TypedArrayType() != napi_uint32_array)
      throw Napi::TypeError::New(env, "spec records must be a Uint32Array");
    Napi::Uint32Array array = info[1].As<Napi::Uint32Array>();
    // Bounded by the array itself, so count * kCount cannot overflow.
    auto count = static_cast<size_t>(integerArgument(info[2], "spec record count", 0,
                                                     static_cast<double>(array.ElementLength() / ct::spec_slot::kCount)));
    std::vector<uint32_t> records(array.Data(), array.Data() + count * ct::spec_slot::kCount);
    auto* worker = new ApplyWorker(env, state_, static_cast<ct::EntryOp>(op), std::move(records), count);
    state_->busy = true;  // once the worker exists: its construction throws in a terminating worker thread
    Napi::Promise promise = worker->Promise();
    worker->Queue();
    return promise;
  }

  Napi::Value Close(const Napi::CallbackInfo& info) {
    state_->closeWhenIdle = true;
    if (!state_->busy) state_->changes.close();
    return info.Env().Undefined();
  }

  std::shared_ptr<BulkState> state_;
};

// ---- NativeDeleteRun ----------------------------------------------------------------------------

Napi::Object countersToJs(Napi::Env env, const ct::DeleteCounters& c) {
  Napi::Object o = Napi::Object::New(env);
  auto number = [&](const char* key, uint64_t v) { o.Set(key, Napi::Number::New(env, static_cast<double>(v))); };
  number("scanned", c.scanned);
  number("duplicates", c.duplicates);
  number("matched", c.matched);
  number("deleted", c.deleted);
  number("alreadyGone", c.alreadyGone);
  number("failed", c.failed);
  o.Set("firstErrno", Napi::Number::New(env, c.firstErrno));
  o.Set("kernelFlush", Napi::Boolean::New(env, c.kernelFlush));
  Napi::Array by = Napi::Array::New(env, c.matchedBy.size());
  for (size_t i = 0; i < c.matchedBy.size(); ++i) by.Set(static_cast<uint32_t>(i), Napi::Number::New(env, static_cast<double>(c.matchedBy[i])));
  o.Set("matchedBy", by);
  return o;
}

// Shared by the JS wrapper and the worker; the environment's teardown stops the session so the
// pool thread is not held.
struct DeleteState {
  std::shared_ptr<ct::DeleteSession> session;
  napi_env env = nullptr;
  bool hooked = false;
  static void OnTeardown(void* arg) {
    auto* self = static_cast<DeleteState*>(arg);
    self->hooked = false;
    self->session->stop();
  }
  void unhook() {
    if (hooked) napi_remove_env_cleanup_hook(env, &DeleteState::OnTeardown, this);
    hooked = false;
  }
};

class DeleteWorker : public Napi::AsyncWorker {
 public:
  DeleteWorker(Napi::Env env, std::shared_ptr<DeleteState> state)
      : Napi::AsyncWorker(env, "conntrack-delete"), state_(std::move(state)),
        deferred_(Napi::Promise::Deferred::New(env)) {}
  ~DeleteWorker() override { state_->unhook(); }
  Napi::Promise Promise() { return deferred_.Promise(); }

  void Execute() override {
    try {
      if (!state_->session->run(err_)) SetError("delete");
    } catch (...) {  // bad_alloc or no thread (a pids limit): reject, do not end the process
      err_ = SysError::fromCurrentException("delete");
      SetError("delete");
    }
  }
  void OnOK() override {
    Napi::Env env = Env();
    state_->unhook();
    Napi::Object result = countersToJs(env, state_->session->counters());
    result.Set("stopped", Napi::Boolean::New(env, state_->session->stopped()));
    deferred_.Resolve(result);
  }
  void OnError(const Napi::Error&) override {
    Napi::Env env = Env();
    state_->unhook();
    Napi::Error e = toJsError(env, err_);
    e.Value().Set("counters", countersToJs(env, state_->session->counters()));
    deferred_.Reject(e.Value());
  }

 private:
  std::shared_ptr<DeleteState> state_;
  Napi::Promise::Deferred deferred_;
  SysError err_;
};

class DeleteRunWrap : public Napi::ObjectWrap<DeleteRunWrap> {
 public:
  static Napi::Function Init(Napi::Env env) {
    return DefineClass(env, "NativeDeleteRun",
                       {InstanceMethod<&DeleteRunWrap::Done>("done"), InstanceMethod<&DeleteRunWrap::Abort>("abort"),
                        InstanceMethod<&DeleteRunWrap::Counters>("counters")});
  }
  explicit DeleteRunWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<DeleteRunWrap>(info) {}

  void Begin(Napi::Env env, int nsFd, std::vector<ct::Filter> filters, bool allowFlush) {
    state_ = std::make_shared<DeleteState>();
    state_->session = std::make_shared<ct::DeleteSession>(nsFd, std::move(filters), allowFlush);
    state_->env = env;
    // The hook only once the worker exists: its construction throws in a terminating worker
    // thread, and a hook left behind would run on a freed state at teardown.
    auto* worker = new DeleteWorker(env, state_);
    promise_ = Napi::Persistent(worker->Promise());
    napi_add_env_cleanup_hook(env, &DeleteState::OnTeardown, state_.get());
    state_->hooked = true;
    worker->Queue();
  }

 private:
  // done(): the promise of the final counters ({ ..., stopped }), rejected with the error (and
  // its counters) when the pass failed.
  Napi::Value Done(const Napi::CallbackInfo&) { return promise_.Value(); }
  Napi::Value Abort(const Napi::CallbackInfo& info) {
    state_->session->stop();
    return info.Env().Undefined();
  }
  Napi::Value Counters(const Napi::CallbackInfo& info) { return countersToJs(info.Env(), state_->session->counters()); }

  std::shared_ptr<DeleteState> state_;
  Napi::Reference<Napi::Promise> promise_;
};

}  // namespace

Napi::Function defineBulkClass(Napi::Env env) { return BulkWrap::Init(env); }
Napi::Function defineDeleteRunClass(Napi::Env env) { return DeleteRunWrap::Init(env); }

Napi::Object newBulk(Napi::Env env, int nsFd) {
  Napi::Object obj = env.GetInstanceData<AddonData>()->bulkConstructor.New({});
  BulkWrap::Unwrap(obj)->Begin(nsFd);
  return obj;
}

Napi::Object newDeleteRun(Napi::Env env, int nsFd, std::vector<ct::Filter> filters, bool allowFlush) {
  Napi::Object obj = env.GetInstanceData<AddonData>()->deleteRunConstructor.New({});
  DeleteRunWrap::Unwrap(obj)->Begin(env, nsFd, std::move(filters), allowFlush);
  return obj;
}

Napi::Value flushSupportToJs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const ct::FlushSupport& s = ct::flushSupport();
  Napi::Object o = Napi::Object::New(env);
  o.Set("family", Napi::Boolean::New(env, s.family));
  o.Set("mark", Napi::Boolean::New(env, s.mark));
  o.Set("status", Napi::Boolean::New(env, s.status));
  o.Set("zone", Napi::Boolean::New(env, s.zone));
  if (!s.problem.empty()) o.Set("problem", Napi::String::New(env, s.problem));
  return o;
}

}  // namespace ct::addon
