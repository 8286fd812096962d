/**
 * Turns the addon's batches (fixed-size u32 records plus one text per batch) into entries.
 * Every entry is built with the same property order, so V8 gives them all one shape.
 * The slot numbers mirror native/ct_codec.h; test/unit/records.test.ts checks them.
 */
import type { NativeBatch } from '../binding/native.js';
import type {
  ConntrackEntry, ConntrackEvent, ConntrackEventType, OverflowEvent, DccpState, Family, ProtocolName, SctpState, StatusFlag, TcpState, Tuple,
} from '../base/types.js';

export const LAYOUT = {
  slots: 64,
  present: 0, family: 1, id: 2, status: 3, timeout: 4, mark: 5, use: 6, zone: 7, secmark: 8,
  orig: 9, reply: 15, master: 21, counters: 27, timestamp: 35, tcp: 39, tcpFlags: 40,
  sctp: 41, dccp: 44, helper: 47, secctxOff: 48, labels: 50, seqAdjOrig: 54, seqAdjReply: 57,
  synproxy: 60, event: 63,
} as const;

// Present bits.
const HAS_STATUS = 1 << 1;
const HAS_TIMEOUT = 1 << 2;
const HAS_USE = 1 << 4;
const HAS_ZONE = 1 << 5;
const HAS_SECMARK = 1 << 6;
const HAS_ORIG = 1 << 7;
const HAS_REPLY = 1 << 8;
const HAS_MASTER = 1 << 9;
const HAS_COUNTERS_ORIG = 1 << 10;
const HAS_COUNTERS_REPLY = 1 << 11;
const HAS_TSTAMP_START = 1 << 12;
const HAS_TSTAMP_STOP = 1 << 13;
const HAS_TCP = 1 << 14;
const HAS_SCTP = 1 << 15;
const HAS_DCCP = 1 << 16;
const HAS_HELPER = 1 << 17;
const HAS_SECCTX = 1 << 18;
const HAS_LABELS = 1 << 19;
const HAS_SEQADJ_ORIG = 1 << 20;
const HAS_SEQADJ_REPLY = 1 << 21;
const HAS_SYNPROXY = 1 << 22;

// Tuple bits (kTupleProto >> 8).
const T_PORTS = 1 << 1;
const T_ICMP = 1 << 2;
const T_ZONE = 1 << 3;
const T_SRC = 1 << 4;
const T_DST = 1 << 5;

const AF_INET = 2;
const AF_INET6 = 10;

/** IPS_* bits in order (nf_conntrack_common.h). */
export const STATUS_FLAGS: readonly StatusFlag[] = [
  'EXPECTED', 'SEEN_REPLY', 'ASSURED', 'CONFIRMED', 'SRC_NAT', 'DST_NAT', 'SEQ_ADJUST',
  'SRC_NAT_DONE', 'DST_NAT_DONE', 'DYING', 'FIXED_TIMEOUT', 'TEMPLATE', 'UNTRACKED', 'HELPER',
  'OFFLOAD', 'HW_OFFLOAD',
];

/** enum tcp_conntrack (nf_conntrack_tcp.h). */
export const TCP_STATES: readonly TcpState[] = [
  'NONE', 'SYN_SENT', 'SYN_RECV', 'ESTABLISHED', 'FIN_WAIT', 'CLOSE_WAIT', 'LAST_ACK',
  'TIME_WAIT', 'CLOSE', 'SYN_SENT2',
];

/** enum sctp_conntrack (nf_conntrack_sctp.h). */
export const SCTP_STATES: readonly SctpState[] = [
  'NONE', 'CLOSED', 'COOKIE_WAIT', 'COOKIE_ECHOED', 'ESTABLISHED', 'SHUTDOWN_SENT',
  'SHUTDOWN_RECD', 'SHUTDOWN_ACK_SENT', 'HEARTBEAT_SENT', 'HEARTBEAT_ACKED',
];

/** enum ct_dccp_states (nf_conntrack_dccp.h). */
export const DCCP_STATES: readonly DccpState[] = [
  'NONE', 'REQUEST', 'RESPOND', 'PARTOPEN', 'OPEN', 'CLOSEREQ', 'CLOSING', 'TIMEWAIT',
  'IGNORE', 'INVALID',
];

