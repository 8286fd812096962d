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

// Four entries, each picked out by one attribute alone.
struct ProbeEntry {
  uint8_t family;
  uint16_t sport;
  uint32_t mark;
  uint32_t status;  // besides IPS_CONFIRMED, which every created entry has
  uint16_t zone;
};
constexpr ProbeEntry kEntries[] = {
    {AF_INET, 1, 1, 0, 0},                                  // mark 1
    {AF_INET, 2, 0, IPS_ASSURED | IPS_SEEN_REPLY, 0},       // assured
    {AF_INET, 3, 0, 0, 7},                                  // zone 7
    {AF_INET6, 4, 0, 0, 0},                                 // IPv6
};
constexpr size_t kEntryCount = sizeof kEntries / sizeof kEntries[0];

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
  return exchange(socket, request, buildEntryRequest(request.data(), request.size(), op, 0, spec));
}

// Makes the four entries, flushes with `filter`, and checks that exactly entry `expected` went.
bool honours(NetlinkSocket& socket, const Filter& filter, size_t expected) {
  std::vector<uint8_t> request(64);
  if (exchange(socket, request, buildFlushRequest(request.data(), request.size(), 0, 0)) != 0) return false;
  for (const ProbeEntry& p : kEntries) {
    EntrySpec s = specOf(p);
    s.hasTimeout = true;
    s.timeout = 60;
    s.hasMark = p.mark != 0;
    s.mark = p.mark;
    s.hasStatus = p.status != 0;
    s.status = p.status | IPS_CONFIRMED;
    if (entryRequest(socket, EntryOp::kCreate, s) != 0) return false;
  }
  if (exchange(socket, request, buildFilteredFlushRequest(request.data(), request.size(), 0, filter)) != 0) return false;
  for (size_t i = 0; i < kEntryCount; ++i) {
    int answer = entryRequest(socket, EntryOp::kGet, specOf(kEntries[i]));
    bool gone = answer == ENOENT;
    if (answer != 0 && !gone) return false;
    if (gone != (i == expected)) return false;
  }
  return true;
}

void probeHere(FlushSupport& support);

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
  Filter mark;
  mark.markValue = 1;
  mark.markMask = 0xffffffff;
  support.mark = honours(socket, mark, 0);
  Filter status;
  status.statusSet = IPS_ASSURED;
  support.status = honours(socket, status, 1);
  Filter zone;
  zone.zone = 7;
  support.zone = honours(socket, zone, 2);
  Filter family;
  family.family = AF_INET6;
  support.family = honours(socket, family, 3);
}

}  // namespace

const FlushSupport& flushSupport() {
  static std::once_flag once;
  static FlushSupport support;
  std::call_once(once, [] { support = probe(); });
  return support;
}

bool flushCovers(const Filter& f, const FlushSupport& s) {
  if (f.empty()) return false;  // a flush of everything is flush(), not a filter
  if (f.protocol >= 0 || f.tcpStates != 0 || !f.addresses.empty() || !f.ports.empty()) return false;
  if (f.family != 0 && !s.family) return false;
  if (f.markMask != 0 && !s.mark) return false;
  if ((f.statusSet != 0 || f.statusUnset != 0) && !s.status) return false;
  if (f.zone == 0 || (f.zone > 0 && !s.zone)) return false;
  return true;
}

}  // namespace ct
