// A table dump, or a subscription to the table's events, on its own socket and two threads: a
// receiver that only pulls datagrams from the kernel (for a dump the kernel builds the next
// datagram inside that receive call, and that is most of its cost), and a decoder that turns
// them into batches. Both queues are short; when the consumer is slow they fill and the
// receiver stops receiving. A dump then pauses in the kernel, so memory stays bounded however
// large the table; events pile up in the socket's buffer until the kernel has to drop them,
// which the receiver sees as ENOBUFS and reports in the next batch (overflowsBefore).
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>

#include "batch_sink.h"
#include "netns.h"
#include "sys_error.h"

namespace ct {

struct DumpCounters {
  uint64_t messages = 0;
  uint64_t entries = 0;
  uint64_t duplicates = 0;
  uint64_t filteredOut = 0;
  bool kernelFiltered = false;
  uint64_t overflows = 0;  // events: ENOBUFS reports (each lost one or more events)
  uint64_t receiveBufferBytes = 0;  // events: the socket's buffer as the kernel sizes it now
  uint64_t bufferGrowths = 0;       // events: times the buffer grew after an overflow
};

// What an event subscription listens to.
struct EventOptions {
  uint32_t groups = 0;          // bit (1 << (NFNLGRP_CONNTRACK_* - 1)) per group
  int receiveBufferBytes = 0;   // socket buffer for bursts; 0 keeps the system default
  // Reliable delivery (NETLINK_BROADCAST_ERROR + NETLINK_NO_ENOBUFS): the kernel learns when an
  // event cannot be queued here and holds it back (destroys are retried) instead of dropping it.
  bool reliable = false;
  // Otherwise each overflow doubles the buffer up to this (0: never grows).
  int maxReceiveBufferBytes = 0;
  // Runs on the receiver thread once every group is joined (a mirror dumps only after that).
  std::function<void()> subscribed;
  bool expectations = false;    // the expectation groups: expectation records (batch_sink.h)
};

class DumpSession {
 public:
  // `notify` runs on the dump thread whenever take() has something new. With `events` the
  // session listens to the table's events instead of dumping it, until stop().
  DumpSession(int nsFd, const Filter* filter, size_t batchSize, std::function<void()> notify,
              const EventOptions* events = nullptr);
  // A dump that hands over group counts (Batch::counts) instead of entries, once it has seen all.
  void summarizeBy(std::vector<SummaryKey> keys) { grouper_ = std::make_unique<Grouper>(std::move(keys)); }
  // A mirror's session: entries go to `consumer` on the decoder thread instead of batches, and an
  // overflow calls `onOverflow` there instead of being queued for take().
  void consumeWith(std::function<void(const Entry&)> consumer, std::function<void()> onOverflow = nullptr) {
    consumer_ = std::move(consumer);
    onOverflow_ = std::move(onOverflow);
  }
  // Which table a dump asks for (buildDumpRequest's `msg`): the counters-zeroing dump, the dying
  // or the unconfirmed list. Before start().
  void dumpMessage(uint8_t msg) { dumpMessage_ = msg; }
  ~DumpSession();
  DumpSession(const DumpSession&) = delete;
  DumpSession& operator=(const DumpSession&) = delete;

  bool start(SysError& err);

  enum class Take { kBatch, kEnd, kError, kNothing };
  Take take(Batch& out, SysError& err);

  // Ends the dump and joins the thread. Safe to call more than once.
  void stop();
  DumpCounters counters() const;

  // The most native memory the session's buffers hold at once (queued datagrams, batches being
  // filled or waiting), for the binding to report to V8, which does not see it.
  size_t bufferBytesBound() const;

 private:
  void receive();
  bool receiveAll(SysError& err);
  bool listen(SysError& err);
  bool pushOverflow();  // false when stopping
  bool rawQueueEmpty();
  // Blocks until `fd` is readable or stop() was called.
  enum class Wait { kReadable, kStop, kError };
  Wait waitReadable(int fd, SysError& err);
  void decode();
  bool publish(Batch& batch);  // false when stopping
  void finish(const SysError* err);
  bool pushRaw(std::vector<uint8_t>&& datagram, size_t len);  // false when stopping

  NetnsCopy netns_;  // the namespace the threads enter, if one was given
  Filter filter_;
  bool hasFilter_;
  size_t batchSize_;
  std::function<void()> notify_;
  bool listening_ = false;
  std::unique_ptr<Grouper> grouper_;
  std::function<void(const Entry&)> consumer_;
  std::function<void()> onOverflow_;
  uint8_t dumpMessage_ = 0;  // 0: IPCTNL_MSG_CT_GET
  EventOptions events_;
  std::atomic<uint64_t> overflows_{0};
  std::atomic<uint64_t> receiveBufferBytes_{0};
  std::atomic<uint64_t> bufferGrowths_{0};
  size_t queueBytes_ = 0;  // events: bound of raw_ in bytes (grows with the socket's buffer), under rawMu_
  bool growReceiveBuffer(int fd);
  int wakeFd_ = -1;
  std::thread receiver_;
  std::thread decoder_;

  // Receiver -> decoder.
  struct Raw {
    std::vector<uint8_t> data;
    size_t len = 0;
    bool overflow = false;  // events: the kernel dropped events here (ENOBUFS)
    uint32_t seq = 0;
  };
  std::mutex rawMu_;
  std::condition_variable rawReady_, rawSpace_;
  std::deque<Raw> raw_;
  size_t rawBytes_ = 0;  // datagram bytes in raw_
  std::vector<std::vector<uint8_t>> spare_;  // recycled datagram buffers
  SysError receiveError_;
  bool receiveFailed_ = false;
  bool receiverDone_ = false;  // end, error or stop: nothing more comes
  uint32_t expectedSeq_ = 0;  // of the request in flight
  std::atomic<uint64_t> expectedEntries_{0};  // the namespace's count when the dump began

  mutable std::mutex mu_;
  std::condition_variable spaceAvailable_;
  std::deque<Batch> ready_;
  bool finished_ = false;
  bool failed_ = false;
  SysError error_;
  std::atomic<bool> stopping_{false};

  DecodeCounters decoded_;
  std::atomic<uint64_t> entries_{0};  // handed to the consumer
};

}  // namespace ct