export const PROTOCOL_NUMBERS: Readonly<Record<Exclude<ProtocolName, 'unknown'>, number>> = {
  icmp: 1, tcp: 6, udp: 17, dccp: 33, gre: 47, icmpv6: 58, sctp: 132, udplite: 136,
};

const PROTOCOL_NAMES: ProtocolName[] = new Array<ProtocolName>(256).fill('unknown');
for (const [name, number] of Object.entries(PROTOCOL_NUMBERS)) PROTOCOL_NAMES[number] = name as ProtocolName;

export function protocolName(number: number): ProtocolName {
  return PROTOCOL_NAMES[number] ?? 'unknown';
}

/** Status bits as names; the few distinct combinations are built once and shared (frozen). */
const flagCache = new Map<number, readonly StatusFlag[]>();
export function statusFlags(status: number): readonly StatusFlag[] {
  let flags = flagCache.get(status);
  if (flags === undefined) {
    const names: StatusFlag[] = [];
    for (let bit = 0; bit < STATUS_FLAGS.length; bit++) {
      if (status & (1 << bit)) names.push(STATUS_FLAGS[bit] as StatusFlag);
    }
    flags = Object.freeze(names);
    if (flagCache.size < 4096) flagCache.set(status, flags);
  }
  return flags;
}

const TWO_32 = 4294967296;

function text(strings: string, ref: number): string {
  const offset = ref & 0xffffff;
  return strings.substring(offset, offset + (ref >>> 24));
}

function decodeTuple(r: Uint32Array, base: number, src: string, dst: string): Tuple {
  const head = r[base] as number;
  const has = head >>> 8;
  const protocolNumber = head & 0xff;
  const ports = r[base + 1] as number;
  const icmp = r[base + 2] as number;
  const portsPresent = (has & T_PORTS) !== 0;
  const icmpPresent = (has & T_ICMP) !== 0;
  return {
    src,
    dst,
    protocolNumber,
    protocol: PROTOCOL_NAMES[protocolNumber] as ProtocolName,
    sport: portsPresent ? ports & 0xffff : undefined,
    dport: portsPresent ? ports >>> 16 : undefined,
    icmpType: icmpPresent ? icmp & 0xff : undefined,
    icmpCode: icmpPresent ? (icmp >>> 8) & 0xff : undefined,
    icmpId: icmpPresent ? icmp >>> 16 : undefined,
    zone: (has & T_ZONE) !== 0 ? (r[base + 3] as number) : undefined,
  };
}

function tupleAddresses(r: Uint32Array, base: number): [number, number] {
  const has = (r[base] as number) >>> 8;
  return [(has & T_SRC) !== 0 ? (r[base + 4] as number) : -1, (has & T_DST) !== 0 ? (r[base + 5] as number) : -1];
}

function u64(r: Uint32Array, at: number): number {
  return (r[at] as number) + (r[at + 1] as number) * TWO_32;
}

function big64(r: Uint32Array, at: number): bigint {
  return (BigInt(r[at + 1] as number) << 32n) | BigInt(r[at] as number);
}

function labelBits(r: Uint32Array, at: number): number[] {
  const bits: number[] = [];
  for (let word = 0; word < 4; word++) {
    const v = r[at + word] as number;
    if (v === 0) continue;
    for (let bit = 0; bit < 32; bit++) if (v & (1 << bit)) bits.push(word * 32 + bit);
  }
  return bits;
}

