// Decodes a capture made by `benchmarks/bin/rawdump --save FILE` repeatedly and reports ns per
// entry: the native decoder's cost without Node. Build: see native/CMakeLists.txt.
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iterator>
#include <vector>

#include "../batch_sink.h"

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: decode_bench CAPTURE [ROUNDS]\n");
    return 2;
  }
  std::ifstream in(argv[1], std::ios::binary);
  std::vector<uint8_t> data((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  int rounds = argc > 2 ? std::atoi(argv[2]) : 10;
  size_t entries = 0;
  auto start = std::chrono::steady_clock::now();
  for (int round = 0; round < rounds; ++round) {
    ct::KeySet seen;
    ct::Batch batch;
    for (size_t off = 0; off + 4 <= data.size();) {
      uint32_t len;
      std::memcpy(&len, &data[off], 4);
      off += 4;
      if (off + len > data.size()) break;
      ct::SysError err;
      if (!ct::decodeDatagramToBatch(&data[off], len, nullptr, &seen, batch, err)) {
        std::fprintf(stderr, "decode error: %s\n", err.detail.c_str());
        return 1;
      }
      off += len;
      entries += batch.count;
      batch.clear();
    }
  }
  double ns = std::chrono::duration<double, std::nano>(std::chrono::steady_clock::now() - start).count();
  std::printf("{\"entries\": %zu, \"nsPerEntry\": %.1f}\n", entries, ns / static_cast<double>(entries));
  return 0;
}
