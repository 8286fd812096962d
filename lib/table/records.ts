/**
 * Turns the addon's batches (fixed-size u32 records plus one text per batch) into entries.
 * Every entry is built with the same property order, so V8 gives them all one shape.
 * Every slot, bit and shift comes from the addon (native/record_layout.h, through
 * lib/binding/layout.ts), read once into the constants below.
 */
import { checkLayout, layoutConstant as layout } from '../binding/layout.js';
import type { NativeBatch } from '../binding/native.js';
import type {
  ConntrackEntry, ConntrackEvent, ConntrackEventType, OverflowEvent, DccpState, Family, ProtocolName, SctpState, StatusFlag, TcpState, Tuple,
} from '../base/types.js';

const SLOTS = layout('record', 'slots');
const LABEL_WORDS = layout('record', 'labelWords');

// Slots.
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
const S_MASTER = layout('slot', 'master');
const S_COUNTERS = layout('slot', 'counters');
const S_TIMESTAMP = layout('slot', 'timestamp');
const S_TCP = layout('slot', 'tcp');
const S_TCP_FLAGS = layout('slot', 'tcpFlags');
const S_SCTP = layout('slot', 'sctp');
const S_SCTP_VTAG_ORIG = layout('slot', 'sctpVtagOrig');
const S_SCTP_VTAG_REPLY = layout('slot', 'sctpVtagReply');
const S_DCCP = layout('slot', 'dccp');
const S_DCCP_SEQ = layout('slot', 'dccpSeq');
const S_HELPER = layout('slot', 'helper');
const S_SECCTX_OFF = layout('slot', 'secctxOff');
const S_SECCTX_LEN = layout('slot', 'secctxLen');
const S_LABELS = layout('slot', 'labels');
const S_SEQADJ_ORIG = layout('slot', 'seqAdjOrig');
const S_SEQADJ_REPLY = layout('slot', 'seqAdjReply');
const S_SYNPROXY = layout('slot', 'synproxy');
const S_EVENT = layout('slot', 'event');

// Within a tuple block, and the fields packed into its words.
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

// Sub-offsets.
const U64_LOW = layout('u64', 'low');
const U64_HIGH = layout('u64', 'high');
const PACKETS_ORIG = layout('counter', 'packetsOrig');
const BYTES_ORIG = layout('counter', 'bytesOrig');
const PACKETS_REPLY = layout('counter', 'packetsReply');
const BYTES_REPLY = layout('counter', 'bytesReply');
const TS_START = layout('timestamp', 'start');
const TS_STOP = layout('timestamp', 'stop');
const SEQADJ_CORRECTION_POS = layout('seqAdj', 'correctionPos');
const SEQADJ_OFFSET_BEFORE = layout('seqAdj', 'offsetBefore');
const SEQADJ_OFFSET_AFTER = layout('seqAdj', 'offsetAfter');
const SYNPROXY_ISN = layout('synproxy', 'isn');
const SYNPROXY_ITS = layout('synproxy', 'its');
const SYNPROXY_TSOFF = layout('synproxy', 'tsoff');

// Packed protocol words.
const TCP_STATE_SHIFT = layout('tcpWord', 'state');
const TCP_WSCALE_ORIG_SHIFT = layout('tcpWord', 'wscaleOrig');
const TCP_WSCALE_REPLY_SHIFT = layout('tcpWord', 'wscaleReply');
const TCP_HAS_SHIFT = layout('tcpWord', 'has');
const TCP_FLAGS_ORIG_SHIFT = layout('tcpFlagsWord', 'flagsOrig');
const TCP_FLAGS_REPLY_SHIFT = layout('tcpFlagsWord', 'flagsReply');
const SCTP_STATE_SHIFT = layout('sctpWord', 'state');
const SCTP_HAS_SHIFT = layout('sctpWord', 'has');
const DCCP_STATE_SHIFT = layout('dccpWord', 'state');
const DCCP_ROLE_SHIFT = layout('dccpWord', 'role');
const DCCP_HAS_SHIFT = layout('dccpWord', 'has');
const STRING_LENGTH_SHIFT = layout('stringRef', 'lengthShift');
const STRING_OFFSET_MASK = layout('stringRef', 'offsetMask');

