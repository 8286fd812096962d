// Network namespaces: open and check a namespace file, and run work inside it on a
// short-lived thread, so the calling thread (Node's main or a pool thread) never switches.
#pragma once

#include <functional>
#include <string>

#include "sys_error.h"

namespace ct {

// Opens `path` and checks it is a network namespace. Returns the fd, or -1 with `err` set. The
// open never blocks (a FIFO at the path is refused, not waited on) and the file must be on nsfs
// before anything else is done with it.
int openNetns(const std::string& path, SysError& err);

// The network namespace of process `pid`, pinned: the process is held by a pidfd while its
// namespace is opened (from the pidfd itself where the kernel can, Linux 6.11+), so a pid reused
// meanwhile cannot hand over another process's namespace. Kernels without pidfds (before 5.3)
// open /proc/PID/ns/net. Returns the fd, or -1 with `err` set (ESRCH: no such process).
int openNetnsOfPid(int pid, SysError& err);

// Runs `work` on a new thread that first enters the namespace `nsFd`. Returns false with `err`
// set when the thread cannot start, the switch fails or `work` throws; `work` reports its own
// errors otherwise.
bool runInNetns(int nsFd, const std::function<void()>& work, SysError& err);

// Enters `nsFd` on the calling thread; only for threads this library owns. A negative `nsFd` is
// an error (EBADF), never "stay in this namespace": that must be the caller's explicit choice.
bool enterNetns(int nsFd, SysError& err);

// A session's own copy of a namespace descriptor (the handle that lent it may close first). A
// copy that failed remembers why: the session must report that, never fall back to working in
// this process's namespace.
class NetnsCopy {
 public:
  NetnsCopy() = default;          // no namespace: the caller's own
  explicit NetnsCopy(int nsFd);   // a negative nsFd: no namespace
  ~NetnsCopy() { reset(); }
  NetnsCopy(const NetnsCopy&) = delete;
  NetnsCopy& operator=(const NetnsCopy&) = delete;

  bool wanted() const { return wanted_; }
  int fd() const { return fd_; }
  // False with `err` when a namespace was given and the copy failed.
  bool check(SysError& err) const;
  // Runs `work` inside the namespace on a short-lived thread (runInNetns), or here when none
  // was given.
  bool run(const std::function<void()>& work, SysError& err) const;
  // Enters it on the calling thread (a thread this library owns); nothing when none was given.
  bool enter(SysError& err) const;
  void reset();

 private:
  bool wanted_ = false;
  int fd_ = -1;
  int dupErrno_ = 0;
};

// procfs paths under /proc/net and /proc/self/net follow the process's namespace, not the
// thread's: rewrite them to /proc/thread-self/net so a thread inside a netns sees its own.
std::string threadLocalProcPath(const std::string& path);

}  // namespace ct
