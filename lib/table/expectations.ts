/**
 * Expectations: their records (native/record_layout.h expect_slot, written by
 * native/expectation.cc) into objects, and what createExpectation(), getExpectation() and
 * deleteExpectation() are given into the binding's expectation spec, every value checked first.
 */
import { invalidArgument } from '../base/errors.js';
import { checkLayout, layoutConstant as layout } from '../binding/layout.js';
import type { NativeBatch, NativeExpectationSpec, NativeTupleSpec } from '../binding/native.js';
import { EVENT_TYPES, decodeTupleAt, recordText } from './records.js';
import { tupleSpec } from './entry-spec.js';
import { parseAddress } from './filter.js';
import type {
  ConntrackExpectation, ExpectationEvent, ExpectationFilter, ExpectationTarget, ExpectFlag, NewExpectation, OverflowEvent, Tuple,
} from '../base/types.js';

/** native/expectation.h ExpectationOp. */
export const EXPECTATION_OP = { dump: 0, get: 1, create: 2, delete: 3 } as const;

const SLOTS = layout('record', 'slots');
const E_PRESENT = layout('expectSlot', 'present');
const E_FAMILY = layout('expectSlot', 'family');
const E_ID = layout('expectSlot', 'id');
const E_TIMEOUT = layout('expectSlot', 'timeout');
const E_FLAGS = layout('expectSlot', 'flags');
const E_CLASS = layout('expectSlot', 'class');
const E_ZONE = layout('expectSlot', 'zone');
const E_NAT_DIR = layout('expectSlot', 'natDir');
const E_TUPLE = layout('expectSlot', 'tuple');
const E_MASK = layout('expectSlot', 'mask');
const E_MASTER = layout('expectSlot', 'master');
const E_NAT_TUPLE = layout('expectSlot', 'natTuple');
const E_HELPER = layout('expectSlot', 'helper');
const E_FN = layout('expectSlot', 'fn');
const E_EVENT = layout('expectSlot', 'event');
const HAS_TIMEOUT = layout('expectPresent', 'timeout');
const HAS_HELPER = layout('expectPresent', 'helper');
const HAS_ZONE = layout('expectPresent', 'zone');
const HAS_CLASS = layout('expectPresent', 'class');
const HAS_NAT = layout('expectPresent', 'nat');
const HAS_FN = layout('expectPresent', 'fn');

const AF_INET6 = 10;

/** NF_CT_EXPECT_* bits in order (nf_conntrack_common.h). */
export const EXPECT_FLAGS: readonly ExpectFlag[] = ['PERMANENT', 'INACTIVE', 'USERSPACE'];

function flagNames(bits: number): readonly ExpectFlag[] {
  return Object.freeze(EXPECT_FLAGS.filter((_, bit) => (bits & (1 << bit)) !== 0));
}

/** Decodes record `index` of an expectation batch. */
export function decodeExpectationRecord(r: Uint32Array, index: number, strings: string): ConntrackExpectation {
  const o = index * SLOTS;
  const present = r[o + E_PRESENT] as number;
  const flagBits = r[o + E_FLAGS] as number;
  return {
    id: r[o + E_ID] as number,
    family: r[o + E_FAMILY] === AF_INET6 ? 'ipv6' : 'ipv4',
    tuple: decodeTupleAt(r, o + E_TUPLE, strings),
    mask: decodeTupleAt(r, o + E_MASK, strings),
    master: decodeTupleAt(r, o + E_MASTER, strings),
    timeout: (present & HAS_TIMEOUT) !== 0 ? (r[o + E_TIMEOUT] as number) : undefined,
    helper: (present & HAS_HELPER) !== 0 ? recordText(strings, r[o + E_HELPER] as number) : undefined,
    class: (present & HAS_CLASS) !== 0 ? (r[o + E_CLASS] as number) : undefined,
    flagBits,
    flags: flagNames(flagBits),
    zone: (present & HAS_ZONE) !== 0 ? (r[o + E_ZONE] as number) : undefined,
    nat: (present & HAS_NAT) !== 0
      ? { dir: r[o + E_NAT_DIR] === 1 ? 'reply' : 'original', tuple: decodeTupleAt(r, o + E_NAT_TUPLE, strings) }
      : undefined,
    fn: (present & HAS_FN) !== 0 ? recordText(strings, r[o + E_FN] as number) : undefined,
  };
}

