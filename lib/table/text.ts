/**
 * A dump as conntrack-tools prints it (`conntrack -L`, with its `-o extended` and `-o id`),
 * written straight from the addon's records into bytes: no entry object and no string per line,
 * so listing a million entries costs little more than the dump itself. lib/cli/ct-format.ts
 * renders the same layout from entry objects (events, -G, -D, the other -o forms);
 * test/integration/cli/ct-output.test.ts holds both to conntrack-tools' own output.
 */
import { checkLayout, layoutConstant as layout } from '../binding/layout.js';
import type { NativeBatch } from '../binding/native.js';
import { protocolName, SCTP_STATES, TCP_STATES } from './records.js';

export interface TextLayout {
  /** conntrack-tools' `-o extended`: the family's name and number first. */
  extended?: boolean;
  /** `-o id`: `id=N` after `use=`. */
  id?: boolean;
}

/** One native batch as text: `count` lines, each ending in a newline. */
export interface TextChunk {
  text: Buffer;
  count: number;
}

// The record layout, as lib/table/records.ts reads it (native/record_layout.h is its source).
const SLOTS = layout('record', 'slots');
const S_FAMILY = layout('slot', 'family');
const S_PRESENT = layout('slot', 'present');
const S_ID = layout('slot', 'id');
const S_STATUS = layout('slot', 'status');
const S_TIMEOUT = layout('slot', 'timeout');
const S_MARK = layout('slot', 'mark');
const S_USE = layout('slot', 'use');
const S_ZONE = layout('slot', 'zone');
const S_SECMARK = layout('slot', 'secmark');
const S_ORIG = layout('slot', 'orig');
const S_REPLY = layout('slot', 'reply');
const S_COUNTERS = layout('slot', 'counters');
const S_TIMESTAMP = layout('slot', 'timestamp');
const S_TCP = layout('slot', 'tcp');
const S_SCTP = layout('slot', 'sctp');
const S_HELPER = layout('slot', 'helper');
const S_SECCTX_OFF = layout('slot', 'secctxOff');
const S_SECCTX_LEN = layout('slot', 'secctxLen');
const TUPLE_PROTO = layout('tuple', 'proto');
const TUPLE_PORTS = layout('tuple', 'ports');
const TUPLE_ICMP = layout('tuple', 'icmp');
const TUPLE_ZONE = layout('tuple', 'zone');
const TUPLE_SRC = layout('tuple', 'src');
const TUPLE_DST = layout('tuple', 'dst');
const PROTO_SHIFT = layout('tupleWord', 'proto');
const TUPLE_HAS_SHIFT = layout('tupleWord', 'has');
const SPORT_SHIFT = layout('tupleWord', 'sport');
const DPORT_SHIFT = layout('tupleWord', 'dport');
const ICMP_TYPE_SHIFT = layout('tupleWord', 'icmpType');
const ICMP_CODE_SHIFT = layout('tupleWord', 'icmpCode');
const ICMP_ID_SHIFT = layout('tupleWord', 'icmpId');
const U64_LOW = layout('u64', 'low');
const U64_HIGH = layout('u64', 'high');
const PACKETS_ORIG = layout('counter', 'packetsOrig');
const BYTES_ORIG = layout('counter', 'bytesOrig');
const PACKETS_REPLY = layout('counter', 'packetsReply');
const BYTES_REPLY = layout('counter', 'bytesReply');
const TS_START = layout('timestamp', 'start');
const TS_STOP = layout('timestamp', 'stop');
const TCP_STATE_SHIFT = layout('tcpWord', 'state');
const SCTP_STATE_SHIFT = layout('sctpWord', 'state');
const STRING_LENGTH_SHIFT = layout('stringRef', 'lengthShift');
const STRING_OFFSET_MASK = layout('stringRef', 'offsetMask');
const HAS_STATUS = layout('present', 'status');
const HAS_TIMEOUT = layout('present', 'timeout');
const HAS_MARK = layout('present', 'mark');
const HAS_USE = layout('present', 'use');
const HAS_ZONE = layout('present', 'zone');
const HAS_SECMARK = layout('present', 'secmark');
const HAS_COUNTERS_ORIG = layout('present', 'countersOrig');
const HAS_COUNTERS_REPLY = layout('present', 'countersReply');
const HAS_TSTAMP_START = layout('present', 'timestampStart');
const HAS_TSTAMP_STOP = layout('present', 'timestampStop');
const HAS_TCP = layout('present', 'tcp');
const HAS_SCTP = layout('present', 'sctp');
const HAS_HELPER = layout('present', 'helper');
const HAS_SECCTX = layout('present', 'secctx');
const T_ZONE = layout('tupleHas', 'zone');
const T_SRC = layout('tupleHas', 'src');
const T_DST = layout('tupleHas', 'dst');

// IPS_* bits (nf_conntrack_common.h).
const SEEN_REPLY = 1 << 1;
const ASSURED = 1 << 2;
const OFFLOAD = 1 << 14;
const HW_OFFLOAD = 1 << 15;
const AF_INET6 = 10;

