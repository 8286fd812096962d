#include "addon_values.h"

#include <sys/socket.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>
#include <type_traits>

namespace ct::addon {
namespace {

Napi::Array pairsToArray(Napi::Env env, const std::vector<uint32_t>& pairs) {
  Napi::Array out = Napi::Array::New(env, pairs.size());
  for (size_t i = 0; i < pairs.size(); ++i) out.Set(static_cast<uint32_t>(i), Napi::Number::New(env, pairs[i]));
  return out;
}

// lib/ validates every value before it reaches the binding; the binding checks again, because a
// wrong value here is not a wrong answer but memory: an index past a fixed array, a typed array
// read beyond its end. A bad value is a TypeError or RangeError (lib maps both to
// ERR_CONNTRACK_INVALID_ARGUMENT), never a cast.

// An integer in [min, max].
double integerValue(const Napi::Value& v, const char* what, double min, double max) {
  if (!v.IsNumber()) throw Napi::TypeError::New(v.Env(), std::string(what) + " must be a number");
  double n = v.As<Napi::Number>().DoubleValue();
  if (!(n >= min && n <= max) || std::trunc(n) != n) {
    throw Napi::RangeError::New(v.Env(), std::string(what) + " must be an integer from " + std::to_string(static_cast<int64_t>(min)) +
                                             " to " + std::to_string(static_cast<int64_t>(max)));
  }
  return n;
}

double integerOf(const Napi::Object& o, const char* key, double min, double max) {
  return integerValue(o.Get(key), key, min, max);
}

uint32_t u32Of(const Napi::Object& o, const char* key, uint32_t max = 0xffffffffu) {
  return static_cast<uint32_t>(integerOf(o, key, 0, max));
}

Napi::Object objectOf(const Napi::Value& value, const char* what) {
  if (!value.IsObject()) throw Napi::TypeError::New(value.Env(), std::string(what) + " must be an object");
  return value.As<Napi::Object>();
}

Napi::Array arrayOf(const Napi::Object& o, const char* key) {
  Napi::Value v = o.Get(key);
  if (!v.IsArray()) throw Napi::TypeError::New(o.Env(), std::string(key) + " must be an array");
  return v.As<Napi::Array>();
}

// A typed array of exactly `type`, with `length` elements: its bytes are read as that many.
template <typename T>
T typedArrayOf(const Napi::Value& v, napi_typedarray_type type, size_t length, const char* what) {
  if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != type)
    throw Napi::TypeError::New(v.Env(), std::string(what) + " must be a " + (type == napi_uint8_array ? "Uint8Array" : "Uint32Array"));
  T array = v.As<T>();
  if (array.ElementLength() != length)
    throw Napi::RangeError::New(v.Env(), std::string(what) + " must have " + std::to_string(length) + " elements");
  return array;
}

uint8_t familyOf(const Napi::Object& o, bool anyAllowed) {
  uint32_t family = u32Of(o, "family", 255);
  if ((family == 0 && anyAllowed) || family == AF_INET || family == AF_INET6) return static_cast<uint8_t>(family);
  throw Napi::RangeError::New(o.Env(), anyAllowed ? "family must be 0, AF_INET or AF_INET6" : "family must be AF_INET or AF_INET6");
}

// A key set to undefined counts as absent, as in JS.
bool given(const Napi::Object& o, const char* key) { return o.Has(key) && !o.Get(key).IsUndefined(); }

// { src?, dst?: Uint8Array (4 or 16 bytes, by `family`), proto?, sport?, dport?, icmpType?,
// icmpCode?, icmpId?, zone? }: the parts given are sent. lib/table/entry-spec.ts validates every
// value first.
void readTuple(const Napi::Value& value, ct::Tuple& t, uint8_t family, const char* what) {
  if (value.IsUndefined()) return;
  Napi::Object o = objectOf(value, what);
  auto address = [&](const char* key, uint8_t* out, uint32_t bit) {
    if (!given(o, key)) return;
    size_t want = ct::addressLength(family);
    Napi::Uint8Array bytes = typedArrayOf<Napi::Uint8Array>(o.Get(key), napi_uint8_array, want, key);
    std::memcpy(out, bytes.Data(), want);
    t.has |= bit;
  };
  address("src", t.srcAddr, ct::kTupleHasSrc);
  address("dst", t.dstAddr, ct::kTupleHasDst);
  if (given(o, "proto")) {
    t.proto = static_cast<uint8_t>(u32Of(o, "proto", 255));
    t.has |= ct::kTupleHasProto;
  }
  if (given(o, "sport")) {
    t.sport = static_cast<uint16_t>(u32Of(o, "sport", 65535));
    t.dport = static_cast<uint16_t>(u32Of(o, "dport", 65535));
    t.has |= ct::kTupleHasPorts;
  }
  if (given(o, "icmpType")) {
    t.icmpType = static_cast<uint8_t>(u32Of(o, "icmpType", 255));
    t.icmpCode = static_cast<uint8_t>(u32Of(o, "icmpCode", 255));
    t.icmpId = static_cast<uint16_t>(u32Of(o, "icmpId", 65535));
    t.has |= ct::kTupleHasIcmp;
  }
  if (given(o, "zone")) {
    t.zone = static_cast<uint16_t>(u32Of(o, "zone", 65535));
    t.has |= ct::kTupleHasZone;
  }
  if (t.has != 0) t.family = family;
}

}  // namespace

