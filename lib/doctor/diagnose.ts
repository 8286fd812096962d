/**
 * `diagnose()`: is this namespace's conntrack table about to drop connections, or already doing
 * it, and what to do about it. Collecting facts (kernel requests, sysctls, the kernel log, the
 * rules) is kept apart from judging them (`evaluate`, a pure function), so every rule of judgement
 * is unit-tested on facts and the collection is tested on a real full table.
 */
import { readFile, stat } from 'node:fs/promises';
import { release, totalmem } from 'node:os';
import { setTimeout as sleep } from 'node:timers/promises';

import { Conntrack } from '../table/conntrack.js';
import { findConntrackDependents, type ConntrackDependents } from './dependents.js';
import { invalidArgument, type ConntrackError } from '../base/errors.js';
import { readKernelLog, tableFullEvents, type TableFullEvent } from './kmsg.js';
import { netnsPath } from '../binding/netns.js';
import { detectConntrackLinkage, type ConntrackLinkage } from '../tuning/persist.js';
import { memoryCost, readSlabObjectSize, recommend, type Recommendation } from '../tuning/sizing.js';
import { INITIAL_NETNS_INODE, readSysctl } from '../tuning/sysctl.js';
import type { Count, CpuCounters, NetnsSpec } from '../base/types.js';

export type Severity = 'ok' | 'info' | 'warning' | 'critical';

export const SEVERITY_ORDER: readonly Severity[] = ['ok', 'info', 'warning', 'critical'];

/** Usage thresholds of node_exporter's conntrack alerts. */
export const USAGE_WARNING = 0.75;
export const USAGE_CRITICAL = 0.9;
/** Full-table chain length (hash nodes per bucket) above which lookups are slow. */
export const MAX_CHAIN_LENGTH = 8;
/** "table full" lines newer than this mean drops are happening now, not in the past. */
export const RECENT_LOG_MS = 15 * 60 * 1000;
/** Above this established timeout, dead connections hold entries for more than a day. */
export const LONG_ESTABLISHED_TIMEOUT = 86_400;
export const DEFAULT_TCP_TIMEOUT_ESTABLISHED = 432_000;

export interface Fix {
  summary: string;
  /** Shell commands, in order. */
  commands: string[];
}

export interface Finding {
  /** Stable identifier, for scripts: 'table-usage', 'drops', 'kernel-log', ... */
  id: string;
  severity: Severity;
  title: string;
  /** The facts behind the finding, with their numbers. */
  evidence: string[];
  fix?: Fix;
}

/** Counters that say the table refused or lost something. */
export const DROP_COUNTERS = ['drop', 'early_drop', 'insert_failed', 'chaintoolong'] as const;
export type DropCounter = (typeof DROP_COUNTERS)[number];

export interface EntryBreakdown {
  entries: number;
  byProtocol: Record<string, number>;
  /** TCP entries by state. */
  byTcpState: Record<string, number>;
  /** Entries with SRC_NAT or DST_NAT status. */
  nat: number;
  assured: number;
  /** No reply seen yet (half-open, often attack traffic or unreachable peers). */
  unreplied: number;
}

export type KernelLogFacts =
  | { readable: true; events: TableFullEvent[] }
  | { readable: false; reason: string };

/** Everything diagnose() looked at; evaluate() judges it. */
export interface DiagnosisFacts {
  netns: string | null;
  /** Inode of the namespace, as the kernel names it in "table full in netns N". */
  netnsInode: number;
  /**
   * When the namespace's nsfs inode was made (its ctime): the namespace is at least this old. Kernel
   * log lines before it may belong to an earlier namespace with the same inode number. Undefined for
   * the initial namespace, whose number is never reused.
   */
  netnsSince: Date | undefined;
  initialNetns: boolean;
  /** ctnetlink, or the world-readable procfs files when the process lacks CAP_NET_ADMIN. */
  source: 'ctnetlink' | 'procfs';
  time: Date;
  intervalMs: number;
  kernelRelease: string;
  memoryBytes: number;
  linkage: ConntrackLinkage;
  before: { count: Count; stats: CpuCounters };
  after: { count: Count; stats: CpuCounters };
  /** nf_conntrack_buckets (global). */
  buckets: number | undefined;
  /** Bytes per entry from /proc/slabinfo. */
  objectSize: number | undefined;
  tcpTimeoutEstablished: number | undefined;
  tcpTimeoutTimeWait: number | undefined;
  kernelLog: KernelLogFacts;
  breakdown: EntryBreakdown | undefined;
  /** Why no breakdown was made. */
  breakdownSkipped: string | undefined;
  dependents: ConntrackDependents;
  /** The expected peak of connections, when the caller knows it. */
  expectedConnections: number | undefined;
}