export function decodeExpectationBatch(batch: NativeBatch): ConntrackExpectation[] {
  checkLayout();
  const records = new Uint32Array(batch.records);
  const out = new Array<ConntrackExpectation>(batch.count);
  for (let i = 0; i < batch.count; i++) out[i] = decodeExpectationRecord(records, i, batch.strings);
  return out;
}

/** An expectation event batch: an overflow notice first when events were lost before it. */
export function decodeExpectationEventBatch(batch: NativeBatch): Array<ExpectationEvent | OverflowEvent> {
  checkLayout();
  const out: Array<ExpectationEvent | OverflowEvent> = [];
  if (batch.overflowsBefore > 0) out.push({ type: 'overflow', count: batch.overflowsBefore, receiveBufferBytes: 0 });
  const records = new Uint32Array(batch.records);
  for (let i = 0; i < batch.count; i++) {
    const type = EVENT_TYPES[records[i * SLOTS + E_EVENT] as number] ?? 'update';
    out.push({ type, expectation: decodeExpectationRecord(records, i, batch.strings) });
  }
  return out;
}

function uint(value: unknown, max: number, what: string): number {
  if (!Number.isInteger(value) || (value as number) < 0 || (value as number) > max) {
    throw invalidArgument(`${what} must be an integer from 0 to ${max}`);
  }
  return value as number;
}

function isExpectation(target: ExpectationTarget): target is ConntrackExpectation {
  return typeof (target as { id?: unknown }).id === 'number' && typeof (target as { tuple?: unknown }).tuple === 'object';
}

function fromTuple(t: Tuple): Parameters<typeof tupleSpec>[0] {
  return { protocol: t.protocolNumber, src: t.src, dst: t.dst, sport: t.sport, dport: t.dport, icmpType: t.icmpType, icmpCode: t.icmpCode, icmpId: t.icmpId };
}

/** The spec naming one expectation: its expected tuple and zone, and its id when known. */
export function expectationTargetSpec(target: ExpectationTarget): NativeExpectationSpec {
  if (target === null || typeof target !== 'object') throw invalidArgument('the expectation must be given as a tuple or an expectation');
  if (isExpectation(target)) {
    const { family, native } = tupleSpec(fromTuple(target.tuple), 'expectation.tuple');
    const spec: NativeExpectationSpec = { family, tuple: native, id: uint(target.id, 0xffffffff, 'expectation.id') };
    if (target.zone !== undefined) spec.zone = uint(target.zone, 65535, 'expectation.zone');
    return spec;
  }
  const { family, native } = tupleSpec(target, 'tuple');
  const spec: NativeExpectationSpec = { family, tuple: native };
  if (target.zone !== undefined) spec.zone = uint(target.zone, 65535, 'tuple.zone');
  return spec;
}

/** A mask tuple: all ones but where `mask` says otherwise; the default leaves the source port free. */
function maskSpec(expected: NativeTupleSpec, family: number, mask: NewExpectation['mask'], what: string): NativeTupleSpec {
  if (mask !== undefined && (mask === null || typeof mask !== 'object')) throw invalidArgument(`${what} must be an object`);
  const ones = family === AF_INET6 ? 'ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff' : '255.255.255.255';
  const end = (text: string | undefined, key: string): Uint8Array => {
    const parsed = parseAddress(text ?? ones);
    if (parsed === undefined || parsed.family !== family) throw invalidArgument(`${what}.${key} must be an address of the tuple's family`);
    return parsed.bytes;
  };
  // The kernel parses the mask as a whole tuple, then keeps its source address and port.
  const native: NativeTupleSpec = { src: end(mask?.src, 'src'), dst: end(mask?.dst, 'dst'), proto: expected.proto };
  if (expected.sport !== undefined) {
    native.sport = uint(mask?.sport ?? 0, 65535, `${what}.sport`);
    native.dport = uint(mask?.dport ?? 0xffff, 65535, `${what}.dport`);
  } else if (mask?.sport !== undefined || mask?.dport !== undefined) {
    throw invalidArgument(`${what}: protocol ${expected.proto} has no ports`);
  }
  if (expected.icmpType !== undefined) {
    native.icmpType = 0xff;
    native.icmpCode = 0xff;
    native.icmpId = 0xffff;
  }
  return native;
}