Napi::Error toJsError(Napi::Env env, const SysError& err) {
  std::string message;
  if (err.protocol) {
    message = "malformed kernel message: " + err.detail;
  } else if (err.errnum == 0) {  // a C++ exception without an errno
    message = err.op + " failed";
    if (!err.detail.empty()) message += " (" + err.detail + ")";
  } else {
    message = err.op + ": " + std::strerror(err.errnum);
    if (!err.detail.empty()) message += " (" + err.detail + ")";
  }
  Napi::Error e = Napi::Error::New(env, message);
  Napi::Object obj = e.Value();
  if (err.errnum != 0) obj.Set("errno", Napi::Number::New(env, err.errnum));
  obj.Set("syscall", Napi::String::New(env, err.op));
  if (!err.detail.empty()) obj.Set("detail", Napi::String::New(env, err.detail));
  if (err.protocol) obj.Set("protocol", Napi::Boolean::New(env, true));
  return e;
}

Napi::Value transactionResult(Napi::Env env, ct::Transaction& t) {
  if (t.kind() == ct::Transaction::Kind::kGlobalStats) return pairsToArray(env, t.pairs());
  if (t.kind() == ct::Transaction::Kind::kEntry) return batchToJs(env, std::move(t.batch()));
  Napi::Array rows = Napi::Array::New(env, t.rows().size());
  for (size_t i = 0; i < t.rows().size(); ++i) {
    Napi::Object row = Napi::Object::New(env);
    row.Set("cpu", Napi::Number::New(env, t.rows()[i].cpu));
    row.Set("attrs", pairsToArray(env, t.rows()[i].pairs));
    rows.Set(static_cast<uint32_t>(i), row);
  }
  return rows;
}

double integerArgument(const Napi::Value& value, const char* what, double min, double max) {
  return integerValue(value, what, min, max);
}

bool readFilter(const Napi::Value& value, ct::Filter& f) {
  if (value.IsNull() || value.IsUndefined()) return false;
  Napi::Object o = objectOf(value, "filter");
  f.family = familyOf(o, true);
  f.protocol = static_cast<int>(integerOf(o, "protocol", -1, 255));
  f.tcpStates = u32Of(o, "tcpStates");
  f.markValue = u32Of(o, "markValue");
  f.markMask = u32Of(o, "markMask");
  f.zone = static_cast<int>(integerOf(o, "zone", -1, 65535));
  f.statusSet = u32Of(o, "statusSet");
  f.statusUnset = u32Of(o, "statusUnset");
  f.kernel = o.Get("kernel").ToBoolean().Value();
  Napi::Array addresses = arrayOf(o, "addresses");
  for (uint32_t i = 0; i < addresses.Length(); ++i) {
    Napi::Object a = objectOf(addresses.Get(i), "address filter");
    ct::AddressMatch m;
    // Indices into [original, reply] and [source, destination]: request building and matching
    // index fixed arrays with them.
    m.tuple = static_cast<uint8_t>(u32Of(a, "tuple", 1));
    m.end = static_cast<uint8_t>(u32Of(a, "end", 1));
    m.family = familyOf(a, false);
    size_t want = ct::addressLength(m.family);
    m.prefix = static_cast<uint8_t>(u32Of(a, "prefix", static_cast<uint32_t>(want * 8)));
    Napi::Uint8Array bytes = typedArrayOf<Napi::Uint8Array>(a.Get("bytes"), napi_uint8_array, want, "address filter bytes");
    std::memcpy(m.bytes, bytes.Data(), want);
    f.addresses.push_back(m);
  }
  Napi::Array ports = arrayOf(o, "ports");
  for (uint32_t i = 0; i < ports.Length(); ++i) {
    Napi::Object p = objectOf(ports.Get(i), "port filter");
    ct::PortMatch m;
    m.tuple = static_cast<uint8_t>(u32Of(p, "tuple", 1));
    m.end = static_cast<uint8_t>(u32Of(p, "end", 1));
    m.low = static_cast<uint16_t>(u32Of(p, "low", 65535));
    m.high = static_cast<uint16_t>(u32Of(p, "high", 65535));
    if (m.low > m.high) throw Napi::RangeError::New(value.Env(), "port filter: low must not exceed high");
    f.ports.push_back(m);
  }
  return true;
}

