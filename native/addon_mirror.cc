#include "addon_mirror.h"

#include <algorithm>
#include <cstring>
#include <memory>

#include "addon.h"
#include "addon_values.h"
#include "ct_mirror.h"

namespace ct::addon {
namespace {

class MirrorWrap : public Napi::ObjectWrap<MirrorWrap> {
 public:
  static Napi::Function Init(Napi::Env env) {
    return DefineClass(env, "NativeMirror",
                       {InstanceMethod<&MirrorWrap::Size>("size"), InstanceMethod<&MirrorWrap::Get>("get"),
                        InstanceMethod<&MirrorWrap::Entries>("entries"),
                        InstanceMethod<&MirrorWrap::Summarize>("summarize"),
                        InstanceMethod<&MirrorWrap::Bytes>("bytes"), InstanceMethod<&MirrorWrap::Counters>("counters"),
                        InstanceMethod<&MirrorWrap::WatchChanges>("watchChanges"),
                        InstanceMethod<&MirrorWrap::TakeChanges>("takeChanges"),
                        InstanceMethod<&MirrorWrap::Close>("close")});
  }
  explicit MirrorWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<MirrorWrap>(info) {}
  ~MirrorWrap() override {
    if (hookEnv_) napi_remove_env_cleanup_hook(hookEnv_, &MirrorWrap::OnTeardown, this);
    closeSession();
  }

  void Begin(Napi::Env env, int nsFd, const ct::Filter* filter, const ct::EventOptions& events,
             uint32_t resyncIntervalMs, Napi::Function onSync, Napi::Function onChange) {
    onSync_ = Napi::ThreadSafeFunction::New(env, onSync, "conntrack-mirror", 0, 1);
    onSync_.Unref(env);
    onChange_ = Napi::ThreadSafeFunction::New(env, onChange, "conntrack-mirror-changes", 0, 1);
    onChange_.Unref(env);
    live_ = true;
    Napi::ThreadSafeFunction syncFn = onSync_;
    Napi::ThreadSafeFunction changeFn = onChange_;
    session_ = std::make_unique<ct::MirrorSession>(
        nsFd, filter, events, resyncIntervalMs,
        [syncFn](const ct::SyncReport& report) mutable {
          syncFn.NonBlockingCall([report](Napi::Env env, Napi::Function cb) {
            Napi::Object info = Napi::Object::New(env);
            info.Set("reason", Napi::Number::New(env, static_cast<double>(report.reason)));
            info.Set("removed", Napi::Number::New(env, static_cast<double>(report.result.removed)));
            info.Set("added", Napi::Number::New(env, static_cast<double>(report.result.added)));
            cb.Call({report.ok ? env.Null() : toJsError(env, report.err).Value(), info});
          });
        },
        [changeFn]() mutable { changeFn.NonBlockingCall(); });
    // The environment may end before this wrapper is collected: stop the threads and give the
    // functions back then, before Node closes them (hooks run newest first).
    napi_add_env_cleanup_hook(env, &MirrorWrap::OnTeardown, this);
    hookEnv_ = env;
    SysError err;
    if (!session_->start(err)) {
      closeSession();
      throw toJsError(env, err);
    }
  }

 private:
  static void OnTeardown(void* arg) {
    auto* self = static_cast<MirrorWrap*>(arg);
    self->hookEnv_ = nullptr;
    self->closeSession();
  }

  void closeSession() {
    if (session_) session_->stop();  // joins: no call to onSync_ after this
    session_.reset();
    summary_ = ct::SummaryColumns{};
    if (live_) {
      onSync_.Release();
      onChange_.Release();
      live_ = false;
    }
  }
  ct::MirrorStore& store(Napi::Env env) {
    if (!session_) throw Napi::Error::New(env, "closed");
    return session_->store();
  }

  Napi::Value Size(const Napi::CallbackInfo& info) {
    return Napi::Number::New(info.Env(), static_cast<double>(store(info.Env()).size()));
  }

