#include "netns.h"

#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <linux/nsfs.h>

#include <thread>

namespace ct {

int openNetns(const std::string& path, SysError& err) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    err = SysError::fromErrno(errno, "open netns");
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

}  // namespace ct