/** Decodes record `index` of a batch. */
export function decodeRecord(r: Uint32Array, index: number, strings: string): ConntrackEntry {
  const o = index * LAYOUT.slots;
  const present = r[o] as number;
  const family: Family = r[o + LAYOUT.family] === AF_INET6 ? 'ipv6' : 'ipv4';

  // Address strings: the reply usually mirrors the original, and native code then hands
  // out the same text reference; reuse the JS string too.
  const [origSrcRef, origDstRef] = tupleAddresses(r, o + LAYOUT.orig);
  const origSrc = origSrcRef >= 0 ? text(strings, origSrcRef) : '';
  const origDst = origDstRef >= 0 ? text(strings, origDstRef) : '';
  let reply: Tuple;
  if ((present & HAS_REPLY) !== 0) {
    const [replySrcRef, replyDstRef] = tupleAddresses(r, o + LAYOUT.reply);
    const replySrc = replySrcRef === origDstRef ? origDst : replySrcRef >= 0 ? text(strings, replySrcRef) : '';
    const replyDst = replyDstRef === origSrcRef ? origSrc : replyDstRef >= 0 ? text(strings, replyDstRef) : '';
    reply = decodeTuple(r, o + LAYOUT.reply, replySrc, replyDst);
  } else {
    reply = emptyTuple();
  }
  const original = (present & HAS_ORIG) !== 0 ? decodeTuple(r, o + LAYOUT.orig, origSrc, origDst) : emptyTuple();
  let master: Tuple | undefined;
  if ((present & HAS_MASTER) !== 0) {
    const [s, d] = tupleAddresses(r, o + LAYOUT.master);
    master = decodeTuple(r, o + LAYOUT.master, s >= 0 ? text(strings, s) : '', d >= 0 ? text(strings, d) : '');
  }

  const status = (present & HAS_STATUS) !== 0 ? (r[o + LAYOUT.status] as number) : 0;
  const c = o + LAYOUT.counters;
  const hasCounters = (present & (HAS_COUNTERS_ORIG | HAS_COUNTERS_REPLY)) !== 0;
  const tcpWord = r[o + LAYOUT.tcp] as number;
  const tcpHas = tcpWord >>> 24;
  const tcpFlags = r[o + LAYOUT.tcpFlags] as number;
  const sctpWord = r[o + LAYOUT.sctp] as number;
  const dccpWord = r[o + LAYOUT.dccp] as number;

  return {
    id: r[o + LAYOUT.id] as number,
    family,
    original,
    reply,
    master,
    status,
    flags: statusFlags(status),
    timeout: (present & HAS_TIMEOUT) !== 0 ? (r[o + LAYOUT.timeout] as number) : undefined,
    mark: r[o + LAYOUT.mark] as number,
    secmark: (present & HAS_SECMARK) !== 0 ? (r[o + LAYOUT.secmark] as number) : undefined,
    secctx: (present & HAS_SECCTX) !== 0
      ? strings.substring(r[o + LAYOUT.secctxOff] as number, (r[o + LAYOUT.secctxOff] as number) + (r[o + LAYOUT.secctxOff + 1] as number))
      : undefined,
    zone: (present & HAS_ZONE) !== 0 ? (r[o + LAYOUT.zone] as number) : undefined,
    use: (present & HAS_USE) !== 0 ? (r[o + LAYOUT.use] as number) : undefined,
    counters: hasCounters
      ? {
          original: { packets: u64(r, c), bytes: u64(r, c + 2) },
          reply: { packets: u64(r, c + 4), bytes: u64(r, c + 6) },
        }
      : undefined,
    timestamp: (present & HAS_TSTAMP_START) !== 0
      ? {
          start: big64(r, o + LAYOUT.timestamp),
          stop: (present & HAS_TSTAMP_STOP) !== 0 ? big64(r, o + LAYOUT.timestamp + 2) : undefined,
        }
      : undefined,
    tcp: (present & HAS_TCP) !== 0
      ? {
          state: TCP_STATES[tcpWord & 0xff] ?? 'NONE',
          stateNumber: tcpWord & 0xff,
          wscaleOriginal: (tcpHas & 2) !== 0 ? (tcpWord >>> 8) & 0xff : undefined,
          wscaleReply: (tcpHas & 4) !== 0 ? (tcpWord >>> 16) & 0xff : undefined,
          flagsOriginal: (tcpHas & 8) !== 0 ? tcpFlags & 0xff : undefined,
          flagsReply: (tcpHas & 16) !== 0 ? (tcpFlags >>> 16) & 0xff : undefined,
        }
      : undefined,
    sctp: (present & HAS_SCTP) !== 0
      ? {
          state: SCTP_STATES[sctpWord & 0xff] ?? 'NONE',
          stateNumber: sctpWord & 0xff,
          vtagOriginal: ((sctpWord >>> 8) & 2) !== 0 ? (r[o + LAYOUT.sctp + 1] as number) : undefined,
          vtagReply: ((sctpWord >>> 8) & 4) !== 0 ? (r[o + LAYOUT.sctp + 2] as number) : undefined,
        }
      : undefined,
    dccp: (present & HAS_DCCP) !== 0
      ? {
          state: DCCP_STATES[dccpWord & 0xff] ?? 'NONE',
          stateNumber: dccpWord & 0xff,
          role: ((dccpWord >>> 16) & 2) !== 0 ? (dccpWord >>> 8) & 0xff : undefined,
          handshakeSeq: ((dccpWord >>> 16) & 4) !== 0 ? big64(r, o + LAYOUT.dccp + 1) : undefined,
        }
      : undefined,
    helper: (present & HAS_HELPER) !== 0 ? text(strings, r[o + LAYOUT.helper] as number) : undefined,
    labels: (present & HAS_LABELS) !== 0 ? Object.freeze(labelBits(r, o + LAYOUT.labels)) : undefined,
    seqAdjust: (present & (HAS_SEQADJ_ORIG | HAS_SEQADJ_REPLY)) !== 0
      ? {
          original: (present & HAS_SEQADJ_ORIG) !== 0 ? seqAdj(r, o + LAYOUT.seqAdjOrig) : undefined,
          reply: (present & HAS_SEQADJ_REPLY) !== 0 ? seqAdj(r, o + LAYOUT.seqAdjReply) : undefined,
        }
      : undefined,
    synproxy: (present & HAS_SYNPROXY) !== 0
      ? {
          isn: r[o + LAYOUT.synproxy] as number,
          its: r[o + LAYOUT.synproxy + 1] as number,
          tsoff: r[o + LAYOUT.synproxy + 2] as number,
        }
      : undefined,
  };
}

