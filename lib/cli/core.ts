/**
 * CLI commands over a handle: the status summary (no arguments), `count`, `stats`, `list`.
 */
import { parseArgs } from 'node:util';

import { Conntrack } from '../table/conntrack.js';
import { readSysctl } from '../tuning/sysctl.js';
import type { ConntrackEntry, ConntrackExpectation, EntryFilter, ExpectationFilter, Family, StatusFlag, TcpState, Tuple } from '../base/types.js';
import { json, netnsOption, run, UsageError, write, type Command, type CommandIo } from './common.js';

const NETNS_OPTIONS = {
  netns: { type: 'string' },
  json: { type: 'boolean', default: false },
} as const;

/** JSON text of values that may hold bigints (timestamps). */
export function toJson(value: unknown, indent?: number): string {
  return JSON.stringify(value, (_key, v: unknown) => (typeof v === 'bigint' ? v.toString() : v), indent);
}

function percent(part: number, whole: number): string {
  return whole > 0 ? `${((part / whole) * 100).toFixed(1)}%` : 'n/a';
}

async function withHandle<T>(netns: string | undefined, body: (ct: Conntrack) => Promise<T>): Promise<T> {
  const ct = await Conntrack.open(netnsOption(netns));
  try {
    return await body(ct);
  } finally {
    await ct.close();
  }
}

const SUMMARY_USAGE = 'usage: conntrack [--netns PATH|PID] [--json]';

/** No command: how full the table is, and the counters that say whether it overflowed. */
export const summaryCommand: Command = (argv, io) =>
  run(io, SUMMARY_USAGE, async () => {
    const { values } = parseArgs({ args: argv, options: NETNS_OPTIONS, strict: true });
    const summary = await withHandle(values.netns, async (ct) => {
      const [count, stats] = await Promise.all([ct.count(), ct.stats()]);
      // The bucket count is global; read it where the process runs (any namespace shows it).
      const buckets = Number(await readSysctl('nf_conntrack_buckets').catch(() => Number.NaN));
      return {
        netns: ct.netns ?? null,
        entries: count.entries,
        max: count.max,
        usage: count.max > 0 ? count.entries / count.max : null,
        buckets: Number.isFinite(buckets) ? buckets : null,
        averageChain: Number.isFinite(buckets) && buckets > 0 ? count.entries / buckets : null,
        stats: stats.total,
      };
    });
    if (values.json) {
      json(io.stdout, summary);
      return 0;
    }
    const t = summary.stats;
    write(io.stdout, [
      `conntrack ${summary.netns ? `in ${summary.netns}` : '(this network namespace)'}`,
      `  entries      ${summary.entries} of ${summary.max} (${percent(summary.entries, summary.max)})`,
      `  buckets      ${summary.buckets ?? 'unknown'}${summary.averageChain === null ? '' : ` (${summary.averageChain.toFixed(2)} entries per bucket)`}`,
      `  drops        drop=${t.drop ?? 0} early_drop=${t.early_drop ?? 0} insert_failed=${t.insert_failed ?? 0} chaintoolong=${t.chaintoolong ?? 0}`,
      `  other        found=${t.found ?? 0} invalid=${t.invalid ?? 0} insert=${t.insert ?? 0} error=${t.error ?? 0} search_restart=${t.search_restart ?? 0} clash_resolve=${t.clash_resolve ?? 0}`,
    ].join('\n'));
    return 0;
  });

export const countCommand: Command = (argv, io) =>
  run(io, 'usage: conntrack count [--netns PATH|PID] [--json]', async () => {
    const { values } = parseArgs({ args: argv, options: NETNS_OPTIONS, strict: true });
    const count = await withHandle(values.netns, (ct) => ct.count());
    write(io.stdout, values.json ? toJson(count) : String(count.entries));
    return 0;
  });

