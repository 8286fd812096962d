// The dump wrapper: a NativeDump object that runs a ct::DumpSession (a dump, a summary or an
// event subscription) and settles read() promises with its batches on the main thread.
#pragma once

#include <napi.h>

#include <cstddef>
#include <vector>

#include "ct_dump.h"
#include "filter.h"
#include "record_layout.h"

namespace ct::addon {

// The NativeDump class, once per environment (AddonData::dumpConstructor).
Napi::Function defineDumpClass(Napi::Env env);

// A started NativeDump; throws the session's start error.
// `message`: the dump's request message (ct::DumpSession::dumpMessage), 0 for the table.
Napi::Object newDump(Napi::Env env, int nsFd, const ct::Filter* filter, size_t batchSize,
                     const ct::EventOptions* events, std::vector<ct::SummaryKey> summary, uint8_t message = 0);

}  // namespace ct::addon
