#!/usr/bin/env bash
# Runs every test of the project on a fresh Debian machine (as root): installs the system tools
# the integration tests drive, installs npm dependencies, builds (with the x64 and arm64
# prebuilds), type-checks, runs all vitest projects, checks the packed package as users install it
# (scripts/check-package.sh), runs the unit and table tests again against the addon built with ASan
# and UBSan (scripts/test-asan.sh --ci; `npm run test:asan` runs every file that way) and fuzzes the
# decoder and the request builders. Exits non-zero on the first failure.
#
# CI defaults to true here: this is the run-everything command, and with CI=true an integration
# suite whose prerequisites are missing fails instead of being skipped (test/helpers/gate.ts).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

export CI="${CI:-true}"
# Tools live in sbin; a non-login root shell may not have it on PATH.
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"

log() { printf '\n==> %s\n' "$*"; }

# command -> Debian package that provides it
declare -A PACKAGE_OF=(
  [conntrack]=conntrack
  [nft]=nftables
  [ip]=iproute2
  [ping]=iputils-ping
  [sysctl]=procps
  [mosquitto]=mosquitto
  [unshare]=util-linux
  [nsenter]=util-linux
  [setpriv]=util-linux
  [flock]=util-linux
  # Legacy iptables, for the rule scanner's iptables-legacy path (test/integration/doctor).
  [iptables-legacy-save]=iptables
  # Holds a dump thread at a chosen point (test/integration/table/wakeup.test.ts).
  [gdb]=gdb
  # The exporter's end-to-end test: a real Prometheus server and promtool (the test runs its own
  # server inside a namespace it makes, so a system service the package may start is not in its
  # way), bcrypt hashes from htpasswd, certificates from openssl.
  [prometheus]=prometheus
  [promtool]=prometheus
  [htpasswd]=apache2-utils
  [openssl]=openssl
  # node-gyp needs a compiler, make and python to build the addon.
  [g++]=g++
  [make]=make
  [python3]=python3
  # The fuzzers (scripts/fuzz.sh) and the sanitizer build of the addon (npm run build:asan,
  # scripts/test-asan.sh): clang, its sanitizer runtimes (below), cmake.
  [clang++]=clang
  [cmake]=cmake
  # The arm64 prebuild (scripts/prebuilds.sh), run under emulation by scripts/check-package.sh;
  # readelf reads both prebuilds' symbol versions (test/unit/package/prebuilds.test.ts).
  [aarch64-linux-gnu-g++]=g++-aarch64-linux-gnu
  [qemu-aarch64-static]=qemu-user-static
  [readelf]=binutils
)

install_system_packages() {
  local missing=() tool
  for tool in "${!PACKAGE_OF[@]}"; do
    command -v "$tool" >/dev/null 2>&1 || missing+=("${PACKAGE_OF[$tool]}")
  done
  # Library packages, not commands: libFuzzer and the sanitizer runtimes; the kernel's uapi headers
  # (the addon builds against them, and the tests read the kernel's own numbering from them).
  local package
  for package in libclang-rt-14-dev linux-libc-dev; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q 'ok installed' || missing+=("$package")
  done
  if ((${#missing[@]} == 0)); then
    log "system tools: all present"
    return
  fi
  if [[ $(id -u) -ne 0 ]]; then
    echo "missing packages ${missing[*]}, and not root: install them, or run this script as root" >&2
    exit 1
  fi
  # The package lists of a fresh machine may be empty or stale: refresh only when installing.
  log "installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update
  apt-get install -y --no-install-recommends "${missing[@]}"
}

install_npm_dependencies() {
  if [[ -f package-lock.json ]]; then
    # npm records what it installed in node_modules/.package-lock.json; when that is newer than the
    # lockfile and the manifest, node_modules is current and `npm ci` (which deletes it first)
    # would only cost time.
    if [[ -f node_modules/.package-lock.json \
          && node_modules/.package-lock.json -nt package-lock.json \
          && node_modules/.package-lock.json -nt package.json ]]; then
      log "npm dependencies: node_modules is current"
    else
      log "npm ci"
      npm ci
    fi
  else
    log "npm install (no package-lock.json)"
    npm install
  fi
}

main() {
  install_system_packages
  install_npm_dependencies
  log "npm run build"
  npm run build
  log "npm run prebuilds (linux-x64, linux-arm64)"
  npm run prebuilds
  log "npm run typecheck"
  npm run typecheck
  log "vitest run (all projects)"
  local report
  report="$(mktemp)"
  npx vitest run --reporter=default --reporter=json --outputFile="$report"
  # The plain closing line CI reads, whatever the runner prints.
  node -e 'const r = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"));
    console.log(`tests: ${r.numPassedTests} passed, ${r.numFailedTests} failed, ${r.numPendingTests} skipped`);' "$report"
  rm -f "$report"
  log "the package as users install it (scripts/check-package.sh)"
  bash scripts/check-package.sh --reuse-prebuilds
  log "unit and table tests against the addon built with ASan and UBSan (scripts/test-asan.sh --ci)"
  bash scripts/test-asan.sh --ci
  log "fuzz the decoder and the request builders (ASan + UBSan), 60 s"
  bash scripts/fuzz.sh 60
  log "all tests passed"
}

# Sourcing the file (for checking one step by hand) defines the functions without running them.
if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
  main "$@"
fi