export interface Diagnosis {
  /** The worst severity among the findings. */
  severity: Severity;
  findings: Finding[];
  /** What the table should be sized to, when the sizing is part of the advice. */
  recommendation: Recommendation | undefined;
  facts: DiagnosisFacts;
}

export interface DiagnoseOptions {
  netns?: NetnsSpec;
  /** Time between the two samples of the counters (default 1000 ms; 0 takes one sample). */
  intervalMs?: number;
  /** Peak connections to size for; default: what the table holds now (at least its limit when full). */
  expectedConnections?: number;
  /** Walk the entries for a breakdown by protocol, state and NAT (default true up to scanLimit entries). */
  scan?: boolean;
  /** Largest table that is walked (default 2,000,000 entries, about 2.5 s). */
  scanLimit?: number;
  signal?: AbortSignal;
}

const DEFAULT_INTERVAL_MS = 1000;
const DEFAULT_SCAN_LIMIT = 2_000_000;

export function worstSeverity(severities: Iterable<Severity>): Severity {
  let worst = 0;
  for (const s of severities) worst = Math.max(worst, SEVERITY_ORDER.indexOf(s));
  return SEVERITY_ORDER[worst] ?? 'ok';
}

function counter(stats: CpuCounters, name: DropCounter): number {
  return stats[name] ?? 0;
}

function formatBytes(bytes: number): string {
  if (bytes < 2 ** 20) return `${Math.ceil(bytes / 1024)} KiB`;
  return bytes < 2 ** 30 ? `${(bytes / 2 ** 20).toFixed(1)} MiB` : `${(bytes / 2 ** 30).toFixed(2)} GiB`;
}

function percent(ratio: number): string {
  return `${(ratio * 100).toFixed(1)} %`;
}

function seconds(value: number): string {
  if (value % 86_400 === 0) return `${value} s (${value / 86_400} d)`;
  if (value % 3600 === 0) return `${value} s (${value / 3600} h)`;
  return `${value} s`;
}

function plural(n: number, word: string): string {
  if (n === 1) return `${n} ${word}`;
  return `${n} ${word.endsWith('y') ? `${word.slice(0, -1)}ies` : `${word}s`}`;
}

/**
 * A recommendation never shrinks the hash table: the bucket array is global, shared by every
 * namespace, and may have been sized for more than this namespace's load.
 */
function keepingBuckets(recommendation: Recommendation, currentBuckets: number | undefined): Recommendation {
  if (currentBuckets === undefined || currentBuckets < recommendation.buckets) return recommendation;
  return {
    ...recommendation,
    buckets: currentBuckets,
    memory: memoryCost({ max: recommendation.max, buckets: currentBuckets, objectSize: recommendation.memory.perEntryBytes }),
    averageChainLength: (2 * recommendation.max) / currentBuckets,
    reasons: [
      ...recommendation.reasons,
      `The bucket count stays at ${currentBuckets}: the running table already has at least the ${recommendation.buckets} computed here, and the bucket array is shared by every namespace.`,
    ],
    sysctl: { ...recommendation.sysctl, 'net.netfilter.nf_conntrack_buckets': currentBuckets },
    commands: recommendation.commands.filter((command) => !command.includes('/hashsize')),
  };
}

function sizingFix(recommendation: Recommendation, current: { max: number; buckets: number | undefined }, why: string): Fix {
  if (recommendation.max <= current.max) {
    // Only when the caller's expected load is smaller than what the table already allows.
    return {
      summary: `${why} nf_conntrack_max ${current.max} already covers the expected connections (${recommendation.max} with headroom): ` +
        'the entries are held by something else. Look at the breakdown by state, and shorten the timeouts of the states that dominate.',
      commands: [],
    };
  }
  const resize = current.buckets === undefined || recommendation.buckets > current.buckets;
  return {
    summary: `${why} Raise nf_conntrack_max to ${recommendation.max}${resize ? ` and the buckets to ${recommendation.buckets}` : ''} ` +
      `(${formatBytes(recommendation.memory.totalBytes)} of kernel memory when full), ` +
      'in the initial namespace (the limit is global), and keep it across reboots:',
    commands: [
      ...recommendation.commands,
      `conntrack persist --max ${recommendation.max}${resize ? ` --buckets ${recommendation.buckets}` : ''} --apply --root /`,
    ],
  };
}

