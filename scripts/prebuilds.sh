#!/usr/bin/env bash
# Builds the Node-API prebuilds the package ships: prebuilds/linux-<arch>/conntrack.napi.glibc.node
# for x64 (this machine's g++) and arm64 (Debian's g++-aarch64-linux-gnu), stripped. One binary per
# architecture serves every Node version (N-API); node-gyp-build picks it at load time.
#
# Each build runs in a scratch copy of binding.gyp and native/, so the local build/ is left alone.
# Usage: scripts/prebuilds.sh [ARCH...]   (default: x64 arm64)
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
root="$PWD"
archs=("$@")
((${#archs[@]})) || archs=(x64 arm64)

# npm puts its own node-gyp on PATH for `npm run`; outside npm, use the copy npm bundles.
node_gyp=(node-gyp)
if ! command -v node-gyp >/dev/null 2>&1; then
  node_gyp=(node "$(npm root -g)/npm/node_modules/node-gyp/bin/node-gyp.js")
fi
# node-gyp reads npm's settings only from the environment (`npm run` exports them): the Node
# headers come from `nodedir` when npm is configured with one (no download).
if [[ -z "${npm_config_nodedir:-}" ]]; then
  nodedir="$(npm config get nodedir 2>/dev/null || true)"
  [[ -n "$nodedir" && "$nodedir" != undefined && "$nodedir" != null ]] && export npm_config_nodedir="$nodedir"
fi

build_one() {
  local arch="$1" prefix=""
  case "$arch" in
    x64) [[ "$(uname -m)" == x86_64 ]] || { echo "x64 prebuilds are built on an x86_64 machine" >&2; return 1; } ;;
    arm64) [[ "$(uname -m)" == aarch64 ]] || prefix=aarch64-linux-gnu- ;;
    *) echo "no prebuild recipe for arch $arch (x64, arm64)" >&2; return 1 ;;
  esac
  if [[ -n "$prefix" ]] && ! command -v "${prefix}g++" >/dev/null 2>&1; then
    echo "${prefix}g++ not found: apt-get install g++-aarch64-linux-gnu" >&2
    return 1
  fi

  local work
  work="$(mktemp -d)"
  trap 'rm -rf "$work"' RETURN
  cp binding.gyp "$work/"
  mkdir "$work/native"
  cp native/*.cc native/*.h native/*.map "$work/native/"
  ln -s "$root/node_modules" "$work/node_modules"

  echo "==> prebuild linux-$arch"
  (
    cd "$work"
    if [[ -n "$prefix" ]]; then
      export CC="${prefix}gcc" CXX="${prefix}g++" LINK="${prefix}g++" AR="${prefix}ar"
    fi
    "${node_gyp[@]}" rebuild --arch="$arch" --jobs=2 --loglevel=warn
  )
  local out="prebuilds/linux-$arch/conntrack.napi.glibc.node"
  mkdir -p "$(dirname "$out")"
  "${prefix}strip" --strip-unneeded -o "$out" "$work/build/Release/conntrack.node"
  echo "    $out ($(stat -c %s "$out") bytes)"
}

for arch in "${archs[@]}"; do
  build_one "$arch"
done
