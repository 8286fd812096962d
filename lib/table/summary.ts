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
  /** Frozen when a mirror answered: one object serves its answers while the group lives. */
  key: Readonly<SummaryGroupKey>;
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

/** A summary handed over as columns (native/addon_mirror.cc Summarize): largest groups first. */
export interface NativeSummaryColumns {
  total: number;
  /** The kept grouping that answered (0: none is kept, the mirror scanned for this answer only). */
  grouping: number;
  groups: number;
  /**
   * `groups` numbers per column: the counts, each group's id within its grouping, that id's
   * generation (ids of groups gone are reused), then one column per key (-1: absent). A group
   * whose key the caller said it holds has no key values. Longer than needed when reused.
   */
  values: Float64Array;
  /** Per address key: the texts (a hole where absent); undefined for any other key. */
  addresses: Array<Array<string | undefined> | undefined>;
}

const AF_INET6 = 10;

/** Each key's value from its column's number (address columns hold text already). */
const VALUE_OF: Partial<Record<SummaryKey, (n: number) => string | number | boolean | undefined>> = {
  family: (n) => (n === AF_INET6 ? 'ipv6' : 'ipv4'),
  protocol: (n) => protocolName(n),
  tcpState: (n) => (n < 0 ? undefined : TCP_STATES[n]),
  sport: (n) => (n < 0 ? undefined : n),
  dport: (n) => (n < 0 ? undefined : n),
  mark: (n) => n,
  zone: (n) => (n < 0 ? undefined : n),
  assured: (n) => n !== 0,
  nat: (n) => n !== 0,
  seenReply: (n) => n !== 0,
};

/**
 * The key objects of one kept grouping's groups, by group id, kept from one answer to the next: a
 * group's key never changes while it lives, so asking again builds one object per group (its
 * count) instead of two, and native code leaves out the key columns of the groups whose keys are
 * held here (`generations`, by id). Holding whole groups instead (shared while their count stayed)
 * was faster when nothing changed and three times slower when every count did: each new group
 * then outlived the young generation.
 */
export class GroupKeys {
  grouping = 0;
  generations = new Uint32Array(0);
  /** The columns native code fills, kept for the next answer (native/addon_mirror.cc Summarize). */
  values: Float64Array | undefined;
  #keys: Array<SummaryGroupKey | undefined> = [];

  /** The key of group `id`, if the one held is that of this generation. */
  held(id: number, generation: number): SummaryGroupKey | undefined {
    return this.generations[id] === generation ? this.#keys[id] : undefined;
  }

  hold(id: number, generation: number, key: SummaryGroupKey): void {
    if (id >= this.generations.length) {
      const grown = new Uint32Array(Math.max(id + 1, this.generations.length * 2, 64));
      grown.set(this.generations);
      this.generations = grown;
    }
    this.generations[id] = generation;
    this.#keys[id] = key;
  }

  /** Another grouping answers (the one held was dropped and made again): no key held is valid. */
  restart(grouping: number): void {
    this.grouping = grouping;
    this.generations = new Uint32Array(0);
    this.#keys = [];
  }
}

/**
 * The Summary of a columnar result, with the same keys and values SummaryBuilder gives; keys are
 * frozen. With `keys` (the grouping's, from earlier answers) one key object serves every answer
 * while its group lives.
 */
export function summaryFromColumns(by: readonly SummaryKey[], result: NativeSummaryColumns, keys?: GroupKeys): Summary {
  const { groups: n, values, addresses } = result;
  const kept = keys !== undefined && result.grouping !== 0 ? keys : undefined;
  // A grouping too large to keep would hold its whole answer's columns.
  if (keys !== undefined) keys.values = kept === undefined ? undefined : values;
  if (kept !== undefined && kept.grouping !== result.grouping) kept.restart(result.grouping);
  const decoders = by.map((name) => VALUE_OF[name]);
  // Every key object is spread from one template, so all share one shape (fast properties):
  // adding the names one by one cost twice as much over tens of thousands of groups.
  const template: Record<string, unknown> = {};
  for (const name of by) template[name] = undefined;
  const groups: SummaryGroup[] = new Array<SummaryGroup>(n);
  for (let i = 0; i < n; i++) {
    const id = values[n + i] as number;
    const generation = values[2 * n + i] as number;
    let key = kept?.held(id, generation);
    if (key === undefined) {
      const fresh = { ...template };
      for (let k = 0; k < by.length; k++) {
        const decode = decoders[k];
        fresh[by[k] as SummaryKey] = decode === undefined ? addresses[k]?.[i] : decode(values[(3 + k) * n + i] as number);
      }
      key = Object.freeze(fresh) as SummaryGroupKey;
      kept?.hold(id, generation, key);
    }
    groups[i] = { key, count: values[i] as number };
  }
  return { total: result.total, groups };
}