function seqAdj(r: Uint32Array, at: number) {
  // The offsets are s32 in the kernel (struct nf_ct_seqadj): a NAT helper that shortens a line
  // makes them negative. The record carries the wire's u32 words; `| 0` reinterprets them.
  return {
    correctionPos: r[at] as number,
    offsetBefore: (r[at + 1] as number) | 0,
    offsetAfter: (r[at + 2] as number) | 0,
  };
}

function emptyTuple(): Tuple {
  return {
    src: '', dst: '', protocolNumber: 0, protocol: 'unknown', sport: undefined, dport: undefined,
    icmpType: undefined, icmpCode: undefined, icmpId: undefined, zone: undefined,
  };
}

/** Decodes a whole batch. */
export function decodeBatch(batch: NativeBatch): ConntrackEntry[] {
  const records = new Uint32Array(batch.records);
  const out = new Array<ConntrackEntry>(batch.count);
  for (let i = 0; i < batch.count; i++) out[i] = decodeRecord(records, i, batch.strings);
  return out;
}

/** Record event numbers (native/ct_codec.h EventType) to names; 0 is a dump's record. */
export const EVENT_TYPES: readonly (ConntrackEventType | undefined)[] = [undefined, 'new', 'update', 'destroy'];

/** Decodes an event batch: an overflow notice first when events were lost before it. */
export function decodeEventBatch(batch: NativeBatch): Array<ConntrackEvent | OverflowEvent> {
  const out: Array<ConntrackEvent | OverflowEvent> = [];
  if (batch.overflowsBefore > 0) out.push({ type: 'overflow', count: batch.overflowsBefore });
  if (batch.count === 0) return out;
  const records = new Uint32Array(batch.records);
  for (let i = 0; i < batch.count; i++) {
    const type = EVENT_TYPES[records[i * LAYOUT.slots + LAYOUT.event] as number] ?? 'update';
    out.push({ type, entry: decodeRecord(records, i, batch.strings) });
  }
  return out;
}

/** Reads only the ids of a batch, for callers that count or compare without full entries. */
export function batchIds(batch: NativeBatch): Uint32Array {
  const records = new Uint32Array(batch.records);
  const ids = new Uint32Array(batch.count);
  for (let i = 0; i < batch.count; i++) ids[i] = records[i * LAYOUT.slots + LAYOUT.id] as number;
  return ids;
}
