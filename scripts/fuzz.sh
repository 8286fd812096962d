#!/usr/bin/env bash
# Builds the codec with clang's libFuzzer, AddressSanitizer and UBSan, and fuzzes the decoder
# for SECONDS (default 30) starting from the recorded kernel messages. Exits non-zero on any
# crash, leak or undefined behaviour; the reproducer is left in build-fuzz/.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-30}"
build=build-fuzz
cmake -S native -B "$build" -DCMAKE_CXX_COMPILER=clang++ -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "$build" --target fuzz_decode -j 2 >/dev/null
corpus="$build/corpus"
mkdir -p "$corpus"
# Seed with every recorded datagram (entries and expectations), one file each.
node -e '
const fs = require("fs"), path = require("path");
const [out, ...captures] = process.argv.slice(1);
for (const capture of captures) {
  const data = fs.readFileSync(capture);
  for (let o = 0, i = 0; o + 4 <= data.length; i++) {
    const n = data.readUInt32LE(o);
    fs.writeFileSync(path.join(out, `seed-${path.basename(capture, ".bin")}-${i}`), data.subarray(o + 4, o + 4 + n));
    o += 4 + n;
  }
}' "$corpus" test/fixtures/kernel/dump.bin test/fixtures/kernel/expect.bin
cd "$build"
./fuzz_decode -max_total_time="$seconds" -max_len=65536 -print_final_stats=1 corpus 2>&1 | tail -n 12