const PORTS = new Set([6, 17, 136, 132, 33]);
const GRE = 47;
const ICMP = 1;
const ICMPV6 = 58;

/** `%-8s %u ` of each protocol number, made once. */
const PROTOCOL_TEXT: Buffer[] = Array.from({ length: 256 }, (_, n) => Buffer.from(`${protocolName(n).padEnd(8)} ${n} `, 'latin1'));
const TCP_STATE_TEXT = TCP_STATES.map((s) => Buffer.from(`${s} `, 'latin1'));
const SCTP_STATE_TEXT = SCTP_STATES.map((s) => Buffer.from(`${s} `, 'latin1'));
const IPV4_TEXT = Buffer.from('ipv4     2 ', 'latin1');
const IPV6_TEXT = Buffer.from('ipv6     10 ', 'latin1');

/** Room for one line without its variable texts (the longest: IPv6, every field, u64 counters). */
const MAX_FIXED_LINE = 720;

class Writer {
  pos = 0;
  constructor(readonly buf: Buffer) {}

  ascii(text: string): void {
    const { buf } = this;
    let p = this.pos;
    for (let i = 0; i < text.length; i++) buf[p++] = text.charCodeAt(i);
    this.pos = p;
  }

  bytes(b: Buffer): void {
    this.pos += b.copy(this.buf, this.pos);
  }

  /** Bytes [from, from + length) of the batch's text, which is ASCII where addresses are. */
  slice(blob: Buffer, from: number, length: number): void {
    const { buf } = this;
    let p = this.pos;
    for (let i = from, end = from + length; i < end; i++) buf[p++] = blob[i] as number;
    this.pos = p;
  }

  /** A non-negative integer below 2^53. */
  number(n: number): void {
    const { buf } = this;
    if (n < 10) {
      buf[this.pos++] = 48 + n;
      return;
    }
    let digits = 0;
    for (let m = n; m >= 1; m = Math.floor(m / 10)) digits++;
    let p = this.pos + digits;
    this.pos = p;
    for (let m = n; m >= 1; m = Math.floor(m / 10)) buf[--p] = 48 + (m % 10);
  }

  hex(n: number): void {
    this.ascii(n.toString(16));
  }
}

function u64(r: Uint32Array, at: number): number {
  return (r[at + U64_LOW] as number) + (r[at + U64_HIGH] as number) * 4294967296;
}

function seconds(r: Uint32Array, at: number): number {
  return Number(((BigInt(r[at + U64_HIGH] as number) << 32n) | BigInt(r[at + U64_LOW] as number)) / 1_000_000_000n);
}

function tuple(w: Writer, r: Uint32Array, base: number, blob: Buffer): void {
  const head = r[base + TUPLE_PROTO] as number;
  const has = head >>> TUPLE_HAS_SHIFT;
  const proto = (head >>> PROTO_SHIFT) & 0xff;
  w.ascii('src=');
  if ((has & T_SRC) !== 0) {
    const ref = r[base + TUPLE_SRC] as number;
    w.slice(blob, ref & STRING_OFFSET_MASK, ref >>> STRING_LENGTH_SHIFT);
  }
  w.ascii(' dst=');
  if ((has & T_DST) !== 0) {
    const ref = r[base + TUPLE_DST] as number;
    w.slice(blob, ref & STRING_OFFSET_MASK, ref >>> STRING_LENGTH_SHIFT);
  }
  w.ascii(' ');
  const ports = r[base + TUPLE_PORTS] as number;
  if (PORTS.has(proto)) {
    w.ascii('sport=');
    w.number((ports >>> SPORT_SHIFT) & 0xffff);
    w.ascii(' dport=');
    w.number((ports >>> DPORT_SHIFT) & 0xffff);
    w.ascii(' ');
  } else if (proto === GRE) {
    w.ascii('srckey=0x');
    w.hex((ports >>> SPORT_SHIFT) & 0xffff);
    w.ascii(' dstkey=0x');
    w.hex((ports >>> DPORT_SHIFT) & 0xffff);
    w.ascii(' ');
  } else if (proto === ICMP || proto === ICMPV6) {
    const icmp = r[base + TUPLE_ICMP] as number;
    w.ascii('type=');
    w.number((icmp >>> ICMP_TYPE_SHIFT) & 0xff);
    w.ascii(' code=');
    w.number((icmp >>> ICMP_CODE_SHIFT) & 0xff);
    w.ascii(' id=');
    w.number((icmp >>> ICMP_ID_SHIFT) & 0xffff);
    w.ascii(' ');
  }
}

