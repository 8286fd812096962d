// The handle wrapper: a NativeHandle object owning one ctnetlink socket (and namespace) for
// statistics and one-entry requests, answered synchronously when the kernel already replied, and
// starting dumps and event subscriptions on sockets of their own.
#pragma once

#include <napi.h>

#include <cstdint>

#include "netlink_socket.h"

namespace ct::addon {

// The NativeHandle class, once per environment (AddonData::handleConstructor).
Napi::Function defineHandleClass(Napi::Env env);

// A NativeHandle that takes over `nsFd` (set to -1) and `socket` only once it exists.
Napi::Object newHandle(Napi::Env env, int& nsFd, ct::NetlinkSocket& socket);

}  // namespace ct::addon
