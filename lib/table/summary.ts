/**
 * Group-by counts over a dump. Native code counts the entries as it decodes them (a hash of the
 * grouped fields' bytes) and hands over one record per group, with only the grouped fields set,
 * and its count: JS sees as many records as there are groups, not entries.
 */
import { invalidArgument } from '../base/errors.js';
import { layoutConstant } from '../binding/layout.js';
import type { NativeBatch } from '../binding/native.js';
import { decodeBatch, protocolName, TCP_STATES } from './records.js';
import type { ConntrackEntry, EntriesOptions, Family, ProtocolName, TcpState } from '../base/types.js';

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

// The status bits a group record carries (native/record_layout.h status::*).
const SEEN_REPLY = layoutConstant('status', 'seenReply');
const ASSURED = layoutConstant('status', 'assured');
const NAT = layoutConstant('status', 'nat'); // IPS_SRC_NAT | IPS_DST_NAT

/** The number native code knows each key by (native/record_layout.h SummaryKey). */
const KEY_NUMBERS = new Map(SUMMARY_KEYS.map((key) => [key, layoutConstant('summaryKey', key)]));

/** Each key's value in a group record, decoded like any entry (absent addresses are undefined). */
const KEY_OF: Record<SummaryKey, (e: ConntrackEntry) => string | number | boolean | undefined> = {
  family: (e) => e.family,
  protocol: (e) => e.original.protocol,
  tcpState: (e) => e.tcp?.state,
  src: (e) => e.original.src || undefined,
  dst: (e) => e.original.dst || undefined,
  sport: (e) => e.original.sport,
  dport: (e) => e.original.dport,
  replySrc: (e) => e.reply.src || undefined,
  replyDst: (e) => e.reply.dst || undefined,
  mark: (e) => e.mark,
  zone: (e) => e.zone,
  assured: (e) => (e.status & ASSURED) !== 0,
  nat: (e) => (e.status & NAT) !== 0,
  seenReply: (e) => (e.status & SEEN_REPLY) !== 0,
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

/** The key numbers native code groups by. */
export function summaryKeyNumbers(by: readonly SummaryKey[]): number[] {
  return by.map((key) => KEY_NUMBERS.get(key) as number);
}

/** Collects the group records of a summary's batches; finish() sorts them. */
export class SummaryBuilder {
  readonly #keys: readonly SummaryKey[];
  readonly #groups: SummaryGroup[] = [];
  #total = 0;

  constructor(by: readonly SummaryKey[]) {
    this.#keys = by;
  }

  add(batch: NativeBatch): void {
    if (batch.count === 0) return;
    const counts = batch.counts;
    if (counts === undefined || counts.length !== batch.count) throw new Error('summary batch without a count per group');
    // Group records carry only the grouped fields; decoding them costs per group, not per entry.
    decodeBatch(batch).forEach((entry, i) => {
      const key: Record<string, unknown> = {};
      for (const name of this.#keys) key[name] = KEY_OF[name](entry);
      const count = counts[i] as number;
      this.#groups.push({ key: key as SummaryGroupKey, count });
      this.#total += count;
    });
  }

  finish(top?: number): Summary {
    // Ties stay in the order native code handed the groups over (its hash order): comparing keys
    // to order them cost more than the dump when there are many groups.
    const groups = this.#groups.sort((a, b) => b.count - a.count);
    return { total: this.#total, groups: top === undefined ? groups : groups.slice(0, top) };
  }
}

/** A summary handed over as columns (native/summary.h SummaryColumns): largest groups first. */
export interface NativeSummaryColumns {
  total: number;
  counts: Float64Array;
  /** One per key: numbers (-1: absent), or address texts (undefined: absent). */
  columns: Array<Float64Array | Array<string | undefined>>;
}

const AF_INET6 = 10;

/** Each key's value from its column's number (addresses come as text). */
const VALUE_OF: Record<SummaryKey, (n: number) => string | number | boolean | undefined> = {
  family: (n) => (n === AF_INET6 ? 'ipv6' : 'ipv4'),
  protocol: (n) => protocolName(n),
  tcpState: (n) => (n < 0 ? undefined : TCP_STATES[n]),
  src: () => undefined,
  dst: () => undefined,
  sport: (n) => (n < 0 ? undefined : n),
  dport: (n) => (n < 0 ? undefined : n),
  replySrc: () => undefined,
  replyDst: () => undefined,
  mark: (n) => n,
  zone: (n) => (n < 0 ? undefined : n),
  assured: (n) => n !== 0,
  nat: (n) => n !== 0,
  seenReply: (n) => n !== 0,
};

/** The Summary of a columnar result, with the same keys and values SummaryBuilder gives. */
export function summaryFromColumns(by: readonly SummaryKey[], result: NativeSummaryColumns): Summary {
  const { counts, columns } = result;
  const decoders = by.map((name) => VALUE_OF[name]);
  // Every key object is spread from one template, so all share one shape (fast properties):
  // adding the names one by one cost twice as much over tens of thousands of groups.
  const template: Record<string, unknown> = {};
  for (const name of by) template[name] = undefined;
  const groups: SummaryGroup[] = new Array<SummaryGroup>(counts.length);
  for (let i = 0; i < counts.length; i++) {
    const key = { ...template };
    for (let k = 0; k < by.length; k++) {
      const column = columns[k] as Float64Array | Array<string | undefined>;
      key[by[k] as SummaryKey] = column instanceof Float64Array ? (decoders[k] as (n: number) => unknown)(column[i] as number) : column[i];
    }
    groups[i] = { key: key as SummaryGroupKey, count: counts[i] as number };
  }
  return { total: result.total, groups };
}
