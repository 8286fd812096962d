// Errors from system calls and from the kernel's netlink answers, carried without Node types
// so every layer below the binding builds and tests on its own.
#pragma once

#include <string>

namespace ct {

struct SysError {
  int errnum = 0;        // positive errno; 0 for a protocol error
  std::string op;        // the system call or request that failed, e.g. "setns" or "ctnetlink dump"
  std::string detail;    // kernel extended-ack text, or what was wrong with a message
  bool protocol = false; // the kernel sent something we cannot frame or decode

  static SysError fromErrno(int e, std::string operation) {
    SysError err;
    err.errnum = e;
    err.op = std::move(operation);
    return err;
  }
  static SysError malformed(std::string what) {
    SysError err;
    err.protocol = true;
    err.op = "decode";
    err.detail = std::move(what);
    return err;
  }
};

}  // namespace ct
