/**
 * Group-by counts over a dump, read straight from the native records: no entry objects are
 * built, so summarising a million entries costs little more than the dump itself.
 */
import { invalidArgument } from './errors.js';
import type { NativeBatch } from './native.js';
import { LAYOUT, protocolName, TCP_STATES } from './records.js';
import type { EntriesOptions, Family, ProtocolName, TcpState } from './types.js';

/** What entries can be grouped by (original direction unless named reply*). */
export type SummaryKey =
  | 'family' | 'protocol' | 'tcpState' | 'src' | 'dst' | 'sport' | 'dport' | 'replySrc' | 'replyDst'
  | 'mark' | 'zone' | 'assured';

export const SUMMARY_KEYS: readonly SummaryKey[] = [
  'family', 'protocol', 'tcpState', 'src', 'dst', 'sport', 'dport', 'replySrc', 'replyDst', 'mark', 'zone', 'assured',
];

export interface SummaryGroupKey {
  family?: Family;
  protocol?: ProtocolName;
  /** undefined for entries that are not TCP. */
  tcpState?: TcpState;
  src?: string;
  dst?: string;
  sport?: number;
  dport?: number;
  replySrc?: string;
  replyDst?: string;
  mark?: number;
  zone?: number;
  assured?: boolean;
}

export interface SummaryGroup {
  key: SummaryGroupKey;
  count: number;
}

export interface Summary {
  /** Entries that matched the filter. */
  total: number;
  /** Most entries first (ties in the order the dump met them); at most `top` of them when given. */
  groups: SummaryGroup[];
}

export interface SummarizeOptions extends EntriesOptions {
  by: readonly SummaryKey[];
  /** Keep only the largest N groups. */
  top?: number;
}

const HAS_ZONE = 1 << 5;
const HAS_REPLY = 1 << 8;
const HAS_TCP = 1 << 14;
const T_PORTS = 1 << 1;
const T_SRC = 1 << 4;
const T_DST = 1 << 5;
const ASSURED = 1 << 2;
const AF_INET6 = 10;

type Reader = (r: Uint32Array, o: number, strings: string) => string | number | boolean | undefined;

function address(tupleSlot: number, end: 'src' | 'dst', whenPresent = 0): Reader {
  const bit = end === 'src' ? T_SRC : T_DST;
  const refSlot = tupleSlot + (end === 'src' ? 4 : 5);
  return (r, o, strings) => {
    if (whenPresent !== 0 && ((r[o] as number) & whenPresent) === 0) return undefined;
    if ((((r[o + tupleSlot] as number) >>> 8) & bit) === 0) return undefined;
    const ref = r[o + refSlot] as number;
    const offset = ref & 0xffffff;
    return strings.substring(offset, offset + (ref >>> 24));
  };
}

function port(end: 'sport' | 'dport'): Reader {
  return (r, o) => {
    if ((((r[o + LAYOUT.orig] as number) >>> 8) & T_PORTS) === 0) return undefined;
    const ports = r[o + LAYOUT.orig + 1] as number;
    return end === 'sport' ? ports & 0xffff : ports >>> 16;
  };
}

/** Each key read from a record at offset `o` (layout: lib/records.ts LAYOUT). */
const READERS: Record<SummaryKey, Reader> = {
  family: (r, o) => (r[o + LAYOUT.family] === AF_INET6 ? 'ipv6' : 'ipv4'),
  protocol: (r, o) => protocolName((r[o + LAYOUT.orig] as number) & 0xff),
  tcpState: (r, o) => {
    if (((r[o] as number) & HAS_TCP) === 0) return undefined;
    const word = r[o + LAYOUT.tcp] as number;
    return (word >>> 24) & 1 ? TCP_STATES[word & 0xff] : undefined;
  },
  src: address(LAYOUT.orig, 'src'),
  dst: address(LAYOUT.orig, 'dst'),
  sport: port('sport'),
  dport: port('dport'),
  replySrc: address(LAYOUT.reply, 'src', HAS_REPLY),
  replyDst: address(LAYOUT.reply, 'dst', HAS_REPLY),
  mark: (r, o) => r[o + LAYOUT.mark] as number,
  zone: (r, o) => (((r[o] as number) & HAS_ZONE) !== 0 ? (r[o + LAYOUT.zone] as number) : undefined),
  assured: (r, o) => ((r[o + LAYOUT.status] as number) & ASSURED) !== 0,
};

/**
 * The same keys as small integers, with their widths in bits: when every key of a summary has one
 * and they fit a double's 52 bits, the map key is one packed number instead of a new string per
 * entry (hashing fresh strings would cost more than building the entries).
 */