// Present bits.
const HAS_STATUS = layout('present', 'status');
const HAS_TIMEOUT = layout('present', 'timeout');
const HAS_USE = layout('present', 'use');
const HAS_ZONE = layout('present', 'zone');
const HAS_SECMARK = layout('present', 'secmark');
const HAS_ORIG = layout('present', 'orig');
const HAS_REPLY = layout('present', 'reply');
const HAS_MASTER = layout('present', 'master');
const HAS_COUNTERS_ORIG = layout('present', 'countersOrig');
const HAS_COUNTERS_REPLY = layout('present', 'countersReply');
const HAS_TSTAMP_START = layout('present', 'timestampStart');
const HAS_TSTAMP_STOP = layout('present', 'timestampStop');
const HAS_TCP = layout('present', 'tcp');
const HAS_SCTP = layout('present', 'sctp');
const HAS_DCCP = layout('present', 'dccp');
const HAS_HELPER = layout('present', 'helper');
const HAS_SECCTX = layout('present', 'secctx');
const HAS_LABELS = layout('present', 'labels');
const HAS_SEQADJ_ORIG = layout('present', 'seqAdjOrig');
const HAS_SEQADJ_REPLY = layout('present', 'seqAdjReply');
const HAS_SYNPROXY = layout('present', 'synproxy');

// Tuple, TCP, SCTP and DCCP bits.
const T_PORTS = layout('tupleHas', 'ports');
const T_ICMP = layout('tupleHas', 'icmp');
const T_ZONE = layout('tupleHas', 'zone');
const T_SRC = layout('tupleHas', 'src');
const T_DST = layout('tupleHas', 'dst');
const TCP_HAS_WSCALE_ORIG = layout('tcpHas', 'wscaleOrig');
const TCP_HAS_WSCALE_REPLY = layout('tcpHas', 'wscaleReply');
const TCP_HAS_FLAGS_ORIG = layout('tcpHas', 'flagsOrig');
const TCP_HAS_FLAGS_REPLY = layout('tcpHas', 'flagsReply');
const SCTP_HAS_VTAG_ORIG = layout('sctpHas', 'vtagOrig');
const SCTP_HAS_VTAG_REPLY = layout('sctpHas', 'vtagReply');
const DCCP_HAS_ROLE = layout('dccpHas', 'role');
const DCCP_HAS_SEQ = layout('dccpHas', 'seq');

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
  const offset = ref & STRING_OFFSET_MASK;
  return strings.substring(offset, offset + (ref >>> STRING_LENGTH_SHIFT));
}

function decodeTuple(r: Uint32Array, base: number, src: string, dst: string): Tuple {
  const head = r[base + TUPLE_PROTO] as number;
  const has = head >>> TUPLE_HAS_SHIFT;
  const protocolNumber = (head >>> PROTO_SHIFT) & 0xff;
  const ports = r[base + TUPLE_PORTS] as number;
  const icmp = r[base + TUPLE_ICMP] as number;
  const portsPresent = (has & T_PORTS) !== 0;
  const icmpPresent = (has & T_ICMP) !== 0;
  return {
    src,
    dst,
    protocolNumber,
    protocol: PROTOCOL_NAMES[protocolNumber] as ProtocolName,
    sport: portsPresent ? (ports >>> SPORT_SHIFT) & 0xffff : undefined,
    dport: portsPresent ? (ports >>> DPORT_SHIFT) & 0xffff : undefined,
    icmpType: icmpPresent ? (icmp >>> ICMP_TYPE_SHIFT) & 0xff : undefined,
    icmpCode: icmpPresent ? (icmp >>> ICMP_CODE_SHIFT) & 0xff : undefined,
    icmpId: icmpPresent ? (icmp >>> ICMP_ID_SHIFT) & 0xffff : undefined,
    zone: (has & T_ZONE) !== 0 ? (r[base + TUPLE_ZONE] as number) : undefined,
  };
}

