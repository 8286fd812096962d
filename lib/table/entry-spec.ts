/**
 * Validates what get(), create(), update() and delete() are given and turns it into the
 * binding's entry spec. Every value is checked here: nothing unchecked reaches the kernel.
 */
import { invalidArgument } from '../base/errors.js';
import { parseAddress, tcpStateNumber } from './filter.js';
import { PROTOCOL_NUMBERS, STATUS_FLAGS, TCP_STATES } from './records.js';
import type { NativeEntrySpec, NativeNatRange, NativeTupleSpec } from '../binding/native.js';
import type { EntryChanges, EntryTarget, NatSpec, NewEntry, ProtocolName, TupleSpec } from '../base/types.js';

export const AF_INET = 2;
export const AF_INET6 = 10;


/** IPCTNL_MSG_CT_* operation numbers of native/requests.h EntryOp. */
export const ENTRY_OP = { get: 0, create: 1, update: 2, delete: 3, getZero: 4 } as const;

const PORT_PROTOCOLS = new Set([6, 17, 33, 132, 136]);
const ICMP = 1;
const ICMPV6 = 58;
/** ICMP / ICMPv6 queries and their answers: the reply tuple of a query entry. */
const ICMP_ANSWER: Record<number, number> = { 8: 0, 13: 14, 15: 16, 17: 18, 10: 9 };
const ICMPV6_ANSWER: Record<number, number> = { 128: 129, 130: 131, 133: 134, 135: 136, 139: 140 };
const invert = (map: Record<number, number>) => Object.fromEntries(Object.entries(map).map(([query, answer]) => [answer, Number(query)]));
const ICMP_QUERY: Record<number, number> = invert(ICMP_ANSWER);
const ICMPV6_QUERY: Record<number, number> = invert(ICMPV6_ANSWER);

function isInteger(value: unknown, max: number): value is number {
  return Number.isInteger(value) && (value as number) >= 0 && (value as number) <= max;
}

function integer(value: unknown, max: number, what: string): number {
  if (!isInteger(value, max)) throw invalidArgument(`${what} must be an integer from 0 to ${max}`);
  return value;
}

function address(text: unknown, what: string): { family: number; bytes: Uint8Array } {
  const parsed = typeof text === 'string' ? parseAddress(text) : undefined;
  if (parsed === undefined) throw invalidArgument(`${what} must be an IPv4 or IPv6 address, got ${JSON.stringify(text)}`);
  return parsed;
}

function protocolNumber(protocol: unknown, what: string): number {
  if (typeof protocol === 'number') return integer(protocol, 255, what);
  const number = PROTOCOL_NUMBERS[protocol as Exclude<ProtocolName, 'unknown'>];
  if (typeof protocol !== 'string' || number === undefined) {
    throw invalidArgument(`${what} must be a protocol name (${Object.keys(PROTOCOL_NUMBERS).join(', ')}) or number`);
  }
  return number;
}

/** A full tuple: the kernel needs every part to find an entry (else EINVAL). */
export function tupleSpec(tuple: TupleSpec, what: string): { family: number; native: NativeTupleSpec } {
  if (tuple === null || typeof tuple !== 'object') throw invalidArgument(`${what} must be an object`);
  const src = address(tuple.src, `${what}.src`);
  const dst = address(tuple.dst, `${what}.dst`);
  if (src.family !== dst.family) throw invalidArgument(`${what}: src and dst must be of one family`);
  const proto = protocolNumber(tuple.protocol, `${what}.protocol`);
  const native: NativeTupleSpec = { src: src.bytes, dst: dst.bytes, proto };
  if (PORT_PROTOCOLS.has(proto)) {
    native.sport = integer(tuple.sport, 65535, `${what}.sport`);
    native.dport = integer(tuple.dport, 65535, `${what}.dport`);
  } else if (proto === ICMP || proto === ICMPV6) {
    if ((proto === ICMPV6) !== (src.family === AF_INET6)) throw invalidArgument(`${what}: icmp goes with IPv4, icmpv6 with IPv6`);
    native.icmpType = integer(tuple.icmpType, 255, `${what}.icmpType`);
    native.icmpCode = integer(tuple.icmpCode ?? 0, 255, `${what}.icmpCode`);
    native.icmpId = integer(tuple.icmpId, 65535, `${what}.icmpId`);
  } else if (tuple.sport !== undefined || tuple.dport !== undefined) {
    throw invalidArgument(`${what}: protocol ${proto} has no ports`);
  }
  return { family: src.family, native };
}

