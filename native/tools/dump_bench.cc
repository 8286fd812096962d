// Runs a DumpSession with a consumer thread that only takes batches: the native pipeline's
// cost without JS. Usage: dump_bench NETNS_PATH [BATCH]
#include <fcntl.h>
#include <unistd.h>

#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <mutex>

#include "../ct_dump.h"
#include "../netns.h"

int main(int argc, char** argv) {
  if (argc < 2) return 2;
  ct::SysError err;
  int ns = ct::openNetns(argv[1], err);
  if (ns < 0) {
    std::perror("netns");
    return 1;
  }
  size_t batchSize = argc > 2 ? std::strtoul(argv[2], nullptr, 10) : 1024;
  std::mutex mu;
  std::condition_variable cv;
  bool signalled = false;
  auto start = std::chrono::steady_clock::now();
  ct::DumpSession session(ns, nullptr, batchSize, [&] {
    std::lock_guard<std::mutex> lock(mu);
    signalled = true;
    cv.notify_one();
  });
  if (!session.start(err)) return 1;
  size_t entries = 0;
  for (;;) {
    ct::Batch batch;
    auto take = session.take(batch, err);
    if (take == ct::DumpSession::Take::kBatch) {
      entries += batch.count;
      continue;
    }
    if (take != ct::DumpSession::Take::kNothing) break;
    std::unique_lock<std::mutex> lock(mu);
    cv.wait(lock, [&] { return signalled; });
    signalled = false;
  }
  double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::printf("{\"entries\": %zu, \"seconds\": %.4f}\n", entries, s);
  return 0;
}