/** Judges the facts. Pure: the same facts always give the same findings. */
export function evaluate(facts: DiagnosisFacts): Diagnosis {
  const findings: Finding[] = [];
  const { after, before } = facts;
  const { entries, max } = after.count;
  const usage = max > 0 ? entries / max : 0;
  const intervalText = `${(facts.intervalMs / 1000).toFixed(facts.intervalMs % 1000 === 0 ? 0 : 1)} s`;
  const delta = (name: DropCounter): number => Math.max(0, counter(after.stats, name) - counter(before.stats, name));
  const sampled = facts.intervalMs > 0;
  const where = facts.netns === null ? 'this network namespace' : facts.netns;

  // 1. Is conntrack doing anything here at all?
  const activity = Object.values(after.stats).reduce((sum, v) => sum + (v ?? 0), 0);
  if (entries === 0 && activity === 0) {
    findings.push({
      id: 'tracking',
      severity: 'info',
      title: `conntrack tracks nothing in ${where}`,
      evidence: ['0 entries and every statistics counter is 0: no rule (NAT, ct state, ...) has made the kernel track a packet here.'],
    });
  } else {
    findings.push({
      id: 'tracking',
      severity: 'ok',
      title: `conntrack is active in ${where}`,
      evidence: [`${entries} entries now.`],
    });
  }

  if (facts.source === 'procfs') {
    findings.push({
      id: 'privileges',
      severity: 'info',
      title: 'without CAP_NET_ADMIN: counts and counters read from procfs, entries not walked',
      evidence: ['ctnetlink refused the request (EPERM); /proc/sys/net/netfilter/nf_conntrack_{count,max} and /proc/net/stat/nf_conntrack are world-readable. Run as root for the full report.'],
    });
  }

  // The sizing that every table-size fix points to.
  const demand = facts.expectedConnections ?? Math.max(entries, usage >= USAGE_CRITICAL ? max : entries, 1);
  let recommendation: Recommendation | undefined;
  const wantRecommendation = (): Recommendation => {
    recommendation ??= keepingBuckets(recommend({
      connections: demand,
      ...(facts.objectSize === undefined ? {} : { objectSize: facts.objectSize }),
      kernelRelease: facts.kernelRelease,
      memoryBytes: facts.memoryBytes,
    }), facts.buckets);
    return recommendation;
  };

  // 2. Count against the limit.
  {
    const evidence = [
      `${entries} of ${max} entries (${percent(usage)}); warning at ${percent(USAGE_WARNING)}, critical at ${percent(USAGE_CRITICAL)}.`,
      `nf_conntrack_max is global, but each namespace's own count is checked against it.`,
    ];
    if (entries !== before.count.entries && sampled) evidence.push(`${before.count.entries} entries ${intervalText} earlier.`);
    if (usage >= 1) {
      findings.push({
        id: 'table-usage',
        severity: 'critical',
        title: `conntrack table full: ${entries} of ${max} entries; new connections are dropped`,
        evidence,
        fix: sizingFix(wantRecommendation(), { max, buckets: facts.buckets }, 'The kernel drops the first packet of every new flow while the table is full.'),
      });
    } else if (usage >= USAGE_WARNING) {
      const severity = usage >= USAGE_CRITICAL ? 'critical' : 'warning';
      findings.push({
        id: 'table-usage',
        severity,
        title: `conntrack table ${percent(usage)} full (${entries} of ${max})`,
        evidence,
        fix: sizingFix(wantRecommendation(), { max, buckets: facts.buckets }, 'When the table fills, new connections are dropped.'),
      });
    } else {
      findings.push({ id: 'table-usage', severity: 'ok', title: `conntrack table ${percent(usage)} full (${entries} of ${max})`, evidence });
    }
  }

  // 3. Counters that say packets were refused.
  {
    const drops = delta('drop');
    const totalDrops = counter(after.stats, 'drop');
    if (sampled && drops > 0) {
      findings.push({
        id: 'drops',
        severity: 'critical',
        title: `${plural(drops, 'packet')} dropped in ${intervalText} for want of a conntrack entry`,
        evidence: [
          `drop rose from ${counter(before.stats, 'drop')} to ${totalDrops} (conntrack -S, summed over CPUs): each is a new flow's packet the kernel could not track, usually because the table is full.`,
        ],
        fix: sizingFix(wantRecommendation(), { max, buckets: facts.buckets }, 'Dropped packets are connections that fail or retry.'),
      });
    } else if (totalDrops > 0) {
      findings.push({
        id: 'drops',
        severity: 'warning',
        title: `${plural(totalDrops, 'packet')} dropped since tracking started${sampled ? `, none in the last ${intervalText}` : ''}`,
        evidence: [`drop = ${totalDrops} (conntrack -S, summed over CPUs): the table was full or an insert clash could not be resolved at some point.`],
        fix: sizingFix(wantRecommendation(), { max, buckets: facts.buckets }, 'The table has overflowed before and may again at the next peak.'),
      });
    } else {
      findings.push({ id: 'drops', severity: 'ok', title: 'no packets dropped by conntrack', evidence: ['drop = 0 (conntrack -S, summed over CPUs).'] });
    }

    const early = delta('early_drop');
    if (sampled && early > 0) {
      findings.push({
        id: 'early-drops',
        severity: 'warning',
        title: `${plural(early, 'entry')} evicted in ${intervalText} to make room (early_drop)`,
        evidence: [`early_drop rose by ${early}: the table was full and the kernel threw out entries that had not seen a reply yet. Established (assured) entries are never evicted, so this does not save a full table of live connections.`],
        fix: sizingFix(wantRecommendation(), { max, buckets: facts.buckets }, 'Evictions mean the table is at its limit.'),
      });
    }
    const insertFailed = delta('insert_failed');
    if (sampled && insertFailed > 0) {
      findings.push({
        id: 'insert-failures',
        severity: 'warning',
        title: `${plural(insertFailed, 'insert')} failed in ${intervalText}`,
        evidence: [`insert_failed rose by ${insertFailed}: two packets of the same new flow raced on different CPUs (often UDP such as DNS) and the clash could not be resolved, or a hash chain was too long.`],
      });
    }
    const longChains = delta('chaintoolong');
    if (sampled && longChains > 0) {
      const buckets = Math.max(max, facts.buckets ?? 0);
      findings.push({
        id: 'long-chains',
        severity: 'warning',
        title: `${plural(longChains, 'insert')} refused in ${intervalText} because a hash chain was too long`,
        evidence: [`chaintoolong rose by ${longChains}${facts.buckets === undefined ? '' : ` with ${facts.buckets} buckets for nf_conntrack_max ${max}`}.`],
        fix: {
          summary: 'Give the hash table at least one bucket per entry (the default since Linux 5.15), in the initial namespace:',
          commands: [`echo ${buckets} > /sys/module/nf_conntrack/parameters/hashsize`, `conntrack persist --buckets ${buckets} --apply --root /`],
        },
      });
    }
  }

  // 4. The kernel log: the only place a full table leaves words.
  if (!facts.kernelLog.readable) {
    findings.push({ id: 'kernel-log', severity: 'info', title: 'kernel log not checked', evidence: [facts.kernelLog.reason] });
  } else {
    findings.push(kernelLogFinding(facts, facts.kernelLog.events, () => sizingFix(wantRecommendation(), { max, buckets: facts.buckets }, 'The table has overflowed.')));
  }

  // 5. Hash chains: every entry is hashed twice (both directions) into the global bucket array.
  if (facts.buckets !== undefined && facts.buckets > 0) {
    const fullChain = (2 * max) / facts.buckets;
    const evidence = [
      `${facts.buckets} buckets for nf_conntrack_max ${max}: ${fullChain.toFixed(2)} hash nodes per bucket when full (each entry is hashed in both directions); now ${((2 * entries) / facts.buckets).toFixed(2)} from this namespace.`,
      'The bucket array is shared by every namespace.',
    ];
    if (fullChain > MAX_CHAIN_LENGTH) {
      findings.push({
        id: 'buckets',
        severity: 'warning',
        title: `too few buckets: chains average ${fullChain.toFixed(1)} nodes when the table is full`,
        evidence,
        fix: {
          summary: `Give the table one bucket per entry (the default since Linux 5.15), in the initial namespace:`,
          commands: [`echo ${max} > /sys/module/nf_conntrack/parameters/hashsize`, `conntrack persist --buckets ${max} --apply --root /`],
        },
      });
    } else {
      findings.push({ id: 'buckets', severity: 'ok', title: `bucket count fits the limit (${fullChain.toFixed(2)} nodes per chain when full)`, evidence });
    }
  }

  // 6. Timeouts: how long dead connections hold their entries.
  if (facts.tcpTimeoutEstablished !== undefined) {
    const timeout = facts.tcpTimeoutEstablished;
    const evidence = [
      `nf_conntrack_tcp_timeout_established = ${seconds(timeout)}${timeout === DEFAULT_TCP_TIMEOUT_ESTABLISHED ? ' (the default)' : ''}: an idle connection whose peer vanished without FIN or RST keeps its entry that long.`,
    ];
    const established = facts.breakdown?.byTcpState.ESTABLISHED;
    if (established !== undefined) evidence.push(`${established} entries are ESTABLISHED.`);
    const pressed = usage >= USAGE_WARNING || (sampled && delta('drop') > 0);
    if (timeout > LONG_ESTABLISHED_TIMEOUT && pressed) {
      findings.push({
        id: 'established-timeout',
        severity: 'warning',
        title: `established TCP entries live ${seconds(timeout)} after the last packet while the table is under pressure`,
        evidence,
        fix: {
          summary: `Shorten it to a day (per namespace; keep it above the longest idle time of live connections, such as MQTT keep-alive, or NAT breaks them):`,
          commands: [
            `sysctl -w net.netfilter.nf_conntrack_tcp_timeout_established=${LONG_ESTABLISHED_TIMEOUT}`,
            `conntrack persist --sysctl nf_conntrack_tcp_timeout_established=${LONG_ESTABLISHED_TIMEOUT} --apply --root /`,
          ],
        },
      });
    } else {
      findings.push({ id: 'established-timeout', severity: 'info', title: `established TCP timeout ${seconds(timeout)}`, evidence });
    }
  }
  const timeWait = facts.breakdown?.byTcpState.TIME_WAIT ?? 0;
  if (facts.breakdown !== undefined && timeWait > 0 && timeWait >= facts.breakdown.entries / 4 && usage >= USAGE_WARNING) {
    findings.push({
      id: 'time-wait',
      severity: 'warning',
      title: `${percent(timeWait / facts.breakdown.entries)} of the entries are TIME_WAIT`,
      evidence: [`${timeWait} TIME_WAIT entries; each stays nf_conntrack_tcp_timeout_time_wait = ${facts.tcpTimeoutTimeWait ?? 120} s after its connection closed.`],
      fix: {
        summary: 'Short-lived connections fill the table after they close; shorten the TIME_WAIT timeout (per namespace):',
        commands: ['sysctl -w net.netfilter.nf_conntrack_tcp_timeout_time_wait=30'],
      },
    });
  }

  // 7. Does anything here need conntrack? That decides whether not tracking is an option.
  findings.push(dependentsFinding(facts));

  return { severity: worstSeverity(findings.map((f) => f.severity)), findings, recommendation, facts };
}

