#include "netns.h"

#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <linux/magic.h>
#include <linux/nsfs.h>

#include <thread>

namespace ct {

namespace {

// Older uapi headers lack these; the numbers are the same on every architecture (Linux 5.1+).
#ifndef SYS_pidfd_open
#define SYS_pidfd_open 434
#endif
#ifndef SYS_pidfd_send_signal
#define SYS_pidfd_send_signal 424
#endif
// linux/pidfd.h, Linux 6.11: a pidfd's network namespace as an nsfs descriptor.
constexpr unsigned long kPidfdGetNetNamespace = _IO(0xFF, 4);

// Keeps `fd` when it is a network namespace; else closes it and sets `err`.
int checkNetns(int fd, SysError& err) {
  struct statfs fs {};
  if (::fstatfs(fd, &fs) != 0) {
    err = SysError::fromErrno(errno, "open netns");
    ::close(fd);
    return -1;
  }
  if (static_cast<unsigned long>(fs.f_type) != NSFS_MAGIC) {
    err = SysError::fromErrno(EINVAL, "open netns");
    err.detail = "not a namespace file (nsfs)";
    ::close(fd);
    return -1;
  }
  // NS_GET_NSTYPE exists since Linux 4.11; ENOTTY means the file is not a namespace at all.
  int type = ::ioctl(fd, NS_GET_NSTYPE);
  if (type < 0 && errno != ENOTTY && errno != EINVAL) {
    err = SysError::fromErrno(errno, "open netns");
    ::close(fd);
    return -1;
  }
  if (type != CLONE_NEWNET) {
    err = SysError::fromErrno(EINVAL, "open netns");
    err.detail = "not a network namespace";
    ::close(fd);
    return -1;
  }
  return fd;
}

}  // namespace

int openNetns(const std::string& path, SysError& err) {
  // O_NONBLOCK: opening a FIFO would otherwise wait for a writer, holding a pool thread forever.
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
  if (fd < 0) {
    err = SysError::fromErrno(errno, "open netns");
    return -1;
  }
  return checkNetns(fd, err);
}

int openNetnsOfPid(int pid, SysError& err) {
  if (pid <= 0) {
    err = SysError::fromErrno(ESRCH, "open netns");
    return -1;
  }
  std::string path = "/proc/" + std::to_string(pid) + "/ns/net";
  int pidfd = static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
  if (pidfd < 0) {
    if (errno == ENOSYS) return openNetns(path, err);  // before Linux 5.3: nothing to pin with
    err = SysError::fromErrno(errno, "open netns");
    if (errno == ESRCH) err.detail = "no process " + std::to_string(pid);
    return -1;
  }
  int fd = ::ioctl(pidfd, kPidfdGetNetNamespace, 0);
  if (fd >= 0) {
    ::close(pidfd);
    return checkNetns(fd, err);
  }
  if (errno != ENOTTY && errno != EINVAL) {  // ESRCH: it exited; EACCES: not ours to look at
    err = SysError::fromErrno(errno, "open netns");
    if (errno == ESRCH) err.detail = "no process " + std::to_string(pid);
    ::close(pidfd);
    return -1;
  }
  // Before 6.11: open by path while the pidfd holds the process; it still being alive afterwards
  // proves the pid was not reused in between, so the namespace opened is this process's.
  fd = openNetns(path, err);
  if (fd >= 0 && ::syscall(SYS_pidfd_send_signal, pidfd, 0, nullptr, 0) != 0) {
    err = SysError::fromErrno(errno, "open netns");
    if (errno == ESRCH) err.detail = "process " + std::to_string(pid) + " exited while its namespace was opened";
    ::close(fd);
    fd = -1;
  }
  ::close(pidfd);
  return fd;
}

bool enterNetns(int nsFd, SysError& err) {
  // setns(-1) would fail with EBADF anyway; say so before a caller takes -1 for "stay here".
  if (nsFd < 0) {
    err = SysError::fromErrno(EBADF, "setns");
    return false;
  }
  if (::setns(nsFd, CLONE_NEWNET) != 0) {
    err = SysError::fromErrno(errno, "setns");
    return false;
  }
  return true;
}

bool runInNetns(int nsFd, const std::function<void()>& work, SysError& err) {
  bool entered = false;
  try {
    std::thread worker([&] {
      try {
        entered = enterNetns(nsFd, err);
        if (entered) work();
      } catch (...) {  // bad_alloc in `work`: an error like the others, not the end of the process
        err = SysError::fromCurrentException("netns work");
        entered = false;
      }
    });
    worker.join();
  } catch (...) {  // the thread could not start (EAGAIN: a pids limit)
    err = SysError::fromCurrentException("create thread");
    return false;
  }
  return entered;
}

std::string threadLocalProcPath(const std::string& path) {
  static const std::string kProcNet = "/proc/net/";
  static const std::string kSelfNet = "/proc/self/net/";
  if (path.compare(0, kProcNet.size(), kProcNet) == 0)
    return "/proc/thread-self/net/" + path.substr(kProcNet.size());
  if (path.compare(0, kSelfNet.size(), kSelfNet) == 0)
    return "/proc/thread-self/net/" + path.substr(kSelfNet.size());
  return path;
}

NetnsCopy::NetnsCopy(int nsFd) : wanted_(nsFd >= 0) {
  if (!wanted_) return;
  fd_ = ::fcntl(nsFd, F_DUPFD_CLOEXEC, 0);
  if (fd_ < 0) dupErrno_ = errno;
}

bool NetnsCopy::check(SysError& err) const {
  if (!wanted_ || fd_ >= 0) return true;
  err = SysError::fromErrno(dupErrno_ != 0 ? dupErrno_ : EBADF, "dup netns");
  return false;
}

bool NetnsCopy::run(const std::function<void()>& work, SysError& err) const {
  if (!check(err)) return false;
  if (!wanted_) {
    work();
    return true;
  }
  return runInNetns(fd_, work, err);
}

bool NetnsCopy::enter(SysError& err) const { return check(err) && (!wanted_ || enterNetns(fd_, err)); }

void NetnsCopy::reset() {
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
  dupErrno_ = EBADF;  // closed: a later use is an error, not this process's namespace
}

}  // namespace ct
