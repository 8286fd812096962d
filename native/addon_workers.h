// Async entry points that run on the thread pool: opening a handle (in a namespace), and file
// operations inside a namespace. Each returns a promise.
#pragma once

#include <napi.h>

namespace ct::addon {

// open(netnsPath | pid | null): a NativeHandle with a ctnetlink socket made inside the namespace
// (a pid's is pinned with a pidfd, see ct::openNetnsOfPid).
Napi::Value openHandle(const Napi::CallbackInfo& info);

// netnsReadFile(ns, path), netnsWriteFile(ns, path, data), netnsListDir(ns, path): procfs and
// sysfs as a thread inside `ns` sees them.
Napi::Value netnsReadFile(const Napi::CallbackInfo& info);
Napi::Value netnsWriteFile(const Napi::CallbackInfo& info);
Napi::Value netnsListDir(const Napi::CallbackInfo& info);

enum class FileOp { kRead, kWrite, kList };

// The same in a handle's namespace, by its descriptor `nsFd` (-1: this process's namespace), never
// by path again: info[0] the path, info[1] the data to write.
Napi::Value netnsFileOnFd(const Napi::CallbackInfo& info, int nsFd, FileOp op);

}  // namespace ct::addon