/**
 * Kernels since 5.x name the namespace by inode number, but a number is reused once its namespace
 * is gone. Lines are certain to be this namespace's only from the time its nsfs inode existed
 * (`netnsSince`); older lines with the same number are reported, not judged.
 */
function kernelLogFinding(facts: DiagnosisFacts, events: readonly TableFullEvent[], fix: () => Fix): Finding {
  const sameNumber = events.filter((e) => e.netnsInode === undefined || e.netnsInode === facts.netnsInode);
  const since = facts.netnsSince?.getTime();
  const ours = since === undefined ? sameNumber : sameNumber.filter((e) => e.time.getTime() >= since);
  const earlier = sameNumber.length - ours.length;
  const others = events.filter((e) => e.netnsInode !== undefined && e.netnsInode !== facts.netnsInode);
  const evidence: string[] = [];
  if (earlier > 0) {
    evidence.push(`${plural(earlier, 'line')} with this namespace's inode number predate ${facts.netnsSince?.toISOString()}, when this namespace was first seen: inode numbers are reused, so they may come from an earlier namespace.`);
  }
  if (others.length > 0) {
    const inodes = [...new Set(others.map((e) => e.netnsInode))].join(', ');
    evidence.push(`${plural(others.length, 'line')} name other namespaces (netns ${inodes}).`);
  }
  const last = ours.at(-1);
  if (last === undefined) {
    return { id: 'kernel-log', severity: earlier > 0 ? 'info' : 'ok', title: 'no "table full" lines for this namespace in the kernel log', evidence };
  }
  const first = ours[0] as TableFullEvent;
  const ago = facts.time.getTime() - last.time.getTime();
  evidence.unshift(
    `${plural(ours.length, 'line')} "${last.message}" in /dev/kmsg, from ${first.time.toISOString()} to ${last.time.toISOString()}.`,
    'The kernel rate-limits this message: each line stands for one or more dropped packets.',
  );
  if (last.netnsInode === undefined) evidence.push('This kernel does not name the namespace in the message; the lines may come from another one.');
  return {
    id: 'kernel-log',
    severity: ago <= RECENT_LOG_MS ? 'critical' : 'warning',
    title: ago <= RECENT_LOG_MS
      ? `the kernel dropped packets on a full table ${Math.round(ago / 1000)} s ago`
      : `the kernel dropped packets on a full table at ${last.time.toISOString()}`,
    evidence,
    fix: fix(),
  };
}

