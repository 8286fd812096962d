/**
 * Breakdowns of a table with bounded cardinality: entries by protocol, by TCP state and by zone,
 * and the largest groups of one chosen key (a port, or an address prefix such as a /24) with an
 * `other` group holding the rest, so a namespace never has more than top + 1 such series. One
 * summarize() per namespace counts everything in native code (one dump; JS sees one record per
 * group); the collector runs it on its own schedule, never while a scrape waits. With a live
 * mirror (breakdownSource 'mirror') the same counts come from memory.
 */
import { invalidArgument } from '../base/errors.js';
import type { Conntrack } from '../table/conntrack.js';
import type { Mirror } from '../table/mirror.js';
import type { Summary, SummaryGroupKey, SummaryKey } from '../table/summary.js';

export const DEFAULT_BREAKDOWN_TOP = 10;
export const DEFAULT_BREAKDOWN_INTERVAL_SECONDS = 30;
/** The label value of the group that holds everything outside the top N. */
export const OTHER_GROUP = 'other';

export interface BreakdownKey {
  /** As given, e.g. "dport" or "src/24": the `key` label value. */
  text: string;
  field: 'dport' | 'sport' | 'src' | 'dst';
  /** Prefix lengths for addresses (IPv4, IPv6); undefined keeps whole addresses. */
  prefix4?: number;
  prefix6?: number;
}

/** `dport`, `sport`, `src`, `dst`, `src/24` (IPv6 then /64), `src/24/48` (IPv4 /24, IPv6 /48). */
export function parseBreakdownKey(text: string): BreakdownKey {
  const match = /^(dport|sport|src|dst)(?:\/(\d{1,2})(?:\/(\d{1,3}))?)?$/.exec(typeof text === 'string' ? text : '');
  if (match === null) {
    throw invalidArgument(`breakdown key must be dport, sport, src, dst, or an address prefix such as src/24 or src/24/64; got ${JSON.stringify(text)}`);
  }
  const field = match[1] as BreakdownKey['field'];
  if (match[2] === undefined) return { text, field };
  if (field === 'dport' || field === 'sport') throw invalidArgument(`a prefix length applies to addresses, not to ${field}`);
  const prefix4 = Number(match[2]);
  const prefix6 = match[3] === undefined ? 64 : Number(match[3]);
  if (prefix4 > 32 || prefix6 > 128) throw invalidArgument(`prefix lengths go up to 32 (IPv4) and 128 (IPv6), got ${text}`);
  return { text, field, prefix4, prefix6 };
}

export interface Breakdown {
  /** When it was computed, on the monotonic clock (performance.now() / 1000). */
  at: number;
  /** How long the dump took. */
  seconds: number;
  total: number;
  /** [label value, entries], largest first. */
  protocols: Array<[string, number]>;
  tcpStates: Array<[string, number]>;
  /** The largest zones, then `other` when there are more than top. */
  zones: Array<[string, number]>;
  /** undefined when no key was chosen. */
  key: string | undefined;
  /** The largest groups of the key, then `other` (always present with a key). */
  top: Array<[string, number]>;
}

function maskIPv4(address: string, bits: number): string {
  const value = address.split('.').reduce((acc, part) => acc * 256 + Number(part), 0);
  const masked = bits === 0 ? 0 : value - (value % 2 ** (32 - bits));
  return `${[24, 16, 8, 0].map((shift) => Math.floor(masked / 2 ** shift) % 256).join('.')}/${bits}`;
}

function maskIPv6(address: string, bits: number): string {
  const [head = '', tail] = address.split('::');
  const parse = (part: string) => (part === '' ? [] : part.split(':'));
  let groups = [...parse(head)];
  const rest = tail === undefined ? [] : parse(tail);
  // An IPv4 tail (::ffff:1.2.3.4) is two groups.
  const expand = (list: string[]) => list.flatMap((g) => {
    if (!g.includes('.')) return [Number.parseInt(g, 16)];
    const [a = 0, b = 0, c = 0, d = 0] = g.split('.').map(Number);
    return [a * 256 + b, c * 256 + d];
  });
  const left = expand(groups);
  const right = expand(rest);
  const words = [...left, ...Array<number>(8 - left.length - right.length).fill(0), ...right];
  groups = words.map((word, i) => {
    const keep = Math.max(0, Math.min(16, bits - i * 16));
    return ((word >> (16 - keep)) << (16 - keep) & 0xffff).toString(16);
  });
  // URL canonicalises an IPv6 host (the longest run of zero groups becomes ::).
  return `${new URL(`http://[${groups.join(':')}]`).hostname.slice(1, -1)}/${bits}`;
}

/** No port (ICMP) or no address: the group's label. */
const NONE = 'none';

/** The group of one summary group for `key`: a port stays a number until it is a label. */
function groupOf(key: BreakdownKey, group: SummaryGroupKey): string | number {
  const value = group[key.field];
  if (value === undefined) return NONE;
  if (typeof value === 'number' || key.prefix4 === undefined) return value;
  return value.includes(':') ? maskIPv6(value, key.prefix6 ?? 64) : maskIPv4(value, key.prefix4);
}

