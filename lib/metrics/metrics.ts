/**
 * Conntrack metrics in the Prometheus text exposition format (version 0.0.4): samples collected
 * from open handles, and their rendering.
 *
 * Every series carries a `netns` label: the namespace path as given, or "" for the process's own
 * namespace (Prometheus treats an empty label as an absent one, so those series look exactly like
 * a plain host exporter's). A namespace that cannot be read is one `conntrack_up 0` and one
 * `conntrack_scrape_error{code}` line, never a failed scrape.
 */
import type { Conntrack } from '../table/conntrack.js';
import { invalidArgument } from '../base/errors.js';
import { readSysctl } from '../tuning/sysctl.js';
import type { CpuCounterName, CpuCounters } from '../base/types.js';
import type { Breakdown } from './breakdown.js';

/** The Content-Type of renderMetrics() output. */
export const METRICS_CONTENT_TYPE = 'text/plain; version=0.0.4; charset=utf-8';

/** A namespace that was read. */
export interface NamespaceReading {
  /** The `netns` label value. */
  netns: string;
  /** More labels identifying the namespace (all-namespaces mode: netns_name, container_id). */
  labels?: Record<string, string>;
  up: true;
  entries: number;
  /** nf_conntrack_max (global). */
  max: number;
  /** conntrack -S counters summed over CPUs. */
  counters: CpuCounters;
  /** Counters this library has no name for, by CTA_STATS_* attribute number. */
  unknownCounters: Record<number, number>;
  /** Seconds until full at the recent growth rate (+Inf: not growing); undefined: too little history. */
  timeToFullSeconds?: number;
  /** The latest breakdown, if one was computed. */
  breakdown?: Breakdown;
  /** The monotonic clock now (seconds), to give the breakdown's age; default performance.now(). */
  now?: number;
}

/** A namespace that could not be read. */
export interface NamespaceFailure {
  netns: string;
  labels?: Record<string, string>;
  up: false;
  /** A ConntrackError code (ERR_CONNTRACK_NETNS, ERR_CONNTRACK_PERMISSION, ...). */
  errorCode: string;
  errorMessage: string;
}

/** One namespace at one moment: its numbers, or why there are none. */
export type NamespaceSample = NamespaceReading | NamespaceFailure;

export interface MetricsSnapshot {
  namespaces: NamespaceSample[];
  /** nf_conntrack_buckets (global); undefined when it could not be read. */
  buckets: number | undefined;
  /** How long this scrape took until rendering, in seconds. */
  scrapeSeconds?: number;
  /** All-namespaces mode: what discovery found and how much of it is exported. */
  discovery?: {
    found: number;
    exported: number;
    limit: number;
    /** Processes whose namespace could not be read. */
    unreadable: number;
  };
}

export interface RenderOptions {
  /**
   * Also emit node_exporter's conntrack names (node_nf_conntrack_entries, ..._entries_limit,
   * ..._stat_*), as gauges like node_exporter's, so existing dashboards and alerts keep working.
   */
  nodeExporterNames?: boolean;
}

/** The label value of a handle's namespace. */
export function netnsLabel(ct: Conntrack): string {
  return ct.netns ?? '';
}

/** Reads one namespace through an open handle; rejects when the handle cannot answer. */
export async function sampleNamespace(ct: Conntrack, netns = netnsLabel(ct)): Promise<NamespaceReading> {
  // One after the other: requests on a handle are serialised anyway.
  const count = await ct.count();
  const stats = await ct.stats();
  return { netns, up: true, entries: count.entries, max: count.max, counters: stats.total, unknownCounters: stats.totalUnknown };
}

/** The sample of a namespace that could not be read. */
export function failedNamespace(netns: string, error: unknown): NamespaceFailure {
  const code = (error as { code?: unknown } | undefined)?.code;
  return {
    netns,
    up: false,
    errorCode: typeof code === 'string' ? code : 'ERR_UNEXPECTED',
    errorMessage: error instanceof Error ? error.message : String(error),
  };
}

