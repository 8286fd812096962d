// The handle wrapper: a NativeHandle object owning one ctnetlink socket (and namespace) for
// statistics and one-entry requests, answered synchronously when the kernel already replied, and
// starting dumps and event subscriptions on sockets of their own.
#pragma once

#include <napi.h>

#include <cstdint>

namespace ct::addon {

// The NativeHandle class, once per environment (AddonData::handleConstructor).
Napi::Function defineHandleClass(Napi::Env env);

// A NativeHandle that owns `nsFd` (-1: none) and the open socket `socketFd`.
Napi::Object newHandle(Napi::Env env, int nsFd, int socketFd, uint32_t portId);

}  // namespace ct::addon
