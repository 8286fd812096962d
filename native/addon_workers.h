// Async entry points that run on the thread pool: opening a handle (in a namespace), and file
// operations inside a namespace. Each returns a promise.
#pragma once

#include <napi.h>

namespace ct::addon {

// open(netnsPath | null): a NativeHandle with a ctnetlink socket made inside the namespace.
Napi::Value openHandle(const Napi::CallbackInfo& info);

// netnsReadFile(ns, path), netnsWriteFile(ns, path, data), netnsListDir(ns, path): procfs and
// sysfs as a thread inside `ns` sees them.
Napi::Value netnsReadFile(const Napi::CallbackInfo& info);
Napi::Value netnsWriteFile(const Napi::CallbackInfo& info);
Napi::Value netnsListDir(const Napi::CallbackInfo& info);

}  // namespace ct::addon