export function newExpectationSpec(e: NewExpectation): NativeExpectationSpec {
  if (e === null || typeof e !== 'object') throw invalidArgument('the new expectation must be an object');
  const master = tupleSpec(e.master, 'master');
  const tuple = tupleSpec(e.tuple, 'tuple');
  if (master.family !== tuple.family) throw invalidArgument('master and tuple must be of one family');
  const spec: NativeExpectationSpec = {
    family: tuple.family,
    master: master.native,
    tuple: tuple.native,
    mask: maskSpec(tuple.native, tuple.family, e.mask, 'mask'),
    timeout: uint(e.timeout, 0x7fffffff, 'timeout'),
  };
  if (spec.timeout === 0) throw invalidArgument('timeout must be at least 1 second');
  if (e.helper !== undefined) {
    if (typeof e.helper !== 'string' || !/^[\w.-]{1,15}$/.test(e.helper)) throw invalidArgument('helper must be a helper name (up to 15 characters)');
    spec.helper = e.helper;
  }
  if (e.zone !== undefined) spec.zone = uint(e.zone, 65535, 'zone');
  if (e.class !== undefined) spec.class = uint(e.class, 0xffffffff, 'class');
  if (e.flags !== undefined) {
    if (!Array.isArray(e.flags)) throw invalidArgument('flags must be a list of expectation flags');
    let bits = 0;
    for (const flag of e.flags) {
      const bit = EXPECT_FLAGS.indexOf(flag);
      if (bit < 0) throw invalidArgument(`flags: unknown expectation flag ${JSON.stringify(flag)} (known: ${EXPECT_FLAGS.join(', ')})`);
      bits |= 1 << bit;
    }
    spec.flags = bits;
  }
  if (e.fn !== undefined) {
    if (typeof e.fn !== 'string' || !/^[\w.-]{1,63}$/.test(e.fn)) throw invalidArgument('fn must be an expectation function name');
    spec.fn = e.fn;
  }
  if (e.nat !== undefined) {
    if (e.nat === null || typeof e.nat !== 'object' || (e.nat.dir !== 'original' && e.nat.dir !== 'reply')) {
      throw invalidArgument("nat must be { dir: 'original' | 'reply', address, port? }");
    }
    // The kernel keeps the NAT tuple's source address and port (exp->saved_addr, saved_proto)
    // but parses a whole tuple: the rest comes from the expected tuple.
    const t = tuple.native;
    const nat = tupleSpec({
      protocol: t.proto, src: e.nat.address, dst: e.nat.address,
      sport: t.sport === undefined ? undefined : (e.nat.port ?? 0), dport: t.sport === undefined ? undefined : 0,
      icmpType: t.icmpType, icmpCode: t.icmpCode, icmpId: t.icmpId,
    }, 'nat');
    if (nat.family !== tuple.family) throw invalidArgument('nat.address must be of the tuple\'s family');
    spec.natTuple = nat.native;
    spec.natDir = e.nat.dir === 'reply' ? 1 : 0;
  }
  return spec;
}

/** The dump request of expectations(filter): the family and master go to the kernel. */
export function expectationDumpSpec(filter: ExpectationFilter | undefined): NativeExpectationSpec {
  if (filter === undefined) return { family: 0 };
  if (filter === null || typeof filter !== 'object') throw invalidArgument('the expectation filter must be an object');
  for (const key of Object.keys(filter)) {
    if (!['family', 'protocol', 'helper', 'master'].includes(key)) throw invalidArgument(`unknown expectation filter key '${key}' (known: family, protocol, helper, master)`);
  }
  const spec: NativeExpectationSpec = { family: 0 };
  if (filter.family !== undefined) {
    if (filter.family !== 'ipv4' && filter.family !== 'ipv6') throw invalidArgument("family must be 'ipv4' or 'ipv6'");
    spec.family = filter.family === 'ipv6' ? AF_INET6 : 2;
  }
  if (filter.master !== undefined) {
    const master = tupleSpec(filter.master, 'master');
    if (spec.family !== 0 && spec.family !== master.family) throw invalidArgument('master does not match family');
    spec.family = master.family;
    spec.master = master.native;
    if (filter.master.zone !== undefined) spec.zone = uint(filter.master.zone, 65535, 'master.zone');
  }
  return spec;
}