function tupleAddresses(r: Uint32Array, base: number): [number, number] {
  const has = (r[base + TUPLE_PROTO] as number) >>> TUPLE_HAS_SHIFT;
  return [
    (has & T_SRC) !== 0 ? (r[base + TUPLE_SRC] as number) : -1,
    (has & T_DST) !== 0 ? (r[base + TUPLE_DST] as number) : -1,
  ];
}

function u64(r: Uint32Array, at: number): number {
  return (r[at + U64_LOW] as number) + (r[at + U64_HIGH] as number) * TWO_32;
}

function big64(r: Uint32Array, at: number): bigint {
  return (BigInt(r[at + U64_HIGH] as number) << 32n) | BigInt(r[at + U64_LOW] as number);
}

function labelBits(r: Uint32Array, at: number): number[] {
  const bits: number[] = [];
  for (let word = 0; word < LABEL_WORDS; word++) {
    const v = r[at + word] as number;
    if (v === 0) continue;
    for (let bit = 0; bit < 32; bit++) if (v & (1 << bit)) bits.push(word * 32 + bit);
  }
  return bits;
}

/** Decodes record `index` of a batch. */
export function decodeRecord(r: Uint32Array, index: number, strings: string): ConntrackEntry {
  const o = index * SLOTS;
  const present = r[o + S_PRESENT] as number;
  const family: Family = r[o + S_FAMILY] === AF_INET6 ? 'ipv6' : 'ipv4';

  // Address strings: the reply usually mirrors the original, and native code then hands
  // out the same text reference; reuse the JS string too.
  const [origSrcRef, origDstRef] = tupleAddresses(r, o + S_ORIG);
  const origSrc = origSrcRef >= 0 ? text(strings, origSrcRef) : '';
  const origDst = origDstRef >= 0 ? text(strings, origDstRef) : '';
  let reply: Tuple;
  if ((present & HAS_REPLY) !== 0) {
    const [replySrcRef, replyDstRef] = tupleAddresses(r, o + S_REPLY);
    const replySrc = replySrcRef === origDstRef ? origDst : replySrcRef >= 0 ? text(strings, replySrcRef) : '';
    const replyDst = replyDstRef === origSrcRef ? origSrc : replyDstRef >= 0 ? text(strings, replyDstRef) : '';
    reply = decodeTuple(r, o + S_REPLY, replySrc, replyDst);
  } else {
    reply = emptyTuple();
  }
  const original = (present & HAS_ORIG) !== 0 ? decodeTuple(r, o + S_ORIG, origSrc, origDst) : emptyTuple();
  let master: Tuple | undefined;
  if ((present & HAS_MASTER) !== 0) {
    const [s, d] = tupleAddresses(r, o + S_MASTER);
    master = decodeTuple(r, o + S_MASTER, s >= 0 ? text(strings, s) : '', d >= 0 ? text(strings, d) : '');
  }

  const status = (present & HAS_STATUS) !== 0 ? (r[o + S_STATUS] as number) : 0;
  const c = o + S_COUNTERS;
  const hasCounters = (present & (HAS_COUNTERS_ORIG | HAS_COUNTERS_REPLY)) !== 0;
  const tcpWord = r[o + S_TCP] as number;
  const tcpHas = tcpWord >>> TCP_HAS_SHIFT;
  const tcpFlags = r[o + S_TCP_FLAGS] as number;
  const sctpWord = r[o + S_SCTP] as number;
  const sctpHas = sctpWord >>> SCTP_HAS_SHIFT;
  const dccpWord = r[o + S_DCCP] as number;
  const dccpHas = dccpWord >>> DCCP_HAS_SHIFT;
  const secctxOff = r[o + S_SECCTX_OFF] as number;

  return {
    id: r[o + S_ID] as number,
    family,
    original,
    reply,
    master,
    status,
    flags: statusFlags(status),
    timeout: (present & HAS_TIMEOUT) !== 0 ? (r[o + S_TIMEOUT] as number) : undefined,
    mark: r[o + S_MARK] as number,
    secmark: (present & HAS_SECMARK) !== 0 ? (r[o + S_SECMARK] as number) : undefined,
    secctx: (present & HAS_SECCTX) !== 0 ? strings.substring(secctxOff, secctxOff + (r[o + S_SECCTX_LEN] as number)) : undefined,
    zone: (present & HAS_ZONE) !== 0 ? (r[o + S_ZONE] as number) : undefined,
    use: (present & HAS_USE) !== 0 ? (r[o + S_USE] as number) : undefined,
    counters: hasCounters
      ? {
          original: { packets: u64(r, c + PACKETS_ORIG), bytes: u64(r, c + BYTES_ORIG) },
          reply: { packets: u64(r, c + PACKETS_REPLY), bytes: u64(r, c + BYTES_REPLY) },
        }
      : undefined,
    timestamp: (present & HAS_TSTAMP_START) !== 0
      ? {
          start: big64(r, o + S_TIMESTAMP + TS_START),
          stop: (present & HAS_TSTAMP_STOP) !== 0 ? big64(r, o + S_TIMESTAMP + TS_STOP) : undefined,
        }
      : undefined,
    tcp: (present & HAS_TCP) !== 0
      ? {
          state: TCP_STATES[(tcpWord >>> TCP_STATE_SHIFT) & 0xff] ?? 'NONE',
          stateNumber: (tcpWord >>> TCP_STATE_SHIFT) & 0xff,
          wscaleOriginal: (tcpHas & TCP_HAS_WSCALE_ORIG) !== 0 ? (tcpWord >>> TCP_WSCALE_ORIG_SHIFT) & 0xff : undefined,
          wscaleReply: (tcpHas & TCP_HAS_WSCALE_REPLY) !== 0 ? (tcpWord >>> TCP_WSCALE_REPLY_SHIFT) & 0xff : undefined,
          flagsOriginal: (tcpHas & TCP_HAS_FLAGS_ORIG) !== 0 ? (tcpFlags >>> TCP_FLAGS_ORIG_SHIFT) & 0xff : undefined,
          flagsReply: (tcpHas & TCP_HAS_FLAGS_REPLY) !== 0 ? (tcpFlags >>> TCP_FLAGS_REPLY_SHIFT) & 0xff : undefined,
        }
      : undefined,
    sctp: (present & HAS_SCTP) !== 0
      ? {
          state: SCTP_STATES[(sctpWord >>> SCTP_STATE_SHIFT) & 0xff] ?? 'NONE',
          stateNumber: (sctpWord >>> SCTP_STATE_SHIFT) & 0xff,
          vtagOriginal: (sctpHas & SCTP_HAS_VTAG_ORIG) !== 0 ? (r[o + S_SCTP_VTAG_ORIG] as number) : undefined,
          vtagReply: (sctpHas & SCTP_HAS_VTAG_REPLY) !== 0 ? (r[o + S_SCTP_VTAG_REPLY] as number) : undefined,
        }
      : undefined,
    dccp: (present & HAS_DCCP) !== 0
      ? {
          state: DCCP_STATES[(dccpWord >>> DCCP_STATE_SHIFT) & 0xff] ?? 'NONE',
          stateNumber: (dccpWord >>> DCCP_STATE_SHIFT) & 0xff,
          role: (dccpHas & DCCP_HAS_ROLE) !== 0 ? (dccpWord >>> DCCP_ROLE_SHIFT) & 0xff : undefined,
          handshakeSeq: (dccpHas & DCCP_HAS_SEQ) !== 0 ? big64(r, o + S_DCCP_SEQ) : undefined,
        }
      : undefined,
    helper: (present & HAS_HELPER) !== 0 ? text(strings, r[o + S_HELPER] as number) : undefined,
    labels: (present & HAS_LABELS) !== 0 ? Object.freeze(labelBits(r, o + S_LABELS)) : undefined,
    seqAdjust: (present & (HAS_SEQADJ_ORIG | HAS_SEQADJ_REPLY)) !== 0
      ? {
          original: (present & HAS_SEQADJ_ORIG) !== 0 ? seqAdj(r, o + S_SEQADJ_ORIG) : undefined,
          reply: (present & HAS_SEQADJ_REPLY) !== 0 ? seqAdj(r, o + S_SEQADJ_REPLY) : undefined,
        }
      : undefined,
    synproxy: (present & HAS_SYNPROXY) !== 0
      ? {
          isn: r[o + S_SYNPROXY + SYNPROXY_ISN] as number,
          its: r[o + S_SYNPROXY + SYNPROXY_ITS] as number,
          tsoff: r[o + S_SYNPROXY + SYNPROXY_TSOFF] as number,
        }
      : undefined,
  };
}

