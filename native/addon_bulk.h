// The bulk-change wrappers: a NativeBulk object (createMany() and updateMany() batches on a socket
// of its own, each batch a promise of one errno per item) and a NativeDeleteRun object (one
// deleteMatching() pass on the thread pool, its counters readable while it runs, abort()).
#pragma once

#include <napi.h>

#include <vector>

#include "filter.h"

namespace ct::addon {

// The NativeBulk and NativeDeleteRun classes, once per environment (AddonData).
Napi::Function defineBulkClass(Napi::Env env);
Napi::Function defineDeleteRunClass(Napi::Env env);

// A NativeBulk for the namespace `nsFd` (-1: this process's); its socket opens with the first batch.
Napi::Object newBulk(Napi::Env env, int nsFd);

// A started NativeDeleteRun over `filters` (ORed).
Napi::Object newDeleteRun(Napi::Env env, int nsFd, std::vector<ct::Filter> filters, bool allowFlush);

// flushSupport(): what the kernel's filtered flush honours ({ family, mark, status, zone, problem? }).
Napi::Value flushSupportToJs(const Napi::CallbackInfo& info);

}  // namespace ct::addon
