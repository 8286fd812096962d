#include "addon_handle.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <linux/netfilter/nfnetlink_conntrack.h>

#include <algorithm>
#include <memory>
#include <vector>

#include "addon.h"
#include "addon_bulk.h"
#include "addon_dump.h"
#include "addon_mirror.h"
#include "addon_values.h"
#include "addon_workers.h"
#include "netlink_socket.h"
#include "requests.h"
#include "transaction.h"

namespace ct::addon {
namespace {

// The bounds lib/table/conntrack.ts gives these options, checked again here.
constexpr double kMaxBatchSize = 65536;
// Every entry is checked against each filter of a delete pass; lib/table/bulk.ts has the same bound.
constexpr uint32_t kMaxDeleteFilters = 4096;
constexpr double kMinEventBufferBytes = 4096;
constexpr double kMaxEventBufferBytes = 1 << 30;

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
                        InstanceMethod<&HandleWrap::StartMirror>("startMirror"),
                        InstanceMethod<&HandleWrap::EntryRequest>("entryRequest"),
                        InstanceMethod<&HandleWrap::Flush>("flush"),
                        InstanceMethod<&HandleWrap::ReadFile>("readFile"),
                        InstanceMethod<&HandleWrap::WriteFile>("writeFile"),
                        InstanceMethod<&HandleWrap::ListDir>("listDir"),
                        InstanceMethod<&HandleWrap::NamespaceInode>("namespaceInode"),
                        InstanceMethod<&HandleWrap::ExpectationRequest>("expectationRequest"),
                        InstanceMethod<&HandleWrap::OpenBulk>("openBulk"),
                        InstanceMethod<&HandleWrap::StartDelete>("startDelete"),
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
    // Busy only once the worker exists: its construction throws while a worker thread is being
    // terminated, and this handle would stay busy and referenced.
    auto* worker = new PendingRequest(env, this, std::move(t));
    busy_ = true;
    Ref();
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
    auto op = static_cast<ct::EntryOp>(integerArgument(info[0], "entry request op", 0, static_cast<double>(ct::EntryOp::kGetZero)));
    ct::EntrySpec spec;
    readEntrySpec(info[1], spec);
    std::vector<uint8_t> request(1024);
    size_t len = ct::buildEntryRequest(request.data(), request.size(), op, 0, spec);
    return RunRequest(env, std::move(request), len);
  }

  Napi::Value Flush(const Napi::CallbackInfo& info) {
    std::vector<uint8_t> request(64);
    double family = integerArgument(info[0], "flush family", 0, AF_INET6);
    if (family != 0 && family != AF_INET && family != AF_INET6)
      throw Napi::RangeError::New(info.Env(), "flush family must be 0, AF_INET or AF_INET6");
    size_t len = ct::buildFlushRequest(request.data(), request.size(), 0, static_cast<uint8_t>(family));
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
    auto batchSize = static_cast<size_t>(integerArgument(info[1], "batchSize", 1, kMaxBatchSize));
    // Third argument, key numbers (ct::SummaryKey): group counts instead of entries.
    std::vector<ct::SummaryKey> summary = info.Length() > 2 ? readSummaryKeys(env, info[2]) : std::vector<ct::SummaryKey>{};
    // Fourth argument, the dump's message (IPCTNL_MSG_CT_GET_CTRZERO, _GET_DYING, _GET_UNCONFIRMED).
    // 0 is IPCTNL_MSG_CT_NEW, which a dump never sends: it stands for the plain IPCTNL_MSG_CT_GET.
    uint8_t message = 0;
    if (info.Length() > 3 && !info[3].IsUndefined()) {
      message = static_cast<uint8_t>(integerArgument(info[3], "dump message", 0, IPCTNL_MSG_CT_GET_UNCONFIRMED));
      if (message != 0 && message != IPCTNL_MSG_CT_GET_CTRZERO && message != IPCTNL_MSG_CT_GET_DYING &&
          message != IPCTNL_MSG_CT_GET_UNCONFIRMED)
        throw Napi::RangeError::New(env, "dump message must be IPCTNL_MSG_CT_GET_CTRZERO, _GET_DYING or _GET_UNCONFIRMED");
    }
    return newDump(env, nsFd_, hasFilter ? &filter : nullptr, batchSize, nullptr, std::move(summary), message);
  }

  // expectationRequest(op, spec): list, get, create or delete expectations (ct::ExpectationOp); a
  // batch of expectation records (or a promise of one).
  Napi::Value ExpectationRequest(const Napi::CallbackInfo& info) {
    auto op = static_cast<ct::ExpectationOp>(
        integerArgument(info[0], "expectation request op", 0, static_cast<double>(ct::ExpectationOp::kDelete)));
    ct::ExpectationSpec spec;
    readExpectationSpec(info[1], spec);
    std::vector<uint8_t> request(2048);
    size_t len = ct::buildExpectationRequest(request.data(), request.size(), op, 0, spec);
    return RunRequest(info.Env(), std::move(request), len);
  }

  // openBulk(): a NativeBulk for createMany() / updateMany() in this handle's namespace.
  Napi::Value OpenBulk(const Napi::CallbackInfo& info) {
    if (closed_) throw Napi::Error::New(info.Env(), "closed");
    return newBulk(info.Env(), nsFd_);
  }