/** The other direction's tuple of an entry without NAT: the reply of `from: 'original'`, or the original of a reply. */
function mirrored(t: NativeTupleSpec, from: 'original' | 'reply'): NativeTupleSpec {
  const other: NativeTupleSpec = { src: t.dst, dst: t.src, proto: t.proto };
  if (t.sport !== undefined) {
    other.sport = t.dport;
    other.dport = t.sport;
  }
  if (t.icmpType !== undefined) {
    const map = from === 'original' ? (t.proto === ICMPV6 ? ICMPV6_ANSWER : ICMP_ANSWER) : (t.proto === ICMPV6 ? ICMPV6_QUERY : ICMP_QUERY);
    const type = map[t.icmpType];
    if (type === undefined) {
      throw invalidArgument(from === 'original'
        ? `original.icmpType ${t.icmpType} is not a query: give the reply tuple`
        : `reply.icmpType ${t.icmpType} is not an answer to a query: give the original tuple`);
    }
    other.icmpType = type;
    other.icmpCode = t.icmpCode;
    other.icmpId = t.icmpId;
  }
  return other;
}

function isEntry(target: EntryTarget): target is Extract<EntryTarget, { id: number; original: unknown }> {
  return typeof (target as { id?: unknown }).id === 'number' && typeof (target as { original?: unknown }).original === 'object';
}

/** The spec that names one existing entry: its original tuple and zone, and its id when known. */
export function targetSpec(target: EntryTarget): NativeEntrySpec {
  if (target === null || typeof target !== 'object') throw invalidArgument('the entry must be given as a tuple or an entry');
  if (isEntry(target)) {
    const t = target.original;
    const tuple: TupleSpec = {
      protocol: t.protocolNumber, src: t.src, dst: t.dst, sport: t.sport, dport: t.dport,
      icmpType: t.icmpType, icmpCode: t.icmpCode, icmpId: t.icmpId,
    };
    const { family, native } = tupleSpec(tuple, 'entry.original');
    const spec: NativeEntrySpec = { family, orig: native, id: integer(target.id, 0xffffffff, 'entry.id') };
    if (target.zone !== undefined) spec.zone = integer(target.zone, 65535, 'entry.zone');
    return spec;
  }
  if (isReplyTarget(target)) {
    const { family, native } = tupleSpec(target.reply, 'reply');
    const spec: NativeEntrySpec = { family, reply: native };
    if (target.zone !== undefined) spec.zone = integer(target.zone, 65535, 'zone');
    return spec;
  }
  const { family, native } = tupleSpec(target, 'tuple');
  const spec: NativeEntrySpec = { family, orig: native };
  if (target.zone !== undefined) spec.zone = integer(target.zone, 65535, 'tuple.zone');
  return spec;
}

/** `{ reply, zone? }`: an entry named by its reply tuple alone (a tuple has src at its top level). */
function isReplyTarget(target: EntryTarget): target is { reply: TupleSpec; zone?: number } {
  const t = target as { reply?: unknown; src?: unknown };
  return t.src === undefined && t.reply !== null && typeof t.reply === 'object';
}

const LABEL_BITS = 128;

function labelWords(bits: unknown, what: string): Uint32Array {
  if (!Array.isArray(bits)) throw invalidArgument(`${what} must be a list of label bits 0-${LABEL_BITS - 1}`);
  const words = new Uint32Array(LABEL_BITS / 32);
  for (const bit of bits) {
    if (!isInteger(bit, LABEL_BITS - 1)) throw invalidArgument(`${what}: label bit ${JSON.stringify(bit)} is not 0-${LABEL_BITS - 1}`);
    words[bit >> 5] = ((words[bit >> 5] as number) | (1 << (bit & 31))) >>> 0;
  }
  return words;
}

function labelChanges(labels: NonNullable<EntryChanges['labels']>): { labels: Uint32Array; labelsMask: Uint32Array } {
  if (Array.isArray(labels)) {
    return { labels: labelWords(labels, 'changes.labels'), labelsMask: new Uint32Array(LABEL_BITS / 32).fill(0xffffffff) };
  }
  if (labels === null || typeof labels !== 'object') throw invalidArgument('changes.labels must be a list or { add, remove }');
  const { add = [], remove = [] } = labels as { add?: readonly number[]; remove?: readonly number[] };
  const set = labelWords(add, 'changes.labels.add');
  const cleared = labelWords(remove, 'changes.labels.remove');
  const mask = set.map((word, i) => (word | (cleared[i] as number)) >>> 0);
  if (set.some((word, i) => (word & (cleared[i] as number)) !== 0)) throw invalidArgument('changes.labels: a bit is both added and removed');
  if (mask.every((word) => word === 0)) throw invalidArgument('changes.labels: nothing to add or remove');
  return { labels: set, labelsMask: mask };
}

export function changesSpec(target: EntryTarget, changes: EntryChanges): NativeEntrySpec {
  if (changes === null || typeof changes !== 'object') throw invalidArgument('changes must be an object');
  const spec = targetSpec(target);
  if (changes.mark === undefined && changes.timeout === undefined && changes.labels === undefined) {
    throw invalidArgument('changes must set mark, timeout or labels');
  }
  if (changes.labels !== undefined) Object.assign(spec, labelChanges(changes.labels));
  if (changes.mark !== undefined) spec.mark = integer(changes.mark, 0xffffffff, 'changes.mark');
  if (changes.timeout !== undefined) spec.timeout = integer(changes.timeout, 0x7fffffff, 'changes.timeout');
  return spec;
}