const NUMERIC: Partial<Record<SummaryKey, { bits: number; read: (r: Uint32Array, o: number) => number }>> = {
  family: { bits: 1, read: (r, o) => (r[o + LAYOUT.family] === AF_INET6 ? 1 : 0) },
  protocol: { bits: 8, read: (r, o) => (r[o + LAYOUT.orig] as number) & 0xff },
  tcpState: {
    bits: 5,
    read: (r, o) => {
      if (((r[o] as number) & HAS_TCP) === 0) return 31;
      const word = r[o + LAYOUT.tcp] as number;
      return (word >>> 24) & 1 ? word & 0xff & 31 : 31;
    },
  },
  sport: { bits: 17, read: (r, o) => ((((r[o + LAYOUT.orig] as number) >>> 8) & T_PORTS) === 0 ? 65536 : (r[o + LAYOUT.orig + 1] as number) & 0xffff) },
  dport: { bits: 17, read: (r, o) => ((((r[o + LAYOUT.orig] as number) >>> 8) & T_PORTS) === 0 ? 65536 : (r[o + LAYOUT.orig + 1] as number) >>> 16) },
  mark: { bits: 32, read: (r, o) => r[o + LAYOUT.mark] as number },
  zone: { bits: 17, read: (r, o) => (((r[o] as number) & HAS_ZONE) !== 0 ? (r[o + LAYOUT.zone] as number) : 65536) },
  assured: { bits: 1, read: (r, o) => (((r[o + LAYOUT.status] as number) & ASSURED) !== 0 ? 1 : 0) },
};

export function checkSummaryOptions(options: SummarizeOptions): void {
  if (options === null || typeof options !== 'object' || !Array.isArray(options.by) || options.by.length === 0) {
    throw invalidArgument(`summarize() needs { by: [...] } with one or more of ${SUMMARY_KEYS.join(', ')}`);
  }
  for (const key of options.by) {
    if (!SUMMARY_KEYS.includes(key)) throw invalidArgument(`by: unknown key ${JSON.stringify(key)} (known: ${SUMMARY_KEYS.join(', ')})`);
  }
  if (new Set(options.by).size !== options.by.length) throw invalidArgument('by: a key is given twice');
  if (options.top !== undefined && (!Number.isInteger(options.top) || options.top < 1)) {
    throw invalidArgument('top must be a positive integer');
  }
}

/** Counts batches into groups; finish() sorts them. */
export class SummaryBuilder {
  readonly #keys: readonly SummaryKey[];
  readonly #readers: readonly Reader[];
  /** Packed-number readers and their multipliers, when every key has one and they fit. */
  readonly #numeric: ReadonlyArray<{ read: (r: Uint32Array, o: number) => number; scale: number }> | undefined;
  readonly #groups = new Map<string | number | boolean | undefined, SummaryGroup>();
  #total = 0;

  constructor(by: readonly SummaryKey[]) {
    this.#keys = by;
    this.#readers = by.map((key) => READERS[key]);
    const numeric = by.map((key) => NUMERIC[key]);
    const bits = numeric.reduce((sum, n) => sum + (n?.bits ?? 64), 0);
    this.#numeric = bits <= 52
      ? numeric.map((n) => ({ read: (n as NonNullable<typeof n>).read, scale: 2 ** (n as NonNullable<typeof n>).bits }))
      : undefined;
  }

  add(batch: NativeBatch): void {
    const records = new Uint32Array(batch.records);
    const strings = batch.strings;
    if (this.#numeric !== undefined) {
      this.#addPacked(records, batch.count, strings, this.#numeric);
      return;
    }
    const readers = this.#readers;
    const single = readers.length === 1 ? readers[0] : undefined;
    for (let i = 0; i < batch.count; i++) {
      const o = i * LAYOUT.slots;
      // One key: its value is the map key; several: joined with a separator no value contains.
      let mapKey: string | number | boolean | undefined;
      if (single !== undefined) {
        mapKey = single(records, o, strings);
      } else {
        let joined = '';
        for (const read of readers) joined += `${read(records, o, strings) ?? ''}\u0000`;
        mapKey = joined;
      }
      const group = this.#groups.get(mapKey);
      if (group !== undefined) group.count++;
      else this.#groups.set(mapKey, { key: this.#keyOf(records, o, strings), count: 1 });
    }
    this.#total += batch.count;
  }

  #addPacked(records: Uint32Array, count: number, strings: string,
    numeric: ReadonlyArray<{ read: (r: Uint32Array, o: number) => number; scale: number }>): void {
    const groups = this.#groups;
    for (let i = 0; i < count; i++) {
      const o = i * LAYOUT.slots;
      let packed = 0;
      for (const n of numeric) packed = packed * n.scale + n.read(records, o);
      const group = groups.get(packed);
      if (group !== undefined) group.count++;
      else groups.set(packed, { key: this.#keyOf(records, o, strings), count: 1 });
    }
    this.#total += count;
  }

  #keyOf(records: Uint32Array, o: number, strings: string): SummaryGroupKey {
    const key: Record<string, unknown> = {};
    this.#keys.forEach((name, i) => {
      key[name] = (this.#readers[i] as Reader)(records, o, strings);
    });
    return key as SummaryGroupKey;
  }

  finish(top?: number): Summary {
    // Stable: ties stay in the order the dump met them (comparing keys cost more than the dump).
    const groups = [...this.#groups.values()].sort((a, b) => b.count - a.count);
    return { total: this.#total, groups: top === undefined ? groups : groups.slice(0, top) };
  }
}