/** Largest first; ties by label (numbers as numbers), so the same table gives the same top N. */
function compareRanked(a: readonly [string | number, number], b: readonly [string | number, number]): number {
  if (a[1] !== b[1]) return b[1] - a[1];
  if (typeof a[0] === 'number' && typeof b[0] === 'number') return a[0] - b[0];
  const x = Number(a[0]);
  const y = Number(b[0]);
  if (a[0] !== '' && b[0] !== '' && Number.isFinite(x) && Number.isFinite(y)) return x - y;
  return a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0;
}

function ranked(counts: Map<string, number>): Array<[string, number]> {
  return [...counts].sort(compareRanked);
}

/**
 * Keeps the `top` largest of the groups offered, in one pass (a table with an entry per port
 * has tens of thousands of groups): only the kept ones are ever sorted.
 */
class TopSelector {
  readonly #top: number;
  readonly #kept: Array<[string | number, number]> = [];
  #total = 0;
  #groups = 0;

  constructor(top: number) {
    this.#top = top;
  }

  offer(group: string | number, n: number): void {
    this.#total += n;
    this.#groups++;
    const kept = this.#kept;
    const entry: [string | number, number] = [group, n];
    if (kept.length === this.#top && compareRanked(entry, kept[this.#top - 1] as [string | number, number]) >= 0) return;
    let i = kept.length;
    while (i > 0 && compareRanked(entry, kept[i - 1] as [string | number, number]) < 0) i--;
    kept.splice(i, 0, entry);
    if (kept.length > this.#top) kept.pop();
  }

  /** The kept groups as labels, then `other` with the rest (always, or only when something was left out). */
  result(alwaysOther: boolean): Array<[string, number]> {
    const labelled = this.#kept.map(([group, n]): [string, number] => [String(group), n]);
    if (this.#groups <= this.#top && !alwaysOther) return labelled;
    return [...labelled, [OTHER_GROUP, this.#total - this.#kept.reduce((sum, [, n]) => sum + n, 0)]];
  }
}

function add<K>(counts: Map<K, number>, label: K, n: number): void {
  counts.set(label, (counts.get(label) ?? 0) + n);
}

/** The summary keys a breakdown needs. */
export function breakdownSummaryKeys(key: BreakdownKey | undefined): SummaryKey[] {
  const by: SummaryKey[] = ['protocol', 'tcpState', 'zone'];
  if (key !== undefined) by.push(key.field);
  return by;
}

/** A summary by breakdownSummaryKeys(key) counted into the breakdown's groups (at and seconds left 0). */
export function breakdownOf(summary: Summary, key: BreakdownKey | undefined, top: number): Breakdown {
  const protocols = new Map<string, number>();
  const tcpStates = new Map<string, number>();
  const zones = new Map<number, number>();
  // Ports are counted in an array indexed by port: no map of tens of thousands of keys.
  const ports = key?.field === 'dport' || key?.field === 'sport' ? new Float64Array(65536) : undefined;
  let noPort = 0;
  const groups = new Map<string | number, number>();
  for (const { key: g, count } of summary.groups) {
    add(protocols, g.protocol ?? 'unknown', count);
    if (g.tcpState !== undefined) add(tcpStates, g.tcpState, count);
    add(zones, g.zone ?? 0, count);
    if (key === undefined) continue;
    if (ports !== undefined) {
      const port = g[key.field as 'dport' | 'sport'];
      if (port === undefined) noPort += count;
      else ports[port] = (ports[port] as number) + count;
    } else {
      add(groups, groupOf(key, g), count);
    }
  }
  const zoneTop = new TopSelector(top);
  for (const [zone, n] of zones) zoneTop.offer(zone, n);
  const keyTop = new TopSelector(top);
  if (ports !== undefined) {
    for (let port = 0; port < ports.length; port++) if ((ports[port] as number) > 0) keyTop.offer(port, ports[port] as number);
    if (noPort > 0) keyTop.offer(NONE, noPort);
  } else {
    for (const [group, n] of groups) keyTop.offer(group, n);
  }
  return {
    at: 0,
    seconds: 0,
    total: summary.total,
    protocols: ranked(protocols),
    tcpStates: ranked(tcpStates),
    zones: zoneTop.result(false),
    key: key?.text,
    top: key === undefined ? [] : keyTop.result(true),
  };
}

/** One dump of `ct`, counted into a breakdown. */
export async function computeBreakdown(ct: Conntrack, key: BreakdownKey | undefined, top: number, signal?: AbortSignal): Promise<Breakdown> {
  const started = performance.now();
  const summary = await ct.summarize(undefined, { by: breakdownSummaryKeys(key), signal });
  const done = performance.now();
  return { ...breakdownOf(summary, key, top), at: done / 1000, seconds: (done - started) / 1000 };
}

/** The same from a live mirror: its kept counts, no dump (`seconds` is the time to read them). */
export function breakdownFromMirror(mirror: Mirror, key: BreakdownKey | undefined, top: number): Breakdown {
  const started = performance.now();
  const summary = mirror.summarize({ by: breakdownSummaryKeys(key) });
  const done = performance.now();
  return { ...breakdownOf(summary, key, top), at: done / 1000, seconds: (done - started) / 1000 };
}
