#!/usr/bin/env bash
# The test suites (unit and integration) against the addon built with AddressSanitizer and UBSan
# (`npm run build:asan`: cmake-js and clang, native/CMakeLists.txt). CONNTRACK_PREBUILD points
# node-gyp-build at that build, and the compiler's ASan runtime is preloaded (it must come first in
# a process that was not built with it), into every process the tests start as well. Fails when a
# test fails or when any process wrote a sanitizer report; the reports are printed.
#
#   scripts/test-asan.sh [vitest arguments]     e.g. scripts/test-asan.sh --project unit
#   scripts/test-asan.sh --ci                   what CI runs (scripts/test-all.sh): see below
#
# Leak detection is off. Node does not free its heap at exit, so LeakSanitizer would list
# thousands of V8 and libuv allocations in every process, and a suppression cannot single out
# the addon: each of its allocations is made under Node's frames too. What the addon leaks is
# measured instead by the lifecycle tests (test/integration/table/cycles.test.ts, leaks.test.ts):
# descriptors and threads exact, native memory within tolerances, over thousands of cycles.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
root="$PWD"

build_log="$(mktemp)"
if ! npm run build:asan >"$build_log" 2>&1; then
  cat "$build_log" >&2
  exit 1
fi
rm -f "$build_log"
[[ -f dist/lib/index.js ]] || npm run build:ts

compiler="$(sed -n 's/^CMAKE_CXX_COMPILER:[A-Z]*=//p' build-asan/CMakeCache.txt)"
runtime="$("$compiler" -print-file-name="libclang_rt.asan-$(uname -m).so")"
if [[ ! -f "$runtime" ]]; then
  echo "no ASan runtime next to $compiler ($runtime): install libclang-rt-dev for it" >&2
  exit 1
fi

# CI's subset: the unit tests (the decoder on captured kernel messages, the binding's checks), the
# table's integration tests (dumps, events, entry and expectation requests, bulk changes, the
# mirror, namespaces, workers terminated midway, process exits) and the tuning ones (files read and
# written inside a namespace): between them every function of the binding. The CLI, metrics and
# doctor files reach the same native calls through the library; the whole suite (22 min here)
# runs without --ci.
if [[ "${1:-}" == "--ci" ]]; then
  shift
  set -- test/unit/ test/integration/table/ test/integration/tuning/ "$@"
fi

reports="$(mktemp -d /tmp/conntrack-sanitizers.XXXXXX)"
# Tests that repeat an operation hundreds of times run fewer rounds (test/helpers/sanitizers.ts).
export CONNTRACK_SANITIZERS=1
export CONNTRACK_PREBUILD="$root/build-asan"
export ASAN_OPTIONS="detect_leaks=0:log_path=$reports/asan:abort_on_error=1:strict_string_checks=1:check_initialization_order=1:detect_stack_use_after_return=1"
export UBSAN_OPTIONS="print_stacktrace=1:report_error_type=1:log_path=$reports/ubsan"
# Which addon the tests will load, said before they run (and proof the preload works).
LD_PRELOAD="$runtime" node -e '
const file = require("node-gyp-build").resolve(process.cwd());
if (!file.startsWith(process.env.CONNTRACK_PREBUILD)) throw new Error(`loads ${file}, not the sanitizer build`);
require(file);
console.log(`sanitizer build: ${file}, runtime preloaded`);'

# Left to the plain build: what the sanitizers themselves change. The lifecycle cycles measure
# native memory (ASan's quarantine holds freed blocks), the descriptor-limit test counts
# descriptors (the runtime opens its own), the wake-up test times a decoder held by gdb, and the
# prebuild test reads the prebuilds, not this build.
excluded=(
  --exclude 'test/integration/table/cycles.test.ts'
  --exclude 'test/integration/table/limits.test.ts'
  --exclude 'test/integration/table/wakeup.test.ts'
  --exclude 'test/unit/package/prebuilds.test.ts'
)
started=$SECONDS
status=0
LD_PRELOAD="$runtime${LD_PRELOAD:+:$LD_PRELOAD}" npx vitest run "${excluded[@]}" "$@" || status=$?
echo "suite under sanitizers: exit $status after $((SECONDS - started)) s"

if compgen -G "$reports/*" >/dev/null; then
  for report in "$reports"/*; do
    printf '\n== %s\n' "$report"
    cat "$report"
  done
  echo "sanitizers: $(ls "$reports" | wc -l) report(s), in $reports" >&2
  exit 1
fi
rmdir "$reports"
echo "sanitizers: no report"
exit "$status"