/** One batch in conntrack-tools' layout; `nowSeconds` is the clock for `delta-time`. */
export function renderBatchText(batch: NativeBatch, options: TextLayout, nowSeconds: number): TextChunk {
  checkLayout();
  const r = new Uint32Array(batch.records);
  const blob = Buffer.from(batch.strings, 'latin1');
  const w = new Writer(Buffer.allocUnsafe(batch.count * MAX_FIXED_LINE + blob.length * 3 + 64));
  for (let i = 0; i < batch.count; i++) {
    const o = i * SLOTS;
    const present = r[o + S_PRESENT] as number;
    if (options.extended) w.bytes(r[o + S_FAMILY] === AF_INET6 ? IPV6_TEXT : IPV4_TEXT);
    const origHead = r[o + S_ORIG + TUPLE_PROTO] as number;
    w.bytes(PROTOCOL_TEXT[(origHead >>> PROTO_SHIFT) & 0xff] as Buffer);
    if ((present & HAS_TIMEOUT) !== 0) {
      w.number(r[o + S_TIMEOUT] as number);
      w.ascii(' ');
    }
    if ((present & HAS_TCP) !== 0) w.bytes(TCP_STATE_TEXT[((r[o + S_TCP] as number) >>> TCP_STATE_SHIFT) & 0xff] ?? (TCP_STATE_TEXT[0] as Buffer));
    if ((present & HAS_SCTP) !== 0) w.bytes(SCTP_STATE_TEXT[((r[o + S_SCTP] as number) >>> SCTP_STATE_SHIFT) & 0xff] ?? (SCTP_STATE_TEXT[0] as Buffer));
    tuple(w, r, o + S_ORIG, blob);
    if (((origHead >>> TUPLE_HAS_SHIFT) & T_ZONE) !== 0) {
      w.ascii('zone-orig=');
      w.number(r[o + S_ORIG + TUPLE_ZONE] as number);
      w.ascii(' ');
    }
    const c = o + S_COUNTERS;
    const counters = (present & (HAS_COUNTERS_ORIG | HAS_COUNTERS_REPLY)) !== 0;
    if (counters) {
      w.ascii('packets=');
      w.number(u64(r, c + PACKETS_ORIG));
      w.ascii(' bytes=');
      w.number(u64(r, c + BYTES_ORIG));
      w.ascii(' ');
    }
    const status = (present & HAS_STATUS) !== 0 ? (r[o + S_STATUS] as number) : 0;
    if ((status & SEEN_REPLY) === 0) w.ascii('[UNREPLIED] ');
    tuple(w, r, o + S_REPLY, blob);
    if ((((r[o + S_REPLY + TUPLE_PROTO] as number) >>> TUPLE_HAS_SHIFT) & T_ZONE) !== 0) {
      w.ascii('zone-reply=');
      w.number(r[o + S_REPLY + TUPLE_ZONE] as number);
      w.ascii(' ');
    }
    if (counters) {
      w.ascii('packets=');
      w.number(u64(r, c + PACKETS_REPLY));
      w.ascii(' bytes=');
      w.number(u64(r, c + BYTES_REPLY));
      w.ascii(' ');
    }
    if ((status & HW_OFFLOAD) !== 0) w.ascii('[HW_OFFLOAD] ');
    else if ((status & OFFLOAD) !== 0) w.ascii('[OFFLOAD] ');
    else if ((status & ASSURED) !== 0) w.ascii('[ASSURED] ');
    if ((present & HAS_MARK) !== 0) {
      w.ascii('mark=');
      w.number(r[o + S_MARK] as number);
      w.ascii(' ');
    }
    if ((present & HAS_SECMARK) !== 0) {
      w.ascii('secmark=');
      w.number(r[o + S_SECMARK] as number);
      w.ascii(' ');
    }
    if ((present & HAS_SECCTX) !== 0) {
      const from = r[o + S_SECCTX_OFF] as number;
      w.ascii('secctx=');
      w.pos += w.buf.write(batch.strings.substring(from, from + (r[o + S_SECCTX_LEN] as number)), w.pos, 'utf8');
      w.ascii(' ');
    }
    if ((present & HAS_ZONE) !== 0) {
      w.ascii('zone=');
      w.number(r[o + S_ZONE] as number);
      w.ascii(' ');
    }
    if ((present & HAS_TSTAMP_START) !== 0) {
      const start = seconds(r, o + S_TIMESTAMP + TS_START);
      const stop = (present & HAS_TSTAMP_STOP) !== 0 ? seconds(r, o + S_TIMESTAMP + TS_STOP) : 0;
      w.ascii('delta-time=');
      w.number(Math.max(0, (stop === 0 ? nowSeconds : stop) - start));
      w.ascii(' ');
    }
    if ((present & HAS_HELPER) !== 0) {
      const ref = r[o + S_HELPER] as number;
      const from = ref & STRING_OFFSET_MASK;
      w.ascii('helper=');
      w.pos += w.buf.write(batch.strings.substring(from, from + (ref >>> STRING_LENGTH_SHIFT)), w.pos, 'utf8');
      w.ascii(' ');
    }
    if ((present & HAS_USE) !== 0) {
      w.ascii('use=');
      w.number(r[o + S_USE] as number);
      w.ascii(' ');
    }
    if (options.id) {
      w.ascii('id=');
      w.number(r[o + S_ID] as number);
      w.ascii(' ');
    }
    // The line's last blank becomes its newline.
    w.buf[w.pos - 1] = 10;
  }
  return { text: w.buf.subarray(0, w.pos), count: batch.count };
}