function dependentsFinding(facts: DiagnosisFacts): Finding {
  const { dependents, breakdown } = facts;
  const evidence: string[] = [];
  const nat = dependents.rules?.filter((r) => r.kind === 'nat') ?? [];
  const stateful = dependents.rules?.filter((r) => r.kind === 'stateful') ?? [];
  const notrack = dependents.rules?.filter((r) => r.kind === 'notrack') ?? [];
  const show = (rules: typeof nat): string => rules.slice(0, 3).map((r) => `"${r.rule}"`).join(', ') + (rules.length > 3 ? `, ... (${rules.length})` : '');
  if (nat.length > 0) evidence.push(`NAT rules: ${show(nat)}.`);
  if (stateful.length > 0) evidence.push(`Rules that match on conntrack: ${show(stateful)}.`);
  if (notrack.length > 0) evidence.push(`Rules that already exempt traffic: ${show(notrack)}.`);
  if (breakdown !== undefined && breakdown.nat > 0) evidence.push(`${breakdown.nat} of ${breakdown.entries} entries are NATed.`);
  if (dependents.containerInterfaces.length > 0) evidence.push(`Container networking: ${dependents.containerInterfaces.join(', ')} (Docker and CNI plugins NAT through conntrack).`);
  for (const reason of dependents.rulesUnknown) evidence.push(`Rules not listed: ${reason}.`);
  const linkage = facts.linkage === 'built-in' ? 'nf_conntrack is built into this kernel, so it cannot be unloaded.'
    : facts.linkage === 'module' ? 'nf_conntrack is a module; it unloads only when no rule or NAT uses it.' : undefined;
  if (linkage !== undefined) evidence.push(linkage);

  const required = nat.length > 0 || (breakdown?.nat ?? 0) > 0 || dependents.containerInterfaces.length > 0;
  if (required) {
    return {
      id: 'dependents',
      severity: 'info',
      title: 'conntrack is required here (NAT): size the table, do not switch tracking off',
      evidence,
    };
  }
  if (stateful.length > 0) {
    return {
      id: 'dependents',
      severity: 'info',
      title: 'stateful firewall rules use conntrack; traffic exempted with notrack would no longer match them',
      evidence,
    };
  }
  if (dependents.rules === undefined) {
    return { id: 'dependents', severity: 'info', title: 'could not tell whether anything here needs conntrack', evidence };
  }
  // With nothing tracked, exempting traffic is not advice worth giving.
  if (facts.after.count.entries === 0) return { id: 'dependents', severity: 'info', title: 'nothing found here that needs conntrack', evidence };
  return notrackFinding(evidence);
}

