#include "flush_probe.h"

#include <errno.h>
#include <poll.h>
#include <sched.h>
#include <sys/socket.h>

#include <linux/netfilter/nf_conntrack_common.h>

#include <cstring>
#include <mutex>
#include <thread>
#include <vector>

#include "netlink_socket.h"
#include "requests.h"
#include "transaction.h"

namespace ct {
namespace {

// One filtered flush tells everything: an entry that matches every attribute of the probe's
// filter, and one per attribute that differs from the filter in that attribute alone. That one
// survives exactly when the kernel honours the attribute. One flush, because each walks the whole
// shared hash table (every namespace's entries): a probe of one flush per attribute took 0.1 s
// beside a 100,000-entry table.
struct ProbeEntry {
  uint8_t family;
  uint16_t sport;
  uint32_t mark;
  uint32_t status;  // besides IPS_CONFIRMED, which every created entry has
  uint16_t zone;
};
constexpr uint32_t kAssured = IPS_ASSURED | IPS_SEEN_REPLY;
constexpr ProbeEntry kMatchesAll = {AF_INET6, 1, 1, kAssured, 7};
constexpr ProbeEntry kOtherMark = {AF_INET6, 2, 0, kAssured, 7};
constexpr ProbeEntry kOtherStatus = {AF_INET6, 3, 1, 0, 7};
constexpr ProbeEntry kOtherZone = {AF_INET6, 4, 1, kAssured, 0};
constexpr ProbeEntry kOtherFamily = {AF_INET, 5, 1, kAssured, 7};

EntrySpec specOf(const ProbeEntry& p) {
  EntrySpec s;
  s.family = p.family;
  Tuple& t = s.orig;
  t.has = kTupleHasSrc | kTupleHasDst | kTupleHasProto | kTupleHasPorts;
  t.family = p.family;
  t.proto = 17;
  t.sport = p.sport;
  t.dport = 9;
  if (p.family == AF_INET) {
    const uint8_t src[4] = {10, 255, 0, 1}, dst[4] = {10, 255, 0, 2};
    std::memcpy(t.srcAddr, src, 4);
    std::memcpy(t.dstAddr, dst, 4);
  } else {
    t.srcAddr[0] = t.dstAddr[0] = 0xfd;
    t.srcAddr[15] = 1;
    t.dstAddr[15] = 2;
  }
  s.reply = t;
  std::swap(s.reply.sport, s.reply.dport);
  std::memcpy(s.reply.srcAddr, t.dstAddr, 16);
  std::memcpy(s.reply.dstAddr, t.srcAddr, 16);
  if (p.zone != 0) {
    s.hasZone = true;
    s.zone = p.zone;
  }
  return s;
}

// One request on the probe's socket; 0 or the kernel's errno (-1: the socket failed).
int exchange(NetlinkSocket& socket, std::vector<uint8_t> request, size_t len) {
  if (len == 0) return -1;
  request.resize(len);
  Transaction t(std::move(request));
  std::vector<uint8_t> buffer;
  SysError err;
  if (!t.begin(socket, err)) return -1;
  for (int waited = 0; waited < 100; ++waited) {
    int state = t.pump(socket, buffer, err);
    if (state == 1) return 0;
    if (state < 0) return err.protocol || err.errnum == 0 ? -1 : err.errnum;
    pollfd fd{socket.fd(), POLLIN, 0};
    ::poll(&fd, 1, 50);
  }
  return -1;
}

int entryRequest(NetlinkSocket& socket, EntryOp op, const EntrySpec& spec) {
  std::vector<uint8_t> request(512);
  // Built before the call: as an argument beside `request` the copy could be taken first (the
  // order is unspecified; clang takes it first, and the probe sent zeros under the ASan build).
  size_t len = buildEntryRequest(request.data(), request.size(), op, 0, spec);
  return exchange(socket, std::move(request), len);
}

bool create(NetlinkSocket& socket, const ProbeEntry& p) {
  EntrySpec s = specOf(p);
  s.hasTimeout = true;
  s.timeout = 60;
  s.hasMark = p.mark != 0;
  s.mark = p.mark;
  s.hasStatus = true;
  s.status = p.status | IPS_CONFIRMED;
  return entryRequest(socket, EntryOp::kCreate, s) == 0;
}

// 1: the entry is still there, 0: gone, -1: the kernel answered something else.
int present(NetlinkSocket& socket, const ProbeEntry& p) {
  int answer = entryRequest(socket, EntryOp::kGet, specOf(p));
  return answer == 0 ? 1 : answer == ENOENT ? 0 : -1;
}

// In the probe's fresh (empty) namespace: the entries, one filtered flush, then who is left.
void probeIn(NetlinkSocket& socket, FlushSupport& support) {
  for (const ProbeEntry& p : {kMatchesAll, kOtherMark, kOtherStatus, kOtherZone, kOtherFamily}) {
    if (!create(socket, p)) return;
  }
  Filter filter;
  filter.family = AF_INET6;
  filter.markValue = 1;
  filter.markMask = 0xffffffff;
  filter.statusSet = IPS_ASSURED;
  filter.zone = 7;
  std::vector<uint8_t> request(256);
  size_t len = buildFilteredFlushRequest(request.data(), request.size(), 0, filter);
  if (exchange(socket, std::move(request), len) != 0) return;
  // What matches everything must be gone, or the kernel did not flush at all: nothing is honoured.
  if (present(socket, kMatchesAll) != 0) return;
  support.mark = present(socket, kOtherMark) == 1;
  support.status = present(socket, kOtherStatus) == 1;
  support.zone = present(socket, kOtherZone) == 1;
  support.family = present(socket, kOtherFamily) == 1;
}

// The probe's body, on a thread that is about to end: it leaves this process's namespace for one of its own.
void probeHere(FlushSupport& support) {
  // A namespace of this thread's own: nothing in it but what the probe makes.
  if (::unshare(CLONE_NEWNET) != 0) {
    support.problem = std::string("cannot make a network namespace to probe the kernel's filtered flush: ") +
                      std::strerror(errno);
    return;
  }
  NetlinkSocket socket;
  SysError err;
  if (!socket.open(true, err)) {
    support.problem = "cannot open a netfilter socket to probe the kernel's filtered flush: " + err.op;
    return;
  }
  probeIn(socket, support);
}

FlushSupport probe() {
  FlushSupport support;
  std::thread worker([&support] {
    try {
      probeHere(support);
    } catch (...) {  // bad_alloc: nothing counts as supported (deletes go entry by entry), the process goes on
      support = FlushSupport{};
    }
  });
  worker.join();
  return support;
}

}  // namespace

const FlushSupport& flushSupport() {
  // A function-local static, not std::call_once: that calls pthread_once, which asks for
  // GLIBC_2.34 and the prebuilds may ask for no more than 2.28. Initialization is thread-safe
  // all the same, and a probe that throws (no thread) is retried by the next call.
  static const FlushSupport support = probe();
  return support;
}

bool flushCanExpress(const Filter& f) {
  if (f.empty()) return false;  // a flush of everything is flush(), not a filter
  if (f.zone == 0) return false;  // the kernel reads zone 0 as "any"
  return f.protocol < 0 && f.tcpStates == 0 && f.addresses.empty() && f.ports.empty();
}

bool flushCovers(const Filter& f, const FlushSupport& s) {
  if (!flushCanExpress(f)) return false;
  if (f.family != 0 && !s.family) return false;
  if (f.markMask != 0 && !s.mark) return false;
  if ((f.statusSet != 0 || f.statusUnset != 0) && !s.status) return false;
  if (f.zone == 0 || (f.zone > 0 && !s.zone)) return false;
  return true;
}

}  // namespace ct
