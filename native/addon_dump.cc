#include "addon_dump.h"

#include <memory>

#include "addon.h"
#include "addon_values.h"

namespace ct::addon {
namespace {

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
    reportExternal(0);  // stopped: its buffers are freed
  }

  // Tells V8 about the native buffers a running session holds (V8 counts them towards when to
  // collect garbage, and process.memoryUsage().external shows them); 0 gives them back.
  int64_t reportedBytes = 0;
  void reportExternal(int64_t bytes) {
    if (bytes == reportedBytes) return;
    int64_t ignored;
    if (napi_adjust_external_memory(env, bytes - reportedBytes, &ignored) == napi_ok) reportedBytes = bytes;
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
             const ct::EventOptions* events = nullptr, std::vector<ct::SummaryKey> summary = {},
             uint8_t message = 0) {
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
    if (message != 0) state->session->dumpMessage(message);
    // The session calls `wake` from its thread until stop() joins it; stop() runs before Release().
    // The environment may end before this wrapper is collected: stop the thread then.
    napi_add_env_cleanup_hook(env, &DumpState::OnTeardown, state.get());
    state->hookRegistered = true;
    SysError err;
    if (!state->session->start(err)) {
      state->close();  // gives the wake-up function back now, not when JS collects this object
      throw toJsError(env, err);
    }
    state->reportExternal(static_cast<int64_t>(state->session->bufferBytesBound()));
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
    o.Set("receiveBufferBytes", Napi::Number::New(env, static_cast<double>(c.receiveBufferBytes)));
    o.Set("bufferGrowths", Napi::Number::New(env, static_cast<double>(c.bufferGrowths)));
    return o;
  }

  std::shared_ptr<DumpState> state_;
};

}  // namespace

Napi::Function defineDumpClass(Napi::Env env) { return DumpWrap::Init(env); }

Napi::Object newDump(Napi::Env env, int nsFd, const ct::Filter* filter, size_t batchSize,
                     const ct::EventOptions* events, std::vector<ct::SummaryKey> summary, uint8_t message) {
  Napi::Object obj = env.GetInstanceData<AddonData>()->dumpConstructor.New({});
  DumpWrap::Unwrap(obj)->Begin(env, nsFd, filter, batchSize, events, std::move(summary), message);
  return obj;
}

}  // namespace ct::addon