/** Exempting a busy service from tracking, for tables that track what nothing needs. */
function notrackFinding(evidence: string[]): Finding {
  return {
    id: 'dependents',
    severity: 'info',
    title: 'nothing found here that needs conntrack: high-volume traffic could be exempted instead of tracked',
    evidence,
    fix: {
      summary: 'Exempt a service from tracking (example for an MQTT broker on port 1883) rather than growing the table:',
      commands: [
        "nft add table inet notrack_exempt",
        "nft add chain inet notrack_exempt pre '{ type filter hook prerouting priority raw; }'",
        "nft add chain inet notrack_exempt out '{ type filter hook output priority raw; }'",
        'nft add rule inet notrack_exempt pre tcp dport 1883 notrack',
        'nft add rule inet notrack_exempt out tcp sport 1883 notrack',
      ],
    },
  };
}

function requireInteger(name: string, value: unknown, min: number, max: number): number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > max) {
    throw invalidArgument(`${name} must be an integer from ${min} to ${max}, got ${String(value)}`);
  }
  return value;
}

async function numberSysctl(name: string, netns: NetnsSpec | undefined): Promise<number | undefined> {
  try {
    const value = await readSysctl(name, netns === undefined ? {} : { netns });
    return typeof value === 'number' ? value : undefined;
  } catch {
    return undefined;
  }
}