  // startDelete(filters[], allowFlush): a NativeDeleteRun deleting what any filter selects.
  Napi::Value StartDelete(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (closed_) throw Napi::Error::New(env, "closed");
    if (!info[0].IsArray()) throw Napi::TypeError::New(env, "delete filters must be an array");
    Napi::Array list = info[0].As<Napi::Array>();
    if (list.Length() == 0 || list.Length() > kMaxDeleteFilters)
      throw Napi::RangeError::New(env, "delete takes 1 to " + std::to_string(kMaxDeleteFilters) + " filters");
    std::vector<ct::Filter> filters(list.Length());
    for (uint32_t i = 0; i < list.Length(); ++i) {
      if (!readFilter(list.Get(i), filters[i])) throw Napi::TypeError::New(env, "each delete filter must be an object");
    }
    return newDeleteRun(env, nsFd_, std::move(filters), info[1].ToBoolean().Value());
  }

  // startMirror(filter | null, receiveBufferBytes, maxReceiveBufferBytes, onSync, resyncIntervalMs, onChange): a NativeMirror.
  Napi::Value StartMirror(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (closed_) throw Napi::Error::New(env, "closed");
    ct::Filter filter;
    bool hasFilter = readFilter(info[0], filter);
    ct::EventOptions events;
    events.groups = 7;  // new, update, destroy
    events.receiveBufferBytes =
        static_cast<int>(integerArgument(info[1], "receiveBufferBytes", kMinEventBufferBytes, kMaxEventBufferBytes));
    events.maxReceiveBufferBytes =
        static_cast<int>(integerArgument(info[2], "maxReceiveBufferBytes", kMinEventBufferBytes, kMaxEventBufferBytes));
    if (!info[3].IsFunction() || !info[5].IsFunction()) throw Napi::TypeError::New(env, "mirror callbacks must be functions");
    return newMirror(env, nsFd_, hasFilter ? &filter : nullptr, events,
                     static_cast<uint32_t>(integerArgument(info[4], "resyncInterval", 0, 0xffffffff)),
                     info[3].As<Napi::Function>(), info[5].As<Napi::Function>());
  }

  // startEvents(filter | null, batchSize, groups, receiveBufferBytes): a NativeDump that never ends.
  Napi::Value StartEvents(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (closed_) throw Napi::Error::New(env, "closed");
    ct::Filter filter;
    bool hasFilter = readFilter(info[0], filter);
    auto batchSize = static_cast<size_t>(integerArgument(info[1], "batchSize", 1, kMaxBatchSize));
    ct::EventOptions events;
    // Seventh argument true: the groups are NFNLGRP_CONNTRACK_EXP_*, whose messages are expectations.
    events.expectations = info.Length() > 6 && info[6].ToBoolean().Value();
    // NFNLGRP_CONNTRACK_NEW, _UPDATE, _DESTROY: bits 0 to 2; NFNLGRP_CONNTRACK_EXP_*: bits 3 to 5.
    events.groups = static_cast<uint32_t>(events.expectations ? integerArgument(info[2], "event groups", 8, 56)
                                                              : integerArgument(info[2], "event groups", 1, 7));
    // 0 would leave the receiver waiting for room that never comes; 2^31 and more turn negative.
    events.receiveBufferBytes = static_cast<int>(integerArgument(info[3], "receiveBufferBytes", kMinEventBufferBytes, kMaxEventBufferBytes));
    events.reliable = info.Length() > 4 && info[4].ToBoolean().Value();
    if (info.Length() > 5 && info[5].IsNumber()) {
      events.maxReceiveBufferBytes =
          static_cast<int>(integerArgument(info[5], "maxReceiveBufferBytes", kMinEventBufferBytes, kMaxEventBufferBytes));
    }
    return newDump(env, nsFd_, hasFilter ? &filter : nullptr, batchSize, &events, {});
  }

  // readFile(path), writeFile(path, data), listDir(path): procfs and sysfs of the handle's own
  // namespace, entered by its descriptor: a namespace file deleted and made again under the same
  // name, or a pid reused, cannot redirect them to another namespace.
  Napi::Value ReadFile(const Napi::CallbackInfo& info) { return RunFileOp(info, ct::addon::FileOp::kRead); }
  Napi::Value WriteFile(const Napi::CallbackInfo& info) { return RunFileOp(info, ct::addon::FileOp::kWrite); }
  Napi::Value ListDir(const Napi::CallbackInfo& info) { return RunFileOp(info, ct::addon::FileOp::kList); }
  Napi::Value RunFileOp(const Napi::CallbackInfo& info, ct::addon::FileOp op) {
    if (closed_) throw Napi::Error::New(info.Env(), "closed");
    return netnsFileOnFd(info, nsFd_, op);
  }

  // The inode of the handle's namespace (this process's when it was opened without one).
  Napi::Value NamespaceInode(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (closed_) throw Napi::Error::New(env, "closed");
    // statx (glibc 2.28), not stat/fstat: those are GLIBC_2.33 symbols with newer headers.
    struct statx st {};
    int rc = nsFd_ >= 0 ? ::statx(nsFd_, "", AT_EMPTY_PATH, STATX_INO, &st)
                        : ::statx(AT_FDCWD, "/proc/thread-self/ns/net", 0, STATX_INO, &st);
    if (rc != 0) throw toJsError(env, SysError::fromErrno(errno, "stat netns"));
    return Napi::Number::New(env, static_cast<double>(st.stx_ino));
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

}  // namespace

Napi::Function defineHandleClass(Napi::Env env) { return HandleWrap::Init(env); }

Napi::Object newHandle(Napi::Env env, int& nsFd, ct::NetlinkSocket& socket) {
  // Construct first: if that throws (a worker being torn down), the caller still owns both fds.
  Napi::Object obj = env.GetInstanceData<AddonData>()->handleConstructor.New({});
  uint32_t portId = socket.portId();
  HandleWrap::Unwrap(obj)->Adopt(nsFd, socket.release(), portId);
  nsFd = -1;
  return obj;
}

}  // namespace ct::addon