  // get({ family, protocol, src: bytes, dst: bytes, sport, dport, icmpType, icmpCode, icmpId, zone }): a one-record batch or null.
  Napi::Value Get(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    Napi::Object o = info[0].As<Napi::Object>();
    ct::Tuple t;
    t.family = static_cast<uint8_t>(o.Get("family").As<Napi::Number>().Uint32Value());
    t.proto = static_cast<uint8_t>(o.Get("protocol").As<Napi::Number>().Uint32Value());
    Napi::Uint8Array src = o.Get("src").As<Napi::Uint8Array>();
    Napi::Uint8Array dst = o.Get("dst").As<Napi::Uint8Array>();
    std::memcpy(t.srcAddr, src.Data(), std::min<size_t>(src.ByteLength(), sizeof t.srcAddr));
    std::memcpy(t.dstAddr, dst.Data(), std::min<size_t>(dst.ByteLength(), sizeof t.dstAddr));
    auto num = [&](const char* name) {
      Napi::Value v = o.Get(name);
      return v.IsNumber() ? v.As<Napi::Number>().Uint32Value() : 0u;
    };
    t.sport = static_cast<uint16_t>(num("sport"));
    t.dport = static_cast<uint16_t>(num("dport"));
    t.icmpType = static_cast<uint8_t>(num("icmpType"));
    t.icmpCode = static_cast<uint8_t>(num("icmpCode"));
    t.icmpId = static_cast<uint16_t>(num("icmpId"));
    ct::Batch batch;
    if (!store(env).get(ct::mirrorKey(t, num("zone")), batch)) return env.Null();
    return batchToJs(env, std::move(batch));
  }

  Napi::Value Entries(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    ct::Filter filter;
    bool hasFilter = readFilter(info[0], filter);
    ct::Batch batch;
    store(env).entries(hasFilter && !filter.empty() ? &filter : nullptr, batch);
    return batchToJs(env, std::move(batch));
  }

  // summarize(filter | null, keyNumbers, top, knownGrouping, knownGenerations | undefined,
  //           values | undefined): { total, grouping, groups, values, addresses }, largest groups
  // first (ct::SummaryColumns). `values` holds `groups` numbers per column: counts, ids,
  // generations, then one column per key (-1: absent; unused for an address key); it is the
  // Float64Array passed in when that is long enough, so a caller asking again reuses its memory.
  // addresses[k] is, for an address key, an array of texts (a hole where the entry had none).
  // knownGenerations (a Uint32Array by group id) names the groups of kept grouping `knownGrouping`
  // whose keys the caller holds: their key columns are left unset. No record per group: a kept
  // summary of tens of thousands of groups reaches JS in a few milliseconds.
  Napi::Value Summarize(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    ct::Filter filter;
    bool hasFilter = readFilter(info[0], filter);
    std::vector<ct::SummaryKey> keys = readSummaryKeys(env, info[1]);
    auto top = static_cast<size_t>(integerArgument(info[2], "top", 0, 4294967295.0));
    auto knownGrouping = static_cast<uint64_t>(integerArgument(info[3], "knownGrouping", 0, 9007199254740991.0));
    ct::KnownGroups known;
    if (isTypedArrayOf(info[4], napi_uint32_array)) {
      auto generations = info[4].As<Napi::Uint32Array>();
      known.generations = generations.Data();
      known.length = generations.ElementLength();
    } else if (!info[4].IsUndefined()) {
      throw Napi::TypeError::New(env, "knownGenerations must be a Uint32Array or undefined");
    }
    bool givenValues = isTypedArrayOf(info[5], napi_float64_array);
    if (!givenValues && !info[5].IsUndefined()) throw Napi::TypeError::New(env, "values must be a Float64Array or undefined");
    ct::SummaryColumns& columns = summary_;
    store(env).summarize(hasFilter && !filter.empty() ? &filter : nullptr, keys, top, knownGrouping, known, columns);
    size_t n = columns.counts.size();
    size_t needed = n * (3 + keys.size());
    Napi::Float64Array values;
    if (givenValues && info[5].As<Napi::Float64Array>().ElementLength() >= needed) {
      values = info[5].As<Napi::Float64Array>();
    } else {
      values = Napi::Float64Array::New(env, needed + needed / 4);
    }
    double* at = values.Data();
    at = std::copy(columns.counts.begin(), columns.counts.end(), at);
    at = std::copy(columns.ids.begin(), columns.ids.end(), at);
    at = std::copy(columns.generations.begin(), columns.generations.end(), at);
    Napi::Array addresses = Napi::Array::New(env, keys.size());
    for (size_t k = 0; k < keys.size(); ++k) {
      if (!columns.addresses[k].empty() || columns.numbers[k].empty()) {
        Napi::Array texts = Napi::Array::New(env, n);
        for (size_t i = 0; i < n && i < columns.addresses[k].size(); ++i) {
          const std::string& text = columns.addresses[k][i];
          if (!text.empty()) texts.Set(static_cast<uint32_t>(i), Napi::String::New(env, text));
        }
        addresses.Set(static_cast<uint32_t>(k), texts);
      } else {
        std::copy(columns.numbers[k].begin(), columns.numbers[k].end(), at);
      }
      at += n;
    }
    Napi::Object out = Napi::Object::New(env);
    out.Set("total", Napi::Number::New(env, static_cast<double>(columns.total)));
    out.Set("grouping", Napi::Number::New(env, static_cast<double>(columns.grouping)));
    out.Set("groups", Napi::Number::New(env, static_cast<double>(n)));
    out.Set("values", values);
    out.Set("addresses", addresses);
    return out;
  }