/** Counted in native code (summarize): no entry objects, whatever the table's size. */
async function breakdownOf(ct: Conntrack, signal: AbortSignal | undefined): Promise<EntryBreakdown> {
  const summary = await ct.summarize(undefined, { by: ['protocol', 'tcpState', 'nat', 'assured', 'seenReply'], ...(signal === undefined ? {} : { signal }) });
  const result: EntryBreakdown = { entries: summary.total, byProtocol: {}, byTcpState: {}, nat: 0, assured: 0, unreplied: 0 };
  for (const { key, count } of summary.groups) {
    const protocol = key.protocol ?? 'unknown';
    result.byProtocol[protocol] = (result.byProtocol[protocol] ?? 0) + count;
    if (key.tcpState !== undefined) result.byTcpState[key.tcpState] = (result.byTcpState[key.tcpState] ?? 0) + count;
    if (key.nat === true) result.nat += count;
    if (key.assured === true) result.assured += count;
    if (key.seenReply === false) result.unreplied += count;
  }
  return result;
}

async function namespaceIdentity(path: string | undefined): Promise<{ inode: number; since: Date | undefined }> {
  const info = await stat(path ?? '/proc/thread-self/ns/net');
  return { inode: info.ino, since: info.ino === INITIAL_NETNS_INODE ? undefined : info.ctime };
}

/** /proc/net/stat/nf_conntrack column names that differ from conntrack -S's. */
const PROC_STAT_NAMES: Record<string, string> = { clashres: 'clash_resolve', chainlength: 'chaintoolong', icmp_error: 'error' };

/**
 * Sums /proc/net/stat/nf_conntrack (one row per CPU, hexadecimal, columns named by the header).
 * World-readable, unlike ctnetlink: what a process without CAP_NET_ADMIN can see.
 */
export function parseProcConntrackStats(text: string): CpuCounters {
  const [header, ...rows] = text.trim().split('\n');
  const names = (header ?? '').trim().split(/\s+/).map((name) => PROC_STAT_NAMES[name] ?? name);
  const total: Record<string, number> = {};
  for (const row of rows) {
    const values = row.trim().split(/\s+/);
    names.forEach((name, i) => {
      // 'entries' repeats the global count on every row; the expect_* columns are another table.
      if (name === 'entries' || name.startsWith('expect_') || values[i] === undefined) return;
      total[name] = (total[name] ?? 0) + Number.parseInt(values[i] as string, 16);
    });
  }
  return total as CpuCounters;
}

/** Where the counts and counters come from: ctnetlink, or procfs for a process without CAP_NET_ADMIN. */
interface CounterSource {
  readonly kind: 'ctnetlink' | 'procfs';
  sample(): Promise<{ count: Count; stats: CpuCounters }>;
  /** Undefined when the entries cannot be read. */
  readonly conntrack: Conntrack | undefined;
  close(): Promise<void>;
}