function natRange(nat: NatSpec, what: string, family: number, proto: number): NativeNatRange {
  if (nat === null || typeof nat !== 'object') throw invalidArgument(`${what} must be { address, port? }`);
  const [low, high] = Array.isArray(nat.address) ? nat.address : [nat.address, nat.address];
  const min = address(low, `${what}.address`);
  const max = address(high, `${what}.address`);
  if (min.family !== family || max.family !== family) throw invalidArgument(`${what}.address must be of the entry's family`);
  if (compareBytes(min.bytes, max.bytes) > 0) throw invalidArgument(`${what}.address: the range's first address is after its last`);
  const range: NativeNatRange = { min: min.bytes, max: max.bytes };
  if (nat.port !== undefined) {
    if (!PORT_PROTOCOLS.has(proto)) throw invalidArgument(`${what}.port: protocol ${proto} has no ports`);
    const [minPort, maxPort] = Array.isArray(nat.port) ? nat.port : [nat.port, nat.port];
    range.minPort = integer(minPort, 65535, `${what}.port`);
    range.maxPort = integer(maxPort, 65535, `${what}.port`);
    if (range.minPort > range.maxPort) throw invalidArgument(`${what}.port: the range's first port is after its last`);
  }
  return range;
}

function compareBytes(a: Uint8Array, b: Uint8Array): number {
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return (a[i] as number) - (b[i] as number);
  return 0;
}

export function newEntrySpec(entry: NewEntry): NativeEntrySpec {
  if (entry === null || typeof entry !== 'object') throw invalidArgument('the new entry must be an object');
  if (entry.original === undefined && entry.reply === undefined) throw invalidArgument('the new entry needs an original or a reply tuple');
  let spec: NativeEntrySpec;
  if (entry.original === undefined) {
    // The kernel wants both directions; conntrack-tools (-I -r … -q …) mirrors the reply too.
    const reply = tupleSpec(entry.reply as TupleSpec, 'reply');
    spec = { family: reply.family, orig: mirrored(reply.native, 'reply'), reply: reply.native };
  } else {
    const original = tupleSpec(entry.original, 'original');
    let reply: NativeTupleSpec;
    if (entry.reply === undefined) {
      reply = mirrored(original.native, 'original');
    } else {
      const given = tupleSpec(entry.reply, 'reply');
      if (given.family !== original.family || given.native.proto !== original.native.proto) {
        throw invalidArgument('reply must have the family and protocol of original');
      }
      reply = given.native;
    }
    spec = { family: original.family, orig: original.native, reply };
  }
  const proto = (spec.orig as NativeTupleSpec).proto;
  spec.timeout = integer(entry.timeout, 0x7fffffff, 'timeout');
  if (spec.timeout === 0) throw invalidArgument('timeout must be at least 1 second');
  if (entry.mark !== undefined) spec.mark = integer(entry.mark, 0xffffffff, 'mark');
  if (entry.zone !== undefined) spec.zone = integer(entry.zone, 65535, 'zone');
  if (proto === 6) {
    const state = tcpStateNumber(entry.tcpState ?? 'ESTABLISHED');
    if (state < 0) throw invalidArgument(`tcpState must be one of ${TCP_STATES.join(', ')} (or LISTEN for SYN_SENT2)`);
    spec.tcpState = state;
  } else if (entry.tcpState !== undefined) {
    throw invalidArgument('tcpState is for TCP entries only');
  }
  if (entry.labels !== undefined) spec.labels = labelWords(entry.labels, 'labels');
  if (entry.srcNat !== undefined) spec.natSrc = natRange(entry.srcNat, 'srcNat', spec.family, proto);
  if (entry.dstNat !== undefined) spec.natDst = natRange(entry.dstNat, 'dstNat', spec.family, proto);
  if (entry.flags !== undefined) {
    if (!Array.isArray(entry.flags)) throw invalidArgument('flags must be a list of status flags');
    let bits = 0;
    for (const flag of entry.flags) {
      const bit = STATUS_FLAGS.indexOf(flag);
      if (bit < 0) throw invalidArgument(`flags: unknown status flag ${JSON.stringify(flag)}`);
      bits |= 1 << bit;
    }
    // ctnetlink_create_conntrack() marks the entry CONFIRMED before applying CTA_STATUS, and
    // refuses (EBUSY) a status that would change CONFIRMED, EXPECTED or DYING.
    spec.status = (bits | (1 << STATUS_FLAGS.indexOf('CONFIRMED'))) >>> 0;
  }
  return spec;
}
