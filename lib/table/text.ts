/**
 * A dump as conntrack-tools prints it (`conntrack -L`, with its `-o extended` and `-o id`),
 * written straight from the addon's records into bytes: no entry object and no string per line,
 * so listing a million entries costs little more than the dump itself. lib/cli/ct-format.ts
 * renders the same layout from entry objects (events, -G, -D, the other -o forms);
 * test/integration/cli/ct-output.test.ts holds both to conntrack-tools' own output.
 */
import type { NativeBatch } from '../binding/native.js';
import { LAYOUT, protocolName, SCTP_STATES, TCP_STATES } from './records.js';

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

const HAS_STATUS = 1 << 1;
const HAS_TIMEOUT = 1 << 2;
const HAS_MARK = 1 << 3;
const HAS_USE = 1 << 4;
const HAS_ZONE = 1 << 5;
const HAS_SECMARK = 1 << 6;
const HAS_COUNTERS_ORIG = 1 << 10;
const HAS_COUNTERS_REPLY = 1 << 11;
const HAS_TSTAMP_START = 1 << 12;
const HAS_TSTAMP_STOP = 1 << 13;
const HAS_TCP = 1 << 14;
const HAS_SCTP = 1 << 15;
const HAS_HELPER = 1 << 17;
const HAS_SECCTX = 1 << 18;
const T_ZONE = 1 << 3;
const T_SRC = 1 << 4;
const T_DST = 1 << 5;
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
  return (r[at] as number) + (r[at + 1] as number) * 4294967296;
}

function seconds(r: Uint32Array, at: number): number {
  return Number(((BigInt(r[at + 1] as number) << 32n) | BigInt(r[at] as number)) / 1_000_000_000n);
}

function tuple(w: Writer, r: Uint32Array, base: number, blob: Buffer): void {
  const head = r[base] as number;
  const has = head >>> 8;
  const proto = head & 0xff;
  w.ascii('src=');
  if ((has & T_SRC) !== 0) {
    const ref = r[base + 4] as number;
    w.slice(blob, ref & 0xffffff, ref >>> 24);
  }
  w.ascii(' dst=');
  if ((has & T_DST) !== 0) {
    const ref = r[base + 5] as number;
    w.slice(blob, ref & 0xffffff, ref >>> 24);
  }
  w.ascii(' ');
  const ports = r[base + 1] as number;
  if (PORTS.has(proto)) {
    w.ascii('sport=');
    w.number(ports & 0xffff);
    w.ascii(' dport=');
    w.number(ports >>> 16);
    w.ascii(' ');
  } else if (proto === GRE) {
    w.ascii('srckey=0x');
    w.hex(ports & 0xffff);
    w.ascii(' dstkey=0x');
    w.hex(ports >>> 16);
    w.ascii(' ');
  } else if (proto === ICMP || proto === ICMPV6) {
    const icmp = r[base + 2] as number;
    w.ascii('type=');
    w.number(icmp & 0xff);
    w.ascii(' code=');
    w.number((icmp >>> 8) & 0xff);
    w.ascii(' id=');
    w.number(icmp >>> 16);
    w.ascii(' ');
  }
}