/** nf_conntrack_buckets, or undefined when it cannot be read (no conntrack loaded here). */
export async function readBucketCount(): Promise<number | undefined> {
  try {
    const value = Number(await readSysctl('nf_conntrack_buckets'));
    return Number.isFinite(value) ? value : undefined;
  } catch {
    return undefined;
  }
}

/** Samples every handle (a failing one becomes `up: false`) and the global bucket count. */
export async function collectMetrics(handles: readonly Conntrack[]): Promise<MetricsSnapshot> {
  const [namespaces, buckets] = await Promise.all([
    Promise.all(handles.map((ct) => sampleNamespace(ct).catch((err: unknown) => failedNamespace(netnsLabel(ct), err)))),
    readBucketCount(),
  ]);
  return { namespaces, buckets };
}

/** conntrack -S counters in the order conntrack -S prints them, then those of older kernels. */
const STAT_HELP: ReadonlyArray<readonly [CpuCounterName, string]> = [
  ['found', 'Packets whose connection was already in the table.'],
  ['invalid', 'Packets conntrack could not track (malformed, out of window, no state for them).'],
  ['insert', 'Entries inserted into the table.'],
  ['insert_failed', 'Entries that could not be inserted: a clash with an existing entry that could not be resolved.'],
  ['drop', 'Packets dropped because no entry could be made for them (table full) or a helper refused them.'],
  ['early_drop', 'Entries evicted to make room for new ones while the table was full.'],
  ['error', 'ICMP errors that were malformed or matched no tracked connection.'],
  ['search_restart', 'Lookups restarted because the hash table was resized or an entry moved chains.'],
  ['clash_resolve', 'Insert clashes resolved by merging with the existing entry.'],
  ['chaintoolong', 'Inserts refused because their hash chain was too long (too few buckets, or hash flooding).'],
  ['searched', 'Hash table lookups (older kernels only).'],
  ['new', 'Entries created (older kernels only).'],
  ['ignore', 'Packets that were already tracked or untracked (older kernels only).'],
  ['delete', 'Entries deleted (older kernels only).'],
  ['delete_list', 'Entries removed from the unconfirmed list (older kernels only).'],
];

/** The counters node_exporter's conntrack collector exports, each as node_nf_conntrack_stat_NAME. */
const NODE_EXPORTER_STATS: readonly CpuCounterName[] = [
  'found', 'invalid', 'ignore', 'insert', 'insert_failed', 'drop', 'early_drop', 'search_restart',
];

type MetricType = 'gauge' | 'counter';
type Labels = ReadonlyArray<readonly [string, string]>;

/** One metric name: its help, type and samples. */
export interface MetricFamily {
  name: string;
  help: string;
  type: MetricType;
  samples: Array<{ labels: Labels; value: number }>;
}
type Family = MetricFamily;

