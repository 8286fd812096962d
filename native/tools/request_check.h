// What the request round-trip fuzzers (fuzz_entry_request.cc, fuzz_dump_request.cc) share: a
// check that aborts with its condition (libFuzzer keeps the input that got there), the request's
// headers as the kernel reads them, and its message decoded again by the library's own decoder.
#pragma once

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <vector>

#include "../decode.h"
#include "../wire.h"

#define REQUIRE(condition)                                                  \
  do {                                                                      \
    if (!(condition)) {                                                     \
      std::fprintf(stderr, "round trip: %s (line %d)\n", #condition, __LINE__); \
      std::abort();                                                         \
    }                                                                       \
  } while (0)

namespace roundtrip {

// A request as the kernel reads it: netlink and nfnetlink headers, and the top-level attributes
// by type (each may appear once).
struct Request {
  nlmsghdr header{};
  nfgenmsg gen{};
  std::map<uint16_t, ct::Attr> attrs;
  const uint8_t* attrData = nullptr;
  size_t attrLen = 0;
};

inline Request parse(const std::vector<uint8_t>& bytes) {
  Request r;
  REQUIRE(bytes.size() >= NLMSG_HDRLEN + NLMSG_ALIGN(sizeof(nfgenmsg)));
  std::memcpy(&r.header, bytes.data(), sizeof r.header);
  REQUIRE(r.header.nlmsg_len == bytes.size());
  REQUIRE(bytes.size() % NLMSG_ALIGNTO == 0);
  std::memcpy(&r.gen, bytes.data() + NLMSG_HDRLEN, sizeof r.gen);
  r.attrData = bytes.data() + NLMSG_HDRLEN + NLMSG_ALIGN(sizeof(nfgenmsg));
  r.attrLen = bytes.size() - NLMSG_HDRLEN - NLMSG_ALIGN(sizeof(nfgenmsg));
  ct::SysError err;
  REQUIRE(ct::forEachAttr(r.attrData, r.attrLen, "request", err, [&](const ct::Attr& a) {
    REQUIRE(r.attrs.emplace(a.type, a).second);  // never the same attribute twice
    return true;
  }));
  return r;
}

// The request's one message through walkDatagram() and decodeEntry(), as if the kernel had sent it.
class EntryDecoder : public ct::MessageSink {
 public:
  bool onMessage(const ct::MessageView& m, ct::SysError& err) override {
    ++messages;
    REQUIRE(m.kind == ct::MessageKind::kEntry);
    return ct::decodeEntry(m, entry, err);
  }
  int messages = 0;
  ct::Entry entry;
};

inline ct::Entry decodeAsEntry(const std::vector<uint8_t>& bytes) {
  EntryDecoder decoder;
  ct::SysError err;
  bool done = false;
  REQUIRE(ct::walkDatagram(bytes.data(), bytes.size(), 0, decoder, done, err));
  REQUIRE(decoder.messages == 1 && !done);
  return decoder.entry;
}

// Sub-attributes of a nested attribute, by type (each once).
inline std::map<uint16_t, ct::Attr> nested(const ct::Attr& nest) {
  std::map<uint16_t, ct::Attr> out;
  ct::SysError err;
  REQUIRE(ct::forEachAttr(nest.data, nest.len, "nest", err, [&](const ct::Attr& a) {
    REQUIRE(out.emplace(a.type, a).second);
    return true;
  }));
  return out;
}

// Builds with `build(buf, cap)` into a buffer of exactly `cap` bytes (so ASan sees any write
// past it): the message fits and is returned, or the builder says 0 and a roomy buffer holds
// more than `cap`.
template <typename Build>
std::vector<uint8_t> buildInto(size_t cap, Build&& build) {
  std::vector<uint8_t> buf(cap);
  size_t len = build(buf.data(), cap);
  if (len == 0) {
    std::vector<uint8_t> roomy(4096);
    len = build(roomy.data(), roomy.size());
    REQUIRE(len > cap && len <= roomy.size());
    roomy.resize(len);
    return roomy;
  }
  REQUIRE(len <= cap);
  buf.resize(len);
  return buf;
}

}  // namespace roundtrip
