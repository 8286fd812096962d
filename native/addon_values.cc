#include "addon_values.h"

#include <algorithm>
#include <cstring>
#include <type_traits>

namespace ct::addon {
namespace {

Napi::Array pairsToArray(Napi::Env env, const std::vector<uint32_t>& pairs) {
  Napi::Array out = Napi::Array::New(env, pairs.size());
  for (size_t i = 0; i < pairs.size(); ++i) out.Set(static_cast<uint32_t>(i), Napi::Number::New(env, pairs[i]));
  return out;
}

uint32_t u32Of(const Napi::Object& o, const char* key) {
  return o.Get(key).As<Napi::Number>().Uint32Value();
}

// A key set to undefined counts as absent, as in JS.
bool given(const Napi::Object& o, const char* key) { return o.Has(key) && !o.Get(key).IsUndefined(); }

// { src?, dst?: Uint8Array (4 or 16 bytes), proto?, sport?, dport?, icmpType?, icmpCode?, icmpId?,
// zone? }: the parts given are sent. lib/table/entry-spec.ts validates every value first.
void readTuple(const Napi::Value& value, ct::Tuple& t) {
  if (!value.IsObject()) return;
  Napi::Object o = value.As<Napi::Object>();
  auto address = [&](const char* key, uint8_t* out, uint32_t bit) {
    if (!given(o, key)) return;
    Napi::Uint8Array bytes = o.Get(key).As<Napi::Uint8Array>();
    std::memcpy(out, bytes.Data(), std::min<size_t>(bytes.ByteLength(), 16));
    t.has |= bit;
  };
  address("src", t.srcAddr, ct::kTupleHasSrc);
  address("dst", t.dstAddr, ct::kTupleHasDst);
  if (given(o, "proto")) {
    t.proto = static_cast<uint8_t>(u32Of(o, "proto"));
    t.has |= ct::kTupleHasProto;
  }
  if (given(o, "sport")) {
    t.sport = static_cast<uint16_t>(u32Of(o, "sport"));
    t.dport = static_cast<uint16_t>(u32Of(o, "dport"));
    t.has |= ct::kTupleHasPorts;
  }
  if (given(o, "icmpType")) {
    t.icmpType = static_cast<uint8_t>(u32Of(o, "icmpType"));
    t.icmpCode = static_cast<uint8_t>(u32Of(o, "icmpCode"));
    t.icmpId = static_cast<uint16_t>(u32Of(o, "icmpId"));
    t.has |= ct::kTupleHasIcmp;
  }
  if (given(o, "zone")) {
    t.zone = static_cast<uint16_t>(u32Of(o, "zone"));
    t.has |= ct::kTupleHasZone;
  }
}

}  // namespace

Napi::Error toJsError(Napi::Env env, const SysError& err) {
  std::string message;
  if (err.protocol) {
    message = "malformed kernel message: " + err.detail;
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

bool readFilter(const Napi::Value& value, ct::Filter& f) {
  if (value.IsNull() || value.IsUndefined()) return false;
  Napi::Object o = value.As<Napi::Object>();
  f.family = static_cast<uint8_t>(u32Of(o, "family"));
  f.protocol = o.Get("protocol").As<Napi::Number>().Int32Value();
  f.tcpStates = u32Of(o, "tcpStates");
  f.markValue = u32Of(o, "markValue");
  f.markMask = u32Of(o, "markMask");
  f.zone = o.Get("zone").As<Napi::Number>().Int32Value();
  f.statusSet = u32Of(o, "statusSet");
  f.statusUnset = u32Of(o, "statusUnset");
  f.kernel = o.Get("kernel").ToBoolean().Value();
  Napi::Array addresses = o.Get("addresses").As<Napi::Array>();
  for (uint32_t i = 0; i < addresses.Length(); ++i) {
    Napi::Object a = addresses.Get(i).As<Napi::Object>();
    ct::AddressMatch m;
    m.tuple = static_cast<uint8_t>(u32Of(a, "tuple"));
    m.end = static_cast<uint8_t>(u32Of(a, "end"));
    m.family = static_cast<uint8_t>(u32Of(a, "family"));
    m.prefix = static_cast<uint8_t>(u32Of(a, "prefix"));
    Napi::Uint8Array bytes = a.Get("bytes").As<Napi::Uint8Array>();
    size_t want = ct::addressLength(m.family);
    if (bytes.ByteLength() != want || m.prefix > want * 8)
      throw Napi::TypeError::New(value.Env(), "address filter: wrong address length or prefix");
    std::memcpy(m.bytes, bytes.Data(), want);
    f.addresses.push_back(m);
  }
  Napi::Array ports = o.Get("ports").As<Napi::Array>();
  for (uint32_t i = 0; i < ports.Length(); ++i) {
    Napi::Object p = ports.Get(i).As<Napi::Object>();
    ct::PortMatch m;
    m.tuple = static_cast<uint8_t>(u32Of(p, "tuple"));
    m.end = static_cast<uint8_t>(u32Of(p, "end"));
    m.low = static_cast<uint16_t>(u32Of(p, "low"));
    m.high = static_cast<uint16_t>(u32Of(p, "high"));
    f.ports.push_back(m);
  }
  return true;
}

void readEntrySpec(const Napi::Object& o, ct::EntrySpec& s) {
  s.family = static_cast<uint8_t>(u32Of(o, "family"));
  readTuple(o.Get("orig"), s.orig);
  readTuple(o.Get("reply"), s.reply);
  auto optional = [&](const char* key, bool& has, auto& field) {
    if (!given(o, key)) return;
    has = true;
    field = static_cast<std::remove_reference_t<decltype(field)>>(u32Of(o, key));
  };
  optional("id", s.hasId, s.id);
  optional("mark", s.hasMark, s.mark);
  optional("timeout", s.hasTimeout, s.timeout);
  optional("status", s.hasStatus, s.status);
  optional("tcpState", s.hasTcpState, s.tcpState);
  optional("zone", s.hasZone, s.zone);
  auto bits = [&](const char* key, bool& has, uint32_t (&out)[4]) {
    if (!given(o, key)) return;
    Napi::Uint32Array words = o.Get(key).As<Napi::Uint32Array>();
    for (size_t i = 0; i < 4 && i < words.ElementLength(); ++i) out[i] = words[i];
    has = true;
  };
  bits("labels", s.hasLabels, s.labels);
  bits("labelsMask", s.hasLabelsMask, s.labelsMask);
  auto nat = [&](const char* key, ct::NatRange& n) {
    if (!given(o, key)) return;
    Napi::Object r = o.Get(key).As<Napi::Object>();
    Napi::Uint8Array min = r.Get("min").As<Napi::Uint8Array>();
    Napi::Uint8Array max = r.Get("max").As<Napi::Uint8Array>();
    std::memcpy(n.minAddr, min.Data(), std::min<size_t>(min.ByteLength(), 16));
    std::memcpy(n.maxAddr, max.Data(), std::min<size_t>(max.ByteLength(), 16));
    if (given(r, "minPort")) {
      n.hasPorts = true;
      n.minPort = static_cast<uint16_t>(u32Of(r, "minPort"));
      n.maxPort = static_cast<uint16_t>(u32Of(r, "maxPort"));
    }
    n.given = true;
  };
  nat("natSrc", s.natSrc);
  nat("natDst", s.natDst);
}

void readExpectationSpec(const Napi::Object& o, ct::ExpectationSpec& s) {
  s.family = static_cast<uint8_t>(u32Of(o, "family"));
  readTuple(o.Get("master"), s.master);
  readTuple(o.Get("tuple"), s.tuple);
  readTuple(o.Get("mask"), s.mask);
  readTuple(o.Get("natTuple"), s.natTuple);
  auto optional = [&](const char* key, bool& has, auto& field) {
    if (!given(o, key)) return;
    has = true;
    field = static_cast<std::remove_reference_t<decltype(field)>>(u32Of(o, key));
  };
  optional("timeout", s.hasTimeout, s.timeout);
  optional("id", s.hasId, s.id);
  optional("zone", s.hasZone, s.zone);
  optional("flags", s.hasFlags, s.flags);
  optional("class", s.hasClass, s.klass);
  optional("natDir", s.hasNat, s.natDir);
  if (given(o, "helper")) s.helper = o.Get("helper").As<Napi::String>().Utf8Value();
  if (given(o, "fn")) s.fn = o.Get("fn").As<Napi::String>().Utf8Value();
}

std::vector<ct::SummaryKey> readSummaryKeys(Napi::Env env, const Napi::Value& value) {
  std::vector<ct::SummaryKey> keys;
  if (!value.IsArray()) return keys;
  Napi::Array list = value.As<Napi::Array>();
  for (uint32_t i = 0; i < list.Length(); ++i) {
    uint32_t k = list.Get(i).As<Napi::Number>().Uint32Value();
    if (k >= ct::kSummaryKeyCount) throw Napi::RangeError::New(env, "unknown summary key");
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
