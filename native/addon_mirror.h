// The NativeMirror object: a MirrorSession (ct_mirror.h) and the queries on its store.
#pragma once

#include <napi.h>

#include "ct_dump.h"
#include "filter.h"

namespace ct::addon {

Napi::Function defineMirrorClass(Napi::Env env);
// `onSync(error | null, { reason, removed, added })` runs on the main thread after each dump of the
// mirror; `onChange()` when change records wait to be taken (takeChanges).
Napi::Object newMirror(Napi::Env env, int nsFd, const ct::Filter* filter, const ct::EventOptions& events,
                       uint32_t resyncIntervalMs, Napi::Function onSync, Napi::Function onChange);

}  // namespace ct::addon
