// The NativeMirror object: a MirrorSession (ct_mirror.h) and the queries on its store.
#pragma once

#include <napi.h>

#include "ct_dump.h"
#include "filter.h"

namespace ct::addon {

Napi::Function defineMirrorClass(Napi::Env env);
// `onSync(error | null)` runs on the main thread after each dump of the mirror.
Napi::Object newMirror(Napi::Env env, int nsFd, const ct::Filter* filter, const ct::EventOptions& events,
                       Napi::Function onSync);

}  // namespace ct::addon
