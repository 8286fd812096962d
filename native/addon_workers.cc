#include "addon_workers.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <unistd.h>

#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "addon_handle.h"
#include "addon_values.h"
#include "netlink_socket.h"
#include "netns.h"

namespace ct::addon {
namespace {

class OpenWorker : public Napi::AsyncWorker {
 public:
  OpenWorker(Napi::Env env, std::string path, bool hasPath, int pid = 0)
      : Napi::AsyncWorker(env, "conntrack-open"), path_(std::move(path)), hasPath_(hasPath), pid_(pid),
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
    if (hasPath_ || pid_ > 0) {
      nsFd_ = pid_ > 0 ? ct::openNetnsOfPid(pid_, err_) : ct::openNetns(path_, err_);
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
      deferred_.Resolve(newHandle(Env(), nsFd_, socket_));
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
  int pid_;  // > 0: the namespace of this process, pinned by a pidfd
  Napi::Promise::Deferred deferred_;
  SysError err_;
  int nsFd_ = -1;
  ct::NetlinkSocket socket_;
  bool opened_ = false;
};

// File operations inside a network namespace (procfs and sysfs views follow it): the namespace
// at a path, opened for this one operation, or a handle's own (`nsFd`, a copy this worker owns;
// `here`: this process's namespace).
class NetnsFileWorker : public Napi::AsyncWorker {
 public:
  using Op = FileOp;
  NetnsFileWorker(Napi::Env env, Op op, std::string ns, std::string path, std::string data, bool here = false)
      : Napi::AsyncWorker(env, "conntrack-netns-file"), op_(op), ns_(std::move(ns)), path_(std::move(path)),
        data_(std::move(data)), deferred_(Napi::Promise::Deferred::New(env)), here_(here) {}
  ~NetnsFileWorker() override {
    if (ownedNsFd_ >= 0) ::close(ownedNsFd_);
  }
  Napi::Promise Promise() { return deferred_.Promise(); }

  // Works in the namespace of `nsFd` through a copy of its own (the handle may close while this
  // runs). Taken only once this worker exists: its construction throws while a worker thread is
  // being terminated, and a copy made before that would be left open.
  bool CopyNamespace(int nsFd, SysError& err) {
    ownedNsFd_ = ::fcntl(nsFd, F_DUPFD_CLOEXEC, 0);
    if (ownedNsFd_ >= 0) return true;
    err = SysError::fromErrno(errno, "dup netns");
    return false;
  }

  void Execute() override {
    try {
      InNetns();
    } catch (...) {  // bad_alloc: reject, do not end the process
      err_ = SysError::fromCurrentException("netns file");
      SetError("file");
    }
  }

  void InNetns() {
    if (here_) {  // a pool thread is in this process's namespace
      perform();
      if (failed_) SetError("file");
      return;
    }
    int nsFd = ownedNsFd_;
    if (nsFd < 0) {
      nsFd = ct::openNetns(ns_, err_);
      if (nsFd < 0) return SetError("netns");
    }
    bool entered = ct::runInNetns(nsFd, [this] { perform(); }, err_);
    if (nsFd != ownedNsFd_) ::close(nsFd);
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
  int ownedNsFd_ = -1;
  bool here_;
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

}  // namespace

Napi::Value openHandle(const Napi::CallbackInfo& info) {
  bool hasPath = info.Length() > 0 && info[0].IsString();
  int pid = 0;
  if (info.Length() > 0 && info[0].IsNumber()) {
    double n = info[0].As<Napi::Number>().DoubleValue();
    if (!(n >= 1 && n <= 0x7fffffff) || n != static_cast<double>(static_cast<int>(n)))
      throw Napi::RangeError::New(info.Env(), "netns pid must be an integer from 1 to 2^31-1");
    pid = static_cast<int>(n);
  }
  auto* worker = new OpenWorker(info.Env(), hasPath ? info[0].As<Napi::String>().Utf8Value() : "", hasPath, pid);
  Napi::Promise promise = worker->Promise();
  worker->Queue();
  return promise;
}

Napi::Value netnsFileOnFd(const Napi::CallbackInfo& info, int nsFd, FileOp op) {
  Napi::Env env = info.Env();
  if (!info[0].IsString() || (op == FileOp::kWrite && !info[1].IsString()))
    throw Napi::TypeError::New(env, "path (and data) must be strings");
  std::string path = info[0].As<Napi::String>().Utf8Value();
  std::string data = op == FileOp::kWrite ? info[1].As<Napi::String>().Utf8Value() : "";
  auto worker = std::make_unique<NetnsFileWorker>(env, op, "", std::move(path), std::move(data), nsFd < 0);
  SysError err;
  if (nsFd >= 0 && !worker->CopyNamespace(nsFd, err)) throw toJsError(env, err);
  Napi::Promise promise = worker->Promise();
  worker->Queue();
  worker.release();  // queued: it deletes itself when done
  return promise;
}

Napi::Value netnsReadFile(const Napi::CallbackInfo& info) { return NetnsFile(info, NetnsFileWorker::Op::kRead); }
Napi::Value netnsWriteFile(const Napi::CallbackInfo& info) { return NetnsFile(info, NetnsFileWorker::Op::kWrite); }
Napi::Value netnsListDir(const Napi::CallbackInfo& info) { return NetnsFile(info, NetnsFileWorker::Op::kList); }

}  // namespace ct::addon