export const statsCommand: Command = (argv, io) =>
  run(io, 'usage: conntrack stats [--expect] [--netns PATH|PID] [--json]', async () => {
    const { values } = parseArgs({ args: argv, options: { ...NETNS_OPTIONS, expect: { type: 'boolean', default: false } }, strict: true });
    const stats = await withHandle(values.netns, (ct) => (values.expect ? ct.expectationStats() : ct.stats()));
    if (values.json) {
      json(io.stdout, stats);
      return 0;
    }
    const line = (label: string, counters: Record<string, number | undefined>, unknown: Record<number, number>) =>
      [label, ...Object.entries(counters).map(([k, v]) => `${k}=${v}`), ...Object.entries(unknown).map(([k, v]) => `attr${k}=${v}`)].join(' ');
    for (const row of stats.perCpu) write(io.stdout, line(`cpu=${row.cpu}`.padEnd(7), row.counters, row.unknown));
    write(io.stdout, line('total'.padEnd(7), stats.total, stats.totalUnknown));
    return 0;
  });

export const FILTER_USAGE = `filters: -f/--family ipv4|ipv6  -p/--proto NAME|NUM  --state TCPSTATE[,..]
         -s/--src CIDR  -d/--dst CIDR  --sport P[-Q]  --dport P[-Q]      (original direction)
         --reply-src CIDR  --reply-dst CIDR  --reply-sport P[-Q]  --reply-dport P[-Q]
         --mark VALUE[/MASK]  --zone N  --status FLAG[,FLAG..]  (prefix a flag with ! to require it clear)`;

const LIST_USAGE = `usage: conntrack list [conntrack|expect|dying|unconfirmed] [filters] [-z/--zero] [--netns PATH|PID] [--json|--jsonl]
${FILTER_USAGE}
  expect       the expectation table (filters: -f, -p, --helper NAME)
  dying        entries deleted whose destroy event is still to be delivered
  unconfirmed  entries not yet in the table (always empty since Linux 5.19)
  -z/--zero    zero the counters as they are read, like conntrack -L -z`;

function portOption(text: string | undefined, name: string): number | [number, number] | undefined {
  if (text === undefined) return undefined;
  const m = /^(\d+)(?:-(\d+))?$/.exec(text);
  if (!m) throw new UsageError(`--${name} takes a port or a range P-Q, got "${text}"`);
  return m[2] === undefined ? Number(m[1]) : [Number(m[1]), Number(m[2])];
}

function numberText(text: string, name: string): number {
  const value = /^0x[0-9a-f]+$/i.test(text) ? Number.parseInt(text, 16) : /^\d+$/.test(text) ? Number(text) : Number.NaN;
  if (!Number.isSafeInteger(value)) throw new UsageError(`--${name}: "${text}" is not a number`);
  return value;
}

/** Builds an EntryFilter from `list` options; the library validates the values. */
export function filterFromOptions(values: Record<string, string | boolean | undefined>): EntryFilter {
  const filter: EntryFilter = {};
  const str = (key: string) => (typeof values[key] === 'string' ? (values[key] as string) : undefined);
  if (str('family')) filter.family = str('family') as Family;
  const proto = str('proto');
  if (proto !== undefined) filter.protocol = /^\d+$/.test(proto) ? Number(proto) : (proto.toLowerCase() as EntryFilter['protocol']);
  const state = str('state');
  if (state !== undefined) filter.tcpState = state.toUpperCase().split(',') as TcpState[];
  if (str('src')) filter.src = str('src');
  if (str('dst')) filter.dst = str('dst');
  filter.sport = portOption(str('sport'), 'sport');
  filter.dport = portOption(str('dport'), 'dport');
  const reply = {
    src: str('reply-src'),
    dst: str('reply-dst'),
    sport: portOption(str('reply-sport'), 'reply-sport'),
    dport: portOption(str('reply-dport'), 'reply-dport'),
  };
  if (Object.values(reply).some((v) => v !== undefined)) filter.reply = reply;
  const mark = str('mark');
  if (mark !== undefined) {
    const [value, mask] = mark.split('/');
    filter.mark = { value: numberText(value ?? '', 'mark'), mask: mask === undefined ? 0xffffffff : numberText(mask, 'mark') };
  }
  const zone = str('zone');
  if (zone !== undefined) filter.zone = numberText(zone, 'zone');
  const status = str('status');
  if (status !== undefined) {
    const flags = status.toUpperCase().split(',');
    filter.status = {
      set: flags.filter((f) => !f.startsWith('!')) as StatusFlag[],
      unset: flags.filter((f) => f.startsWith('!')).map((f) => f.slice(1)) as StatusFlag[],
    };
  }
  for (const key of Object.keys(filter) as Array<keyof EntryFilter>) if (filter[key] === undefined) delete filter[key];
  return filter;
}

