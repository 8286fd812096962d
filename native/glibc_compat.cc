// Keeps the addon loadable wherever official Node 20 runs. Node's own binary needs no more than
// GLIBC_2.28, GLIBCXX_3.4.21 and CXXABI_1.3.9, so neither may the addon.
//
// Debian 12's GCC 12 headers make every translation unit reference a few library symbols that
// only newer systems export. Each is defined here instead, with the same behaviour, and
// native/exports.map keeps these definitions local to the addon, so they never clash with the
// process's own libstdc++. test/unit/package/prebuilds.test.ts reads the built binaries and fails
// when a newer symbol version appears. Linking libstdc++ statically is no way out: this
// toolchain's archive itself needs glibc 2.34+ (pthread_* moved into libc, _dl_find_object).
//
// The libstdc++ functions below are that library's internals, declared by the very headers the
// rest of the addon is compiled with, so their definitions here match what the callers expect.

#include <condition_variable>
#include <cstring>
#include <memory>
#include <mutex>
#include <new>
#include <thread>
#include <typeinfo>

// Only glibc builds with libstdc++ need this; musl and libc++ builds compile it to nothing.
// (Both macros exist only once a library header is included, hence the includes first.)
#if defined(__linux__) && defined(__GLIBC__) && defined(__GLIBCXX__)

#include <pthread.h>

#if defined(_GLIBCXX_RELEASE) && _GLIBCXX_RELEASE >= 11
// glibc 2.32's flag that lets libstdc++ skip atomics in a single-threaded process
// (GLIBC_2.32). Always 0 here: the addon always takes the atomic path, which is correct in
// every process and costs nothing next to a netlink round trip.
extern "C" {
char __libc_single_threaded = 0;
}

// Called by std::allocator when a size overflows (GLIBCXX_3.4.29).
void std::__throw_bad_array_new_length() {
  throw std::bad_array_new_length();
}
#endif

#if defined(_GLIBCXX_RELEASE) && _GLIBCXX_RELEASE >= 12
// GCC 12 moved condition_variable::wait to a new symbol version (GLIBCXX_3.4.30); the
// operation is the same pthread call as before.
void std::condition_variable::wait(std::unique_lock<std::mutex>& lock) {
  pthread_cond_wait(native_handle(), lock.mutex()->native_handle());
}
#endif

#if defined(_GLIBCXX_RELEASE) && _GLIBCXX_RELEASE >= 9
// make_shared's type check when RTTI is off (GLIBCXX_3.4.26). Reached only with a real
// type_info, so its name can be read; equal names mean equal types, as type_info::operator==.
bool std::_Sp_make_shared_tag::_S_eq(const std::type_info& ti) noexcept {
  return std::strcmp(ti.name(), "St19_Sp_make_shared_tag") == 0;
}
#endif

#if defined(_GLIBCXX_RELEASE) && _GLIBCXX_RELEASE >= 7 && defined(_GLIBCXX_HAS_GTHREADS)
// std::thread's start and its state's destructor (GLIBCXX_3.4.22): a pthread that runs the
// state and then deletes it. An exception leaving the thread's function ends the process, as
// the standard asks (std::terminate through noexcept).
//
// glibc 2.34 moved pthread_create into libc under a new version (GLIBC_2.34); the older
// version, which libpthread provides on older systems (and Node loads libpthread), is the same
// function.
#if defined(__x86_64__)
__asm__(".symver pthread_create, pthread_create@GLIBC_2.2.5");
#elif defined(__aarch64__)
__asm__(".symver pthread_create, pthread_create@GLIBC_2.17");
#endif

namespace {
void* runThreadState(void* state) noexcept {
  std::unique_ptr<std::thread::_State> owned(static_cast<std::thread::_State*>(state));
  owned->_M_run();
  return nullptr;
}
}  // namespace

std::thread::_State::~_State() = default;

void std::thread::_M_start_thread(_State_ptr state, void (*)()) {
  const int err = pthread_create(&_M_id._M_thread, nullptr, &runThreadState, state.get());
  if (err != 0) std::__throw_system_error(err);
  state.release();  // the new thread owns it now
}
#endif

#endif
