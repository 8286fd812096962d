/**
 * Group-by counts over a dump. Native code counts the entries as it decodes them (a hash of the
 * grouped fields' bytes) and hands over one record per group, with only the grouped fields set,
 * and its count: JS sees as many records as there are groups, not entries.
 */
import { invalidArgument } from './errors.js';
import type { NativeBatch } from './native.js';
import { LAYOUT, protocolName, TCP_STATES } from './records.js';
import type { EntriesOptions, Family, ProtocolName, TcpState } from './types.js';

/** What entries can be grouped by (original direction unless named reply*). */
export type SummaryKey =
  | 'family' | 'protocol' | 'tcpState' | 'src' | 'dst' | 'sport' | 'dport' | 'replySrc' | 'replyDst'
  | 'mark' | 'zone' | 'assured' | 'nat' | 'seenReply';

export const SUMMARY_KEYS: readonly SummaryKey[] = [
  'family', 'protocol', 'tcpState', 'src', 'dst', 'sport', 'dport', 'replySrc', 'replyDst', 'mark', 'zone', 'assured',
  'nat', 'seenReply',
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
  /** SRC_NAT or DST_NAT status. */
  nat?: boolean;
  seenReply?: boolean;
}

export interface SummaryGroup {
  key: SummaryGroupKey;
  count: number;
}

export interface Summary {
  /** Entries that matched the filter. */
  total: number;
  /** Most entries first (ties in no particular order); at most `top` of them when given. */
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
const SEEN_REPLY = 1 << 1;
const ASSURED = 1 << 2;
const NAT = (1 << 4) | (1 << 5);
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
  nat: (r, o) => ((r[o + LAYOUT.status] as number) & NAT) !== 0,
  seenReply: (r, o) => ((r[o + LAYOUT.status] as number) & SEEN_REPLY) !== 0,
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

/** The key numbers native code groups by (native/ct_codec.h SummaryKey: SUMMARY_KEYS order). */
export function summaryKeyNumbers(by: readonly SummaryKey[]): number[] {
  return by.map((key) => SUMMARY_KEYS.indexOf(key));
}

/** Collects the group records of a summary's batches; finish() sorts them. */
export class SummaryBuilder {
  readonly #keys: readonly SummaryKey[];
  readonly #readers: readonly Reader[];
  readonly #groups: SummaryGroup[] = [];
  #total = 0;

  constructor(by: readonly SummaryKey[]) {
    this.#keys = by;
    this.#readers = by.map((key) => READERS[key]);
  }

  add(batch: NativeBatch): void {
    if (batch.count === 0) return;
    const counts = batch.counts;
    if (counts === undefined || counts.length !== batch.count) throw new Error('summary batch without a count per group');
    const records = new Uint32Array(batch.records);
    for (let i = 0; i < batch.count; i++) {
      const key: Record<string, unknown> = {};
      const o = i * LAYOUT.slots;
      this.#keys.forEach((name, k) => {
        key[name] = (this.#readers[k] as Reader)(records, o, batch.strings);
      });
      const count = counts[i] as number;
      this.#groups.push({ key: key as SummaryGroupKey, count });
      this.#total += count;
    }
  }

  finish(top?: number): Summary {
    // Ties stay in the order native code handed the groups over (its hash order): comparing keys
    // to order them cost more than the dump when there are many groups.
    const groups = this.#groups.sort((a, b) => b.count - a.count);
    return { total: this.#total, groups: top === undefined ? groups : groups.slice(0, top) };
  }
}
