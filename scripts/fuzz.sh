#!/usr/bin/env bash
# Builds the codec with clang's libFuzzer, AddressSanitizer and UBSan, and runs every fuzz target
# (native/tools/fuzz_*.cc) within SECONDS in all (default 30), one after the other, each for its
# share: the decoder (seeded with the recorded dump and event datagrams, test/fixtures/kernel) and
# the round trips of the dump and entry requests. Exits non-zero on any crash, leak, undefined
# behaviour or failed round trip; the reproducer is left in build-fuzz/ (TARGET-crash-...).
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]     e.g. scripts/fuzz.sh 60 fuzz_decode
#   FUZZ_RUNS=10000000 scripts/fuzz.sh         a number of executions per target instead of time
#
# Prints one line per target: executions, time, executions per second, corpus size.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-30}"
shift || true
targets=("$@")
((${#targets[@]} > 0)) || targets=(fuzz_decode fuzz_dump_request fuzz_entry_request)
build=build-fuzz
cmake -S native -B "$build" -DCMAKE_CXX_COMPILER=clang++ -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "$build" --target "${targets[@]}" -j 2 >/dev/null

# The decoder's seeds: every recorded datagram, one file each (dumps, events and expectations).
seed_datagrams() {
  node -e '
const fs = require("fs"), path = require("path");
const out = process.argv[1];
for (const capture of process.argv.slice(2)) {
  const data = fs.readFileSync(capture);
  const name = path.basename(capture, ".bin");
  for (let o = 0, i = 0; o + 4 <= data.length; i++) {
    const n = data.readUInt32LE(o);
    fs.writeFileSync(path.join(out, `seed-${name}-${i}`), data.subarray(o + 4, o + 4 + n));
    o += 4 + n;
  }
}' "$1" test/fixtures/kernel/dump.bin test/fixtures/kernel/events.bin test/fixtures/kernel/expect.bin
}

share=$((seconds / ${#targets[@]}))
((share > 0)) || share=1
for target in "${targets[@]}"; do
  corpus="$build/corpus/$target"
  mkdir -p "$corpus"
  [[ "$target" == fuzz_decode ]] && seed_datagrams "$corpus"
  if [[ -n "${FUZZ_RUNS:-}" ]]; then limit=(-runs="$FUZZ_RUNS"); else limit=(-max_total_time="$share"); fi
  log="$build/$target.log"
  status=0
  "$build/$target" "${limit[@]}" -max_len=65536 -print_final_stats=1 -artifact_prefix="$build/$target-" "$corpus" >"$log" 2>&1 || status=$?
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
  took=$(sed -n 's/^Done [0-9]* runs in \([0-9]*\) second.*/\1/p' "$log")
  if ((status != 0)); then
    tail -n 40 "$log"
    echo "$target: FAILED after ${runs:-?} executions (log: $log)" >&2
    exit "$status"
  fi
  echo "$target: ${runs} executions in ${took:-?} s ($(( runs / (${took:-1} > 0 ? ${took:-1} : 1) ))/s), corpus $(ls "$corpus" | wc -l) inputs, no failure"
done