function seqAdj(r: Uint32Array, at: number) {
  // The offsets are s32 in the kernel (struct nf_ct_seqadj): a NAT helper that shortens a line
  // makes them negative. The record carries the wire's u32 words; `| 0` reinterprets them.
  return {
    correctionPos: r[at + SEQADJ_CORRECTION_POS] as number,
    offsetBefore: (r[at + SEQADJ_OFFSET_BEFORE] as number) | 0,
    offsetAfter: (r[at + SEQADJ_OFFSET_AFTER] as number) | 0,
  };
}

function emptyTuple(): Tuple {
  return {
    src: '', dst: '', protocolNumber: 0, protocol: 'unknown', sport: undefined, dport: undefined,
    icmpType: undefined, icmpCode: undefined, icmpId: undefined, zone: undefined,
  };
}

/** A string of the batch text by its string ref (for other records sharing the layout). */
export function recordText(strings: string, ref: number): string {
  return text(strings, ref);
}

/** The tuple block at `base` with its addresses (for other records sharing the tuple layout). */
export function decodeTupleAt(r: Uint32Array, base: number, strings: string): Tuple {
  const [src, dst] = tupleAddresses(r, base);
  return decodeTuple(r, base, src >= 0 ? text(strings, src) : '', dst >= 0 ? text(strings, dst) : '');
}