function tupleText(t: Tuple): string {
  const parts = [`src=${t.src}`, `dst=${t.dst}`];
  if (t.sport !== undefined) parts.push(`sport=${t.sport}`, `dport=${t.dport}`);
  if (t.icmpType !== undefined) parts.push(`type=${t.icmpType}`, `code=${t.icmpCode}`, `id=${t.icmpId}`);
  if (t.zone !== undefined) parts.push(`zone=${t.zone}`);
  return parts.join(' ');
}

/** One entry in the layout of `conntrack -L -o extended,id`. */
export function formatEntry(e: ConntrackEntry): string {
  const parts: string[] = [e.family.padEnd(8), String(e.family === 'ipv6' ? 10 : 2), e.original.protocol.padEnd(8), String(e.original.protocolNumber)];
  if (e.timeout !== undefined) parts.push(String(e.timeout));
  if (e.tcp) parts.push(e.tcp.state);
  parts.push(tupleText(e.original));
  if (!e.flags.includes('SEEN_REPLY')) parts.push('[UNREPLIED]');
  parts.push(tupleText(e.reply));
  if (e.counters) parts.splice(parts.length - 1, 0, `packets=${e.counters.original.packets} bytes=${e.counters.original.bytes}`);
  if (e.counters) parts.push(`packets=${e.counters.reply.packets} bytes=${e.counters.reply.bytes}`);
  if (e.flags.includes('OFFLOAD')) parts.push('[OFFLOAD]');
  else if (e.flags.includes('ASSURED')) parts.push('[ASSURED]');
  parts.push(`mark=${e.mark}`);
  if (e.secctx !== undefined) parts.push(`secctx=${e.secctx}`);
  if (e.zone !== undefined) parts.push(`zone=${e.zone}`);
  if (e.helper !== undefined) parts.push(`helper=${e.helper}`);
  if (e.use !== undefined) parts.push(`use=${e.use}`);
  parts.push(`id=${e.id}`);
  return parts.join(' ');
}

export const LIST_OPTIONS = {
  ...NETNS_OPTIONS,
  jsonl: { type: 'boolean', default: false },
  family: { type: 'string', short: 'f' },
  proto: { type: 'string', short: 'p' },
  state: { type: 'string' },
  src: { type: 'string', short: 's' },
  dst: { type: 'string', short: 'd' },
  sport: { type: 'string' },
  dport: { type: 'string' },
  'reply-src': { type: 'string' },
  'reply-dst': { type: 'string' },
  'reply-sport': { type: 'string' },
  'reply-dport': { type: 'string' },
  mark: { type: 'string' },
  zone: { type: 'string' },
  status: { type: 'string' },
} as const;

/** Streams entries to stdout, honouring backpressure so a pipe to `head` stays cheap. */
export async function writeLines(io: CommandIo, lines: AsyncIterable<string>): Promise<void> {
  const out = io.stdout;
  for await (const line of lines) {
    if (!out.write(`${line}\n`)) await new Promise((resolve) => out.once('drain', resolve));
  }
}