void readEntrySpec(const Napi::Value& value, ct::EntrySpec& s) {
  Napi::Object o = objectOf(value, "entry spec");
  s.family = familyOf(o, false);
  readTuple(o.Get("orig"), s.orig, s.family, "orig");
  readTuple(o.Get("reply"), s.reply, s.family, "reply");
  auto optional = [&](const char* key, bool& has, auto& field, uint32_t max) {
    if (!given(o, key)) return;
    has = true;
    field = static_cast<std::remove_reference_t<decltype(field)>>(u32Of(o, key, max));
  };
  optional("id", s.hasId, s.id, 0xffffffffu);
  optional("mark", s.hasMark, s.mark, 0xffffffffu);
  optional("timeout", s.hasTimeout, s.timeout, 0xffffffffu);
  optional("status", s.hasStatus, s.status, 0xffffffffu);
  optional("tcpState", s.hasTcpState, s.tcpState, 255);
  optional("zone", s.hasZone, s.zone, 65535);
  auto bits = [&](const char* key, bool& has, uint32_t (&out)[4]) {
    if (!given(o, key)) return;
    // Exactly four 32-bit words: a shorter or narrower view would be read past its end.
    Napi::Uint32Array words = typedArrayOf<Napi::Uint32Array>(o.Get(key), napi_uint32_array, 4, key);
    for (size_t i = 0; i < 4; ++i) out[i] = words[i];
    has = true;
  };
  bits("labels", s.hasLabels, s.labels);
  bits("labelsMask", s.hasLabelsMask, s.labelsMask);
  // { min, max: Uint8Array (an address of the entry's family), minPort?, maxPort? }
  auto nat = [&](const char* key, ct::NatRange& n) {
    if (!given(o, key)) return;
    Napi::Object r = objectOf(o.Get(key), key);
    size_t want = ct::addressLength(s.family);
    Napi::Uint8Array min = typedArrayOf<Napi::Uint8Array>(r.Get("min"), napi_uint8_array, want, "NAT min");
    Napi::Uint8Array max = typedArrayOf<Napi::Uint8Array>(r.Get("max"), napi_uint8_array, want, "NAT max");
    std::memcpy(n.minAddr, min.Data(), want);
    std::memcpy(n.maxAddr, max.Data(), want);
    if (given(r, "minPort")) {
      n.hasPorts = true;
      n.minPort = static_cast<uint16_t>(u32Of(r, "minPort", 65535));
      n.maxPort = static_cast<uint16_t>(u32Of(r, "maxPort", 65535));
    }
    n.given = true;
  };
  nat("natSrc", s.natSrc);
  nat("natDst", s.natDst);
}