/** Label values: backslash, double quote and line feed escaped, as the format requires. */
export function escapeLabelValue(value: string): string {
  return value.replace(/[\\"\n]/g, (c) => (c === '\n' ? '\\n' : `\\${c}`));
}

/** HELP text: backslash and line feed escaped (a double quote is fine there). */
function escapeHelp(text: string): string {
  return text.replace(/[\\\n]/g, (c) => (c === '\n' ? '\\n' : '\\\\'));
}

/** A float as Go's strconv.ParseFloat reads it: integers plainly, NaN and ±Inf by name. */
function formatValue(value: number): string {
  if (Number.isNaN(value)) return 'NaN';
  if (value === Infinity) return '+Inf';
  if (value === -Infinity) return '-Inf';
  return String(value);
}

function renderFamily(family: Family): string {
  const lines = [`# HELP ${family.name} ${escapeHelp(family.help)}`, `# TYPE ${family.name} ${family.type}`];
  for (const { labels, value } of family.samples) {
    const text = labels.map(([name, v]) => `${name}="${escapeLabelValue(v)}"`).join(',');
    lines.push(`${family.name}${text === '' ? '' : `{${text}}`} ${formatValue(value)}`);
  }
  return `${lines.join('\n')}\n`;
}

/** The labels of a namespace's series: netns first, then its identity labels. */
function namespaceLabels(ns: NamespaceSample): Labels {
  const extra = ns.labels === undefined ? [] : Object.entries(ns.labels);
  return [['netns', ns.netns], ...extra];
}

/**
 * The snapshot as metric families, in exposition order. Families without samples are left out,
 * unless `keepEmpty` (the list of every family this version can write, for registries that want
 * names up front).
 */
export function metricFamilies(snapshot: MetricsSnapshot, options: RenderOptions = {}, keepEmpty = false): MetricFamily[] {
  const seen = new Set<string>();
  for (const ns of snapshot.namespaces) {
    // Two namespaces with one label would be duplicate series, which Prometheus rejects.
    if (seen.has(ns.netns)) throw invalidArgument(`namespace ${JSON.stringify(ns.netns)} is listed twice`);
    seen.add(ns.netns);
  }
  const up = snapshot.namespaces.filter((ns): ns is NamespaceReading => ns.up);
  const families: Family[] = [];
  const family = (name: string, type: MetricType, help: string, samples: Family['samples']) => {
    if (samples.length > 0 || keepEmpty) families.push({ name, type, help, samples });
  };
  const perNamespace = (value: (ns: NamespaceReading) => number | undefined) =>
    up.flatMap((ns) => {
      const v = value(ns);
      return v === undefined ? [] : [{ labels: namespaceLabels(ns), value: v }];
    });
  const withLabel = (ns: NamespaceSample, name: string, value: string): Labels => [...namespaceLabels(ns), [name, value]];

  family('conntrack_up', 'gauge', '1 when the namespace\'s conntrack table was read in this scrape, 0 when it could not be.',
    snapshot.namespaces.map((ns) => ({ labels: namespaceLabels(ns), value: ns.up ? 1 : 0 })));
  family('conntrack_scrape_error', 'gauge', 'Why a namespace could not be read: its error code, always 1.',
    snapshot.namespaces.flatMap((ns) => (ns.up ? [] : [{ labels: withLabel(ns, 'code', ns.errorCode), value: 1 }])));
  family('conntrack_entries', 'gauge', 'Entries in the namespace\'s conntrack table.', perNamespace((ns) => ns.entries));
  family('conntrack_entries_limit', 'gauge', 'nf_conntrack_max: the global limit each namespace\'s own count is checked against; new connections are dropped when it is reached.',
    perNamespace((ns) => ns.max));
  // nf_conntrack_max 0 means no limit: there is no ratio then.
  family('conntrack_usage_ratio', 'gauge', 'conntrack_entries / conntrack_entries_limit.',
    perNamespace((ns) => (ns.max > 0 ? ns.entries / ns.max : undefined)));
  family('conntrack_time_to_full_seconds', 'gauge', 'Seconds until conntrack_entries reaches the limit at the growth rate of the last minutes (least squares); +Inf when not growing.',
    perNamespace((ns) => (ns.max > 0 ? ns.timeToFullSeconds : undefined)));
  // Global, but repeated per namespace so that ratios against the families above need no on()/ignoring().
  const buckets = snapshot.buckets;
  family('conntrack_buckets', 'gauge', 'nf_conntrack_buckets: size of the hash table all namespaces share.',
    buckets === undefined ? [] : perNamespace(() => buckets));
  for (const [name, help] of STAT_HELP) {
    family(`conntrack_stat_${name}_total`, 'counter', `${help} Summed over CPUs (conntrack -S ${name}).`, perNamespace((ns) => ns.counters[name]));
  }
  family('conntrack_stat_unknown_total', 'counter', 'Statistics counters this version has no name for, by CTA_STATS_* attribute number, summed over CPUs.',
    up.flatMap((ns) => Object.entries(ns.unknownCounters).map(([attribute, value]) => ({ labels: withLabel(ns, 'attribute', attribute), value }))));

  // Breakdowns: computed on their own schedule; their age says how old the numbers are.
  const withBreakdown = up.filter((ns) => ns.breakdown !== undefined);
  const grouped = (pick: (b: Breakdown) => Array<[string, number]>, label: string) =>
    withBreakdown.flatMap((ns) => pick(ns.breakdown as Breakdown).map(([value, count]) => ({ labels: withLabel(ns, label, value), value: count })));
  family('conntrack_entries_by_protocol', 'gauge', 'Entries by layer-4 protocol, from the latest breakdown (see conntrack_breakdown_age_seconds).',
    grouped((b) => b.protocols, 'protocol'));
  family('conntrack_entries_by_tcp_state', 'gauge', 'TCP entries by state, from the latest breakdown.', grouped((b) => b.tcpStates, 'state'));
  family('conntrack_entries_by_zone', 'gauge', 'Entries by conntrack zone (the largest zones, then "other"), from the latest breakdown.',
    grouped((b) => b.zones, 'zone'));
  family('conntrack_top_entries', 'gauge', 'Entries of the largest groups of the breakdown key (label key: dport, src/24, ...), then group="other" for the rest.',
    withBreakdown.flatMap((ns) => {
      const b = ns.breakdown as Breakdown;
      return b.key === undefined ? [] : b.top.map(([group, count]) => ({ labels: [...namespaceLabels(ns), ['key', b.key], ['group', group]] as Labels, value: count }));
    }));
  family('conntrack_breakdown_age_seconds', 'gauge', 'Seconds since the breakdown series of this namespace were computed.',
    withBreakdown.map((ns) => ({ labels: namespaceLabels(ns), value: Math.max(0, (ns.now ?? performance.now() / 1000) - (ns.breakdown as Breakdown).at) })));
  family('conntrack_breakdown_duration_seconds', 'gauge', 'How long the latest breakdown of this namespace took (one dump, counted natively).',
    withBreakdown.map((ns) => ({ labels: namespaceLabels(ns), value: (ns.breakdown as Breakdown).seconds })));

  const discovery = snapshot.discovery;
  family('conntrack_namespaces_found', 'gauge', 'Network namespaces discovery found on the host (distinct nsfs inodes).',
    discovery === undefined ? [] : [{ labels: [], value: discovery.found }]);
  family('conntrack_namespaces_exported', 'gauge', 'Network namespaces exported (at most the --max-namespaces limit).',
    discovery === undefined ? [] : [{ labels: [], value: discovery.exported }]);
  family('conntrack_namespaces_over_limit', 'gauge', 'Network namespaces found but not exported because of the --max-namespaces limit.',
    discovery === undefined ? [] : [{ labels: [], value: discovery.found - discovery.exported }]);
  family('conntrack_namespaces_limit', 'gauge', 'The --max-namespaces limit.', discovery === undefined ? [] : [{ labels: [], value: discovery.limit }]);
  family('conntrack_discovery_unreadable_processes', 'gauge', 'Processes whose network namespace could not be read (permission): namespaces only they use are missing.',
    discovery === undefined ? [] : [{ labels: [], value: discovery.unreadable }]);
  family('conntrack_scrape_duration_seconds', 'gauge', 'How long this scrape took: discovery and every namespace\'s count and statistics.',
    snapshot.scrapeSeconds === undefined ? [] : [{ labels: [], value: snapshot.scrapeSeconds }]);

  if (options.nodeExporterNames) {
    family('node_nf_conntrack_entries', 'gauge', 'Same as conntrack_entries, under the node_exporter name.', perNamespace((ns) => ns.entries));
    family('node_nf_conntrack_entries_limit', 'gauge', 'Same as conntrack_entries_limit, under the node_exporter name.', perNamespace((ns) => ns.max));
    for (const name of NODE_EXPORTER_STATS) {
      family(`node_nf_conntrack_stat_${name}`, 'gauge', `Same as conntrack_stat_${name}_total, under the node_exporter name and type.`,
        perNamespace((ns) => ns.counters[name]));
    }
  }
  return families;
}

/**
 * The snapshot as exposition text. Each metric name is one block (HELP, TYPE, then a sample per
 * namespace); families without samples are left out.
 */
export function renderMetrics(snapshot: MetricsSnapshot, options: RenderOptions = {}): string {
  return renderFamilies(metricFamilies(snapshot, options));
}

/** Families as exposition text. */
export function renderFamilies(families: readonly MetricFamily[]): string {
  return families.map(renderFamily).join('');
}