/** One expectation in the layout of `conntrack -L expect`. */
export function formatExpectation(x: ConntrackExpectation): string {
  const ports = (t: Tuple) => (t.sport !== undefined ? ` sport=${t.sport} dport=${t.dport}` : '');
  const parts = [
    String(x.timeout ?? 0),
    `proto=${x.tuple.protocolNumber}`,
    `src=${x.tuple.src} dst=${x.tuple.dst}${ports(x.tuple)}`,
    `mask-src=${x.mask.src} mask-dst=${x.mask.dst}${ports(x.mask)}`,
    `master-src=${x.master.src} master-dst=${x.master.dst}${ports(x.master)}`,
  ];
  if (x.flags.length > 0) parts.push(x.flags.join(','));
  if (x.class !== undefined) parts.push(`class=${x.class}`);
  if (x.helper !== undefined) parts.push(`helper=${x.helper}`);
  if (x.zone !== undefined) parts.push(`zone=${x.zone}`);
  if (x.nat !== undefined) parts.push(`nat-dir=${x.nat.dir} nat-src=${x.nat.tuple.src}${x.nat.tuple.sport !== undefined ? ` nat-sport=${x.nat.tuple.sport}` : ''}`);
  if (x.fn !== undefined) parts.push(`fn=${x.fn}`);
  parts.push(`id=${x.id}`);
  return parts.join(' ');
}

const TABLES = ['conntrack', 'expect', 'dying', 'unconfirmed'] as const;

async function listExpectations(io: CommandIo, values: Record<string, string | boolean | undefined>): Promise<void> {
  for (const key of ['state', 'src', 'dst', 'sport', 'dport', 'reply-src', 'reply-dst', 'reply-sport', 'reply-dport', 'mark', 'zone', 'status']) {
    if (values[key] !== undefined) throw new UsageError(`--${key} filters entries; the expectation table takes -f, -p and --helper`);
  }
  if (values.zero === true) throw new UsageError('--zero is for the conntrack table');
  const filter: ExpectationFilter = {};
  if (typeof values.family === 'string') filter.family = values.family as Family;
  if (typeof values.proto === 'string') filter.protocol = /^\d+$/.test(values.proto) ? Number(values.proto) : (values.proto.toLowerCase() as ExpectationFilter['protocol']);
  if (typeof values.helper === 'string') filter.helper = values.helper;
  const list = await withHandle(values.netns as string | undefined, (ct) => ct.expectations(filter));
  if (values.json) {
    write(io.stdout, toJson(list, 2));
    return;
  }
  await writeLines(io, (async function* () {
    for (const x of list) yield values.jsonl ? toJson(x) : formatExpectation(x);
  })());
  if (!values.jsonl) write(io.stderr, `conntrack: ${list.length} expectations listed`);
}

export const listCommand: Command = (argv, io) =>
  run(io, LIST_USAGE, async () => {
    const { values, positionals } = parseArgs({
      args: argv,
      options: { ...LIST_OPTIONS, zero: { type: 'boolean', short: 'z', default: false }, helper: { type: 'string' } },
      strict: true,
      allowPositionals: true,
    });
    if (positionals.length > 1) throw new UsageError(`one table at most, got ${positionals.join(' ')}`);
    const table = (positionals[0] ?? 'conntrack') as (typeof TABLES)[number];
    if (!TABLES.includes(table)) throw new UsageError(`the table is one of ${TABLES.join(', ')}, got "${table}"`);
    if (table === 'expect') {
      await listExpectations(io, values);
      return 0;
    }
    if (values.helper !== undefined) throw new UsageError('--helper filters the expectation table (conntrack list expect)');
    if (values.zero && table !== 'conntrack') throw new UsageError(`--zero is for the conntrack table, not ${table}`);
    const filter = filterFromOptions(values);
    await withHandle(values.netns, async (ct) => {
      const entries = ct.entries(filter, { zeroCounters: values.zero, table });
      if (values.json) {
        const all: ConntrackEntry[] = [];
        for await (const e of entries) all.push(e);
        write(io.stdout, toJson(all, 2));
        return;
      }
      let count = 0;
      await writeLines(io, (async function* () {
        for await (const e of entries) {
          count++;
          yield values.jsonl ? toJson(e) : formatEntry(e);
        }
      })());
      if (!values.jsonl) write(io.stderr, `conntrack: ${count} flow entries listed`);
    });
    return 0;
  });