/** One batch in conntrack-tools' layout; `nowSeconds` is the clock for `delta-time`. */
export function renderBatchText(batch: NativeBatch, layout: TextLayout, nowSeconds: number): TextChunk {
  const r = new Uint32Array(batch.records);
  const blob = Buffer.from(batch.strings, 'latin1');
  const w = new Writer(Buffer.allocUnsafe(batch.count * MAX_FIXED_LINE + blob.length * 3 + 64));
  for (let i = 0; i < batch.count; i++) {
    const o = i * LAYOUT.slots;
    const present = r[o] as number;
    if (layout.extended) w.bytes(r[o + LAYOUT.family] === AF_INET6 ? IPV6_TEXT : IPV4_TEXT);
    const origHead = r[o + LAYOUT.orig] as number;
    w.bytes(PROTOCOL_TEXT[origHead & 0xff] as Buffer);
    if ((present & HAS_TIMEOUT) !== 0) {
      w.number(r[o + LAYOUT.timeout] as number);
      w.ascii(' ');
    }
    if ((present & HAS_TCP) !== 0) w.bytes(TCP_STATE_TEXT[(r[o + LAYOUT.tcp] as number) & 0xff] ?? (TCP_STATE_TEXT[0] as Buffer));
    if ((present & HAS_SCTP) !== 0) w.bytes(SCTP_STATE_TEXT[(r[o + LAYOUT.sctp] as number) & 0xff] ?? (SCTP_STATE_TEXT[0] as Buffer));
    tuple(w, r, o + LAYOUT.orig, blob);
    if (((origHead >>> 8) & T_ZONE) !== 0) {
      w.ascii('zone-orig=');
      w.number(r[o + LAYOUT.orig + 3] as number);
      w.ascii(' ');
    }
    const c = o + LAYOUT.counters;
    const counters = (present & (HAS_COUNTERS_ORIG | HAS_COUNTERS_REPLY)) !== 0;
    if (counters) {
      w.ascii('packets=');
      w.number(u64(r, c));
      w.ascii(' bytes=');
      w.number(u64(r, c + 2));
      w.ascii(' ');
    }
    const status = (present & HAS_STATUS) !== 0 ? (r[o + LAYOUT.status] as number) : 0;
    if ((status & SEEN_REPLY) === 0) w.ascii('[UNREPLIED] ');
    tuple(w, r, o + LAYOUT.reply, blob);
    if ((((r[o + LAYOUT.reply] as number) >>> 8) & T_ZONE) !== 0) {
      w.ascii('zone-reply=');
      w.number(r[o + LAYOUT.reply + 3] as number);
      w.ascii(' ');
    }
    if (counters) {
      w.ascii('packets=');
      w.number(u64(r, c + 4));
      w.ascii(' bytes=');
      w.number(u64(r, c + 6));
      w.ascii(' ');
    }
    if ((status & HW_OFFLOAD) !== 0) w.ascii('[HW_OFFLOAD] ');
    else if ((status & OFFLOAD) !== 0) w.ascii('[OFFLOAD] ');
    else if ((status & ASSURED) !== 0) w.ascii('[ASSURED] ');
    if ((present & HAS_MARK) !== 0) {
      w.ascii('mark=');
      w.number(r[o + LAYOUT.mark] as number);
      w.ascii(' ');
    }
    if ((present & HAS_SECMARK) !== 0) {
      w.ascii('secmark=');
      w.number(r[o + LAYOUT.secmark] as number);
      w.ascii(' ');
    }
    if ((present & HAS_SECCTX) !== 0) {
      const from = r[o + LAYOUT.secctxOff] as number;
      w.ascii('secctx=');
      w.pos += w.buf.write(batch.strings.substring(from, from + (r[o + LAYOUT.secctxOff + 1] as number)), w.pos, 'utf8');
      w.ascii(' ');
    }
    if ((present & HAS_ZONE) !== 0) {
      w.ascii('zone=');
      w.number(r[o + LAYOUT.zone] as number);
      w.ascii(' ');
    }
    if ((present & HAS_TSTAMP_START) !== 0) {
      const start = seconds(r, o + LAYOUT.timestamp);
      const stop = (present & HAS_TSTAMP_STOP) !== 0 ? seconds(r, o + LAYOUT.timestamp + 2) : 0;
      w.ascii('delta-time=');
      w.number(Math.max(0, (stop === 0 ? nowSeconds : stop) - start));
      w.ascii(' ');
    }
    if ((present & HAS_HELPER) !== 0) {
      const ref = r[o + LAYOUT.helper] as number;
      w.ascii('helper=');
      w.pos += w.buf.write(batch.strings.substring(ref & 0xffffff, (ref & 0xffffff) + (ref >>> 24)), w.pos, 'utf8');
      w.ascii(' ');
    }
    if ((present & HAS_USE) !== 0) {
      w.ascii('use=');
      w.number(r[o + LAYOUT.use] as number);
      w.ascii(' ');
    }
    if (layout.id) {
      w.ascii('id=');
      w.number(r[o + LAYOUT.id] as number);
      w.ascii(' ');
    }
    // The line's last blank becomes its newline.
    w.buf[w.pos - 1] = 10;
  }
  return { text: w.buf.subarray(0, w.pos), count: batch.count };
}
