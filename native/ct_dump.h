// A table dump on its own thread and socket. The thread receives and decodes; finished
// batches wait in a short queue. When the queue is full the thread stops receiving, so the
// kernel stops producing: memory stays bounded however large the table and however slow
// the consumer.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>

#include "ct_codec.h"
#include "sys_error.h"

namespace ct {

struct DumpCounters {
  uint64_t messages = 0;
  uint64_t entries = 0;
  uint64_t duplicates = 0;
  uint64_t filteredOut = 0;
  bool kernelFiltered = false;
};

class DumpSession {
 public:
  // `notify` runs on the dump thread whenever take() has something new.
  DumpSession(int nsFd, const Filter* filter, size_t batchSize, std::function<void()> notify);
  ~DumpSession();
  DumpSession(const DumpSession&) = delete;
  DumpSession& operator=(const DumpSession&) = delete;

  bool start(SysError& err);

  enum class Take { kBatch, kEnd, kError, kNothing };
  Take take(Batch& out, SysError& err);

  // Ends the dump and joins the thread. Safe to call more than once.
  void stop();
  DumpCounters counters() const;

 private:
  void run();
  bool runDump(SysError& err);
  bool publish(Batch& batch);  // false when stopping
  void finish(const SysError* err);

  int nsFd_ = -1;
  Filter filter_;
  bool hasFilter_;
  size_t batchSize_;
  std::function<void()> notify_;
  int wakeFd_ = -1;
  std::thread thread_;

  mutable std::mutex mu_;
  std::condition_variable spaceAvailable_;
  std::deque<Batch> ready_;
  bool finished_ = false;
  bool failed_ = false;
  SysError error_;
  std::atomic<bool> stopping_{false};

  std::atomic<uint64_t> messages_{0}, entries_{0}, duplicates_{0}, filteredOut_{0};
  std::atomic<bool> kernelFiltered_{false};
};

}  // namespace ct
