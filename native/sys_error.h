// Errors from system calls and from the kernel's netlink answers, carried without Node types
// so every layer below the binding builds and tests on its own.
#pragma once

#include <errno.h>

#include <new>
#include <string>
#include <system_error>

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
  // Inside a catch block: the exception in flight as an error like the others, so a thread body or
  // a callback can end through its usual error path instead of letting the exception end the
  // process. std::system_error keeps its errno (a thread that cannot be created: EAGAIN);
  // bad_alloc is ENOMEM.
  static SysError fromCurrentException(std::string operation) {
    SysError err;
    err.op = std::move(operation);
    try {
      throw;
    } catch (const std::system_error& e) {
      err.errnum = e.code().value();
    } catch (const std::bad_alloc&) {
      err.errnum = ENOMEM;
    } catch (const std::exception& e) {
      err.detail = e.what();
    } catch (...) {
      err.detail = "unknown C++ exception";
    }
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