/** Decodes a whole batch. */
export function decodeBatch(batch: NativeBatch): ConntrackEntry[] {
  checkLayout();
  const records = new Uint32Array(batch.records);
  const out = new Array<ConntrackEntry>(batch.count);
  for (let i = 0; i < batch.count; i++) out[i] = decodeRecord(records, i, batch.strings);
  return out;
}

/** Record event numbers (native/record_layout.h EventType) to names; a dump's records have none. */
export const EVENT_TYPES: readonly (ConntrackEventType | undefined)[] = (() => {
  const types: (ConntrackEventType | undefined)[] = [];
  types[layout('event', 'none')] = undefined;
  types[layout('event', 'new')] = 'new';
  types[layout('event', 'update')] = 'update';
  types[layout('event', 'destroy')] = 'destroy';
  return Array.from(types);
})();

/** Decodes an event batch: an overflow notice first when events were lost before it. */
export function decodeEventBatch(batch: NativeBatch): Array<ConntrackEvent | OverflowEvent> {
  checkLayout();
  const out: Array<ConntrackEvent | OverflowEvent> = [];
  if (batch.overflowsBefore > 0) out.push({ type: 'overflow', count: batch.overflowsBefore, receiveBufferBytes: 0 });
  if (batch.count === 0) return out;
  const records = new Uint32Array(batch.records);
  for (let i = 0; i < batch.count; i++) {
    const type = EVENT_TYPES[records[i * SLOTS + S_EVENT] as number] ?? 'update';
    out.push({ type, entry: decodeRecord(records, i, batch.strings) });
  }
  return out;
}

/** Reads only the ids of a batch, for callers that count or compare without full entries. */
export function batchIds(batch: NativeBatch): Uint32Array {
  checkLayout();
  const records = new Uint32Array(batch.records);
  const ids = new Uint32Array(batch.count);
  for (let i = 0; i < batch.count; i++) ids[i] = records[i * SLOTS + S_ID] as number;
  return ids;
}