  static bool isTypedArrayOf(const Napi::Value& value, napi_typedarray_type type) {
    return value.IsTypedArray() && value.As<Napi::TypedArray>().TypedArrayType() == type;
  }

  Napi::Value Bytes(const Napi::CallbackInfo& info) {
    return Napi::Number::New(info.Env(), static_cast<double>(store(info.Env()).bytes()));
  }

  Napi::Value Counters(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    Napi::Object o = Napi::Object::New(env);
    ct::DumpCounters c = session_ ? session_->eventCounters() : ct::DumpCounters{};
    o.Set("overflows", Napi::Number::New(env, static_cast<double>(session_ ? session_->overflows() : 0)));
    o.Set("events", Napi::Number::New(env, static_cast<double>(c.messages)));
    o.Set("receiveBufferBytes", Napi::Number::New(env, static_cast<double>(c.receiveBufferBytes)));
    o.Set("bufferGrowths", Napi::Number::New(env, static_cast<double>(c.bufferGrowths)));
    o.Set("liveSummaries", Napi::Number::New(env, static_cast<double>(session_ ? store(env).views() : 0)));
    return o;
  }

  Napi::Value WatchChanges(const Napi::CallbackInfo& info) {
    if (!session_) throw Napi::Error::New(info.Env(), "closed");
    bool on = info[0].ToBoolean().Value();
    session_->watchChanges(on);
    // An iteration waiting for changes keeps the process alive, as events() does.
    if (on) onChange_.Ref(info.Env());
    else onChange_.Unref(info.Env());
    return info.Env().Undefined();
  }

  // takeChanges(): the change records waiting, as an event batch (overflowsBefore: changes dropped).
  Napi::Value TakeChanges(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!session_) throw Napi::Error::New(env, "closed");
    ct::Batch batch;
    session_->takeChanges(batch);
    return batchToJs(env, std::move(batch));
  }

  Napi::Value Close(const Napi::CallbackInfo& info) {
    closeSession();
    return info.Env().Undefined();
  }

  std::unique_ptr<ct::MirrorSession> session_;
  // Summarize()'s columns and working memory, kept between answers (fresh pages cost more than
  // an answer from a kept summary).
  ct::SummaryColumns summary_;
  Napi::ThreadSafeFunction onSync_;
  Napi::ThreadSafeFunction onChange_;
  napi_env hookEnv_ = nullptr;
  bool live_ = false;
};

}  // namespace

Napi::Function defineMirrorClass(Napi::Env env) { return MirrorWrap::Init(env); }

Napi::Object newMirror(Napi::Env env, int nsFd, const ct::Filter* filter, const ct::EventOptions& events,
                       uint32_t resyncIntervalMs, Napi::Function onSync, Napi::Function onChange) {
  Napi::Object obj = env.GetInstanceData<AddonData>()->mirrorConstructor.New({});
  MirrorWrap::Unwrap(obj)->Begin(env, nsFd, filter, events, resyncIntervalMs, onSync, onChange);
  return obj;
}

}  // namespace ct::addon
