// What the binding's files share. The binding (addon*.cc) is the only code that includes napi.h:
// it converts between JS values and the native layers below it, nothing more.
#pragma once

#include <napi.h>

namespace ct::addon {

// Constructors per environment (worker threads each load the addon into their own).
struct AddonData {
  Napi::FunctionReference dumpConstructor;
  Napi::FunctionReference handleConstructor;
  Napi::FunctionReference mirrorConstructor;
  Napi::FunctionReference bulkConstructor;
  Napi::FunctionReference deleteRunConstructor;
};

}  // namespace ct::addon