void readExpectationSpec(const Napi::Value& value, ct::ExpectationSpec& s) {
  Napi::Object o = objectOf(value, "expectation spec");
  // Family 0 (a dump of every family) carries no tuple: there is no address length to read by.
  s.family = familyOf(o, true);
  for (const char* key : {"master", "tuple", "mask", "natTuple"}) {
    if (s.family == 0 && given(o, key)) throw Napi::RangeError::New(o.Env(), std::string(key) + " needs family AF_INET or AF_INET6");
  }
  readTuple(o.Get("master"), s.master, s.family, "master");
  readTuple(o.Get("tuple"), s.tuple, s.family, "tuple");
  readTuple(o.Get("mask"), s.mask, s.family, "mask");
  readTuple(o.Get("natTuple"), s.natTuple, s.family, "natTuple");
  auto optional = [&](const char* key, bool& has, auto& field, uint32_t max) {
    if (!given(o, key)) return;
    has = true;
    field = static_cast<std::remove_reference_t<decltype(field)>>(u32Of(o, key, max));
  };
  optional("timeout", s.hasTimeout, s.timeout, 0xffffffffu);
  optional("id", s.hasId, s.id, 0xffffffffu);
  optional("zone", s.hasZone, s.zone, 65535);
  optional("flags", s.hasFlags, s.flags, 0xffffffffu);
  optional("class", s.hasClass, s.klass, 0xffffffffu);
  optional("natDir", s.hasNat, s.natDir, 1);  // IP_CT_DIR_ORIGINAL or IP_CT_DIR_REPLY
  // NF_CT_HELPER_NAME_LEN is 16 with its NUL; expectation function names are as short.
  auto name = [&](const char* key, std::string& out, size_t maxLength) {
    if (!given(o, key)) return;
    Napi::Value v = o.Get(key);
    if (!v.IsString()) throw Napi::TypeError::New(o.Env(), std::string(key) + " must be a string");
    out = v.As<Napi::String>().Utf8Value();
    if (out.empty() || out.size() > maxLength || out.find('\0') != std::string::npos)
      throw Napi::RangeError::New(o.Env(), std::string(key) + " must be 1 to " + std::to_string(maxLength) + " bytes without NUL");
  };
  name("helper", s.helper, 15);
  name("fn", s.fn, 63);
}

std::vector<ct::SummaryKey> readSummaryKeys(Napi::Env env, const Napi::Value& value) {
  std::vector<ct::SummaryKey> keys;
  if (!value.IsArray()) return keys;
  Napi::Array list = value.As<Napi::Array>();
  for (uint32_t i = 0; i < list.Length(); ++i) {
    Napi::Value key = list.Get(i);
    if (!key.IsNumber()) throw Napi::TypeError::New(env, "summary keys must be numbers");
    double k = key.As<Napi::Number>().DoubleValue();
    if (!(k >= 0 && k < ct::kSummaryKeyCount) || std::trunc(k) != k) throw Napi::RangeError::New(env, "unknown summary key");
    keys.push_back(static_cast<ct::SummaryKey>(k));
  }
  return keys;
}

Napi::Object batchToJs(Napi::Env env, ct::Batch&& batch) {
  Napi::Object out = Napi::Object::New(env);
  size_t bytes = batch.count * ct::slot::kCount * sizeof(uint32_t);
  out.Set("overflowsBefore", Napi::Number::New(env, batch.overflowsBefore));
  if (!batch.counts.empty()) {
    Napi::Uint32Array counts = Napi::Uint32Array::New(env, batch.counts.size());
    std::copy(batch.counts.begin(), batch.counts.end(), counts.Data());
    out.Set("counts", counts);
  }
  if (bytes == 0) {
    out.Set("records", Napi::ArrayBuffer::New(env, 0));
    out.Set("count", Napi::Number::New(env, 0));
    out.Set("strings", Napi::String::New(env, ""));
    return out;
  }
  // Hand the record memory to JS without copying; JS frees it with the ArrayBuffer.
  auto* owned = new std::vector<uint32_t>(std::move(batch.records));
  Napi::ArrayBuffer records = Napi::ArrayBuffer::New(
      env, owned->data(), bytes, [](Napi::Env, void*, std::vector<uint32_t>* v) { delete v; }, owned);
  out.Set("records", records);
  out.Set("count", Napi::Number::New(env, static_cast<double>(batch.count)));
  // Latin-1: one char per byte, so JS slices the text at the byte offsets the records hold.
  napi_value text;
  NAPI_THROW_IF_FAILED(env, napi_create_string_latin1(env, batch.text.data(), batch.text.size(), &text), out);
  out.Set("strings", text);
  return out;
}

Napi::Object layoutToJs(Napi::Env env) {
  Napi::Object layout = Napi::Object::New(env);
  for (const ct::LayoutConstant& c : ct::kLayoutConstants) {
    Napi::Value group = layout.Get(c.group);
    if (group.IsUndefined()) {
      group = Napi::Object::New(env);
      layout.Set(c.group, group);
    }
    group.As<Napi::Object>().Set(c.name, Napi::Number::New(env, c.value));
  }
  return layout;
}

}  // namespace ct::addon