async function openCounterSource(path: string | undefined): Promise<CounterSource> {
  const ct = await Conntrack.open(path === undefined ? {} : { netns: path });
  const viaNetlink = async () => ({ count: await ct.count(), stats: (await ct.stats()).total });
  try {
    const first = await viaNetlink();
    let pending: typeof first | undefined = first;
    return {
      kind: 'ctnetlink',
      conntrack: ct,
      // The probe's sample is the first one: no extra request.
      sample: async () => {
        const sample = pending ?? (await viaNetlink());
        pending = undefined;
        return sample;
      },
      close: () => ct.close(),
    };
  } catch (err) {
    await ct.close();
    // Our own namespace can still be read through world-readable procfs files, as node_exporter does.
    if ((err as ConntrackError).code !== 'ERR_CONNTRACK_PERMISSION' || path !== undefined) throw err;
    const readNumber = async (name: string) => Number.parseInt(await readFile(`/proc/sys/net/netfilter/${name}`, 'utf8'), 10);
    return {
      kind: 'procfs',
      conntrack: undefined,
      sample: async () => ({
        count: { entries: await readNumber('nf_conntrack_count'), max: await readNumber('nf_conntrack_max') },
        stats: parseProcConntrackStats(await readFile('/proc/net/stat/nf_conntrack', 'utf8')),
      }),
      close: async () => {},
    };
  }
}

/** Looks at a namespace's conntrack table and says what is wrong, with evidence and fixes. */
export async function diagnose(options: DiagnoseOptions = {}): Promise<Diagnosis> {
  if (options === null || typeof options !== 'object') throw invalidArgument('diagnose() takes an options object');
  const intervalMs = requireInteger('intervalMs', options.intervalMs ?? DEFAULT_INTERVAL_MS, 0, 600_000);
  const scanLimit = requireInteger('scanLimit', options.scanLimit ?? DEFAULT_SCAN_LIMIT, 0, 2 ** 31 - 1);
  const expectedConnections = options.expectedConnections === undefined
    ? undefined
    : requireInteger('expectedConnections', options.expectedConnections, 1, 2 ** 31 - 1);
  const path = options.netns === undefined ? undefined : netnsPath(options.netns);
  const { signal } = options;
  signal?.throwIfAborted();

  const source = await openCounterSource(path);
  try {
    const { inode: netnsInode, since: netnsSince } = await namespaceIdentity(path);
    const before = await source.sample();
    const started = Date.now();
    // Everything that does not need the interval runs during it.
    const sideFacts = Promise.all([
      numberSysctl('nf_conntrack_buckets', undefined),
      readSlabObjectSize(),
      numberSysctl('nf_conntrack_tcp_timeout_established', path),
      numberSysctl('nf_conntrack_tcp_timeout_time_wait', path),
      findConntrackDependents(path),
      detectConntrackLinkage(),
    ]);
    const remaining = intervalMs - (Date.now() - started);
    if (remaining > 0) await sleep(remaining, undefined, signal === undefined ? {} : { signal });
    const after = intervalMs > 0 ? await source.sample() : before;
    const [buckets, objectSize, tcpTimeoutEstablished, tcpTimeoutTimeWait, dependents, linkage] = await sideFacts;

    let breakdown: EntryBreakdown | undefined;
    let breakdownSkipped: string | undefined;
    if (options.scan === false) breakdownSkipped = 'scan switched off';
    else if (source.conntrack === undefined) breakdownSkipped = 'reading entries needs CAP_NET_ADMIN';
    else if (after.count.entries > scanLimit) breakdownSkipped = `${after.count.entries} entries, above the scan limit of ${scanLimit}`;
    else breakdown = await breakdownOf(source.conntrack, signal);

    // After the counters, so a "table full" line logged during the interval is seen.
    const log = await readKernelLog({ match: /table full/, ...(signal === undefined ? {} : { signal }) });
    const kernelLog: KernelLogFacts = log.readable ? { readable: true, events: tableFullEvents(log.records) } : { readable: false, reason: log.reason };

    return evaluate({
      netns: path ?? null,
      netnsInode,
      netnsSince,
      initialNetns: netnsInode === INITIAL_NETNS_INODE,
      source: source.kind,
      time: new Date(),
      intervalMs,
      kernelRelease: release(),
      memoryBytes: totalmem(),
      linkage,
      before,
      after,
      buckets,
      objectSize,
      tcpTimeoutEstablished,
      tcpTimeoutTimeWait,
      kernelLog,
      breakdown,
      breakdownSkipped,
      dependents,
      expectedConnections,
    });
  } finally {
    await source.close();
  }
}
