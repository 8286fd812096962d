/**
 * The oracle: what conntrack-tools (`conntrack` 1.4.x over libnetfilter_conntrack) says about a
 * namespace's table, parsed into the library's own field names (lib/base/types.ts ConntrackEntry), so
 * comparison tests can match the library's entries against it by `id`.
 *
 * Sources, and why two:
 * - `conntrack -L -o xml,ktimestamp,labels` is the main one: structured, carries the start time in
 *   nanoseconds (`-o extended` only prints it as a local date to the second), per-tuple zones,
 *   secctx, helper and labels.
 * - `conntrack -L -o extended,id` fills what the XML printer leaves out: ICMP type/code/id (XML
 *   prints ports and GRE keys only), the OFFLOAD / HW_OFFLOAD flags, and SCTP state names (the
 *   XML printer looks them up in the TCP table: ESTABLISHED prints as FIN_WAIT). The two dumps are
 *   merged by entry id.
 *
 * What the tool cannot show (so comparisons must leave it out; see ORACLE_UNAVAILABLE):
 * - `status` (raw bits). Of the flags only SEEN_REPLY (absent = [UNREPLIED]), ASSURED, OFFLOAD and
 *   HW_OFFLOAD are visible (ORACLE_VISIBLE_FLAGS); CONFIRMED, NAT bits, DYING, TEMPLATE... are not.
 * - `master` (only shown for expectations), `seqAdjust`, `synproxy`.
 * - TCP window scales and flags, SCTP vtags: only the state name. DCCP: nothing at all, not even
 *   the state (neither printer shows it in 1.4.7).
 * - Numbers for names: protocol and state come as names (`protoname=`, `<state>`); the state's
 *   number is the kernel's for that name, read from its uapi header (kernel-uapi.ts), never from
 *   the library's tables.
 * - `timestamp.stop`: only dying entries have one, and a dump shows live entries.
 * - `labels` only with a label-name map: the tool names bits through /etc/xtables/connlabel.conf,
 *   which this oracle supplies inside a private mount namespace (bit N is named `bitN`).
 * - `secmark`: printed when the kernel sends CTA_SECMARK, which current kernels no longer do.
 * - Large tables: the whole XML text is held in memory; above ~100 k entries use oracleIds().
 */
import { once } from 'node:events';
import { mkdtemp, mkdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import type {
  ConntrackEntry, CpuCounterName, Family, ProtocolName, SctpState, StatusFlag, TcpState, Tuple,
} from '../../lib/base/types.js';
import { sctpStateNumber, tcpStateNumber } from './kernel-uapi.js';
import { requireTool } from './tools.js';
import type { Netns } from './netns.js';

/** A ConntrackEntry as far as conntrack-tools can tell (see the module comment for the gaps). */
export interface OracleEntry extends Omit<ConntrackEntry, 'status'> {
  /** Never printed by the tool. */
  status: undefined;
  /** Whole seconds since `timestamp.start` as the tool computed it (`delta-time=`, `<deltatime>`). */
  deltaTime: number | undefined;
}

/** The status flags the tool prints; compare `entry.flags` restricted to these. */
export const ORACLE_VISIBLE_FLAGS: readonly StatusFlag[] = ['SEEN_REPLY', 'ASSURED', 'OFFLOAD', 'HW_OFFLOAD'];

/** ConntrackEntry fields (dotted paths) the oracle always leaves undefined or cannot know. */
export const ORACLE_UNAVAILABLE: readonly string[] = [
  'status', 'master', 'seqAdjust', 'synproxy', 'secmark', 'timestamp.stop',
  'tcp.wscaleOriginal', 'tcp.wscaleReply', 'tcp.flagsOriginal', 'tcp.flagsReply',
  'sctp.vtagOriginal', 'sctp.vtagReply', 'dccp',
];

/** The protocol names conntrack-tools prints (`protoname=` in XML, the first word in text). */
const TOOL_PROTOCOL_NAMES: readonly ProtocolName[] = ['tcp', 'udp', 'udplite', 'icmp', 'icmpv6', 'sctp', 'dccp', 'gre', 'unknown'];

/** The tool's name of a layer-4 protocol, as the library spells it (the same words). */
function protocolFromTool(name: string | undefined): ProtocolName {
  if (!TOOL_PROTOCOL_NAMES.includes(name as ProtocolName)) throw new Error(`oracle: conntrack printed protocol ${JSON.stringify(name)}`);
  return name as ProtocolName;
}

/** Status flags in bit order, so oracle and library lists compare equal when sorted the same way. */
const FLAG_ORDER: readonly StatusFlag[] = [
  'EXPECTED', 'SEEN_REPLY', 'ASSURED', 'CONFIRMED', 'SRC_NAT', 'DST_NAT', 'SEQ_ADJUST', 'SRC_NAT_DONE',
  'DST_NAT_DONE', 'DYING', 'FIXED_TIMEOUT', 'TEMPLATE', 'UNTRACKED', 'HELPER', 'OFFLOAD', 'HW_OFFLOAD',
];

function sortFlags(flags: Iterable<StatusFlag>): StatusFlag[] {
  return [...new Set(flags)].sort((a, b) => FLAG_ORDER.indexOf(a) - FLAG_ORDER.indexOf(b));
}

function hasPorts(protocol: ProtocolName): boolean {
  return ['tcp', 'udp', 'udplite', 'sctp', 'dccp'].includes(protocol);
}

function isIcmp(protocol: ProtocolName): boolean {
  return protocol === 'icmp' || protocol === 'icmpv6';
}

function toInt(text: string | undefined, what: string): number {
  if (text === undefined || !/^\d+$/.test(text)) throw new Error(`oracle: bad ${what}: ${JSON.stringify(text)}`);
  return Number(text);
}

function optionalInt(text: string | undefined, what: string): number | undefined {
  return text === undefined ? undefined : toInt(text, what);
}

/** Label names as this oracle's connlabel.conf spells them (`bitN`) to bit numbers, ascending. */
function labelBits(names: readonly string[]): number[] {
  return names.map((name) => {
    const match = /^bit(\d+)$/.exec(name);
    if (match?.[1] === undefined) throw new Error(`oracle: label ${JSON.stringify(name)} is not from this oracle's label map`);
    return Number(match[1]);
  }).sort((a, b) => a - b);
}

/**
 * Per-protocol state as the tool names it; the number is the kernel's for that name (its uapi
 * header), never the library's table. The tool shows no DCCP state at all.
 */
function protoState(protocol: ProtocolName, name: string | undefined): Pick<OracleEntry, 'tcp' | 'sctp' | 'dccp'> {
  const none = { tcp: undefined, sctp: undefined, dccp: undefined };
  if (name === undefined) return none;
  if (protocol === 'tcp') {
    // Older libnetfilter_conntrack names state 9 LISTEN; the kernel (and the library) SYN_SENT2.
    const state = (name === 'LISTEN' ? 'SYN_SENT2' : name) as TcpState;
    return { ...none, tcp: { state, stateNumber: tcpStateNumber(state), wscaleOriginal: undefined, wscaleReply: undefined, flagsOriginal: undefined, flagsReply: undefined } };
  }
  if (protocol === 'sctp') {
    return { ...none, sctp: { state: name as SctpState, stateNumber: sctpStateNumber(name), vtagOriginal: undefined, vtagReply: undefined } };
  }
  return none;
}

function emptyTuple(): Tuple {
  return {
    src: '', dst: '', protocolNumber: 0, protocol: 'unknown', sport: undefined, dport: undefined,
    icmpType: undefined, icmpCode: undefined, icmpId: undefined, zone: undefined,
  };
}

// ---------------------------------------------------------------------------------------------
// XML (`-o xml[,ktimestamp][,labels]`)

function tag(text: string, name: string): string | undefined {
  return new RegExp(`<${name}>([^<]*)</${name}>`).exec(text)?.[1];
}

function parseXmlTuple(text: string, what: string): { tuple: Tuple; packets?: number; bytes?: number; l3: string } {
  const layer3 = /<layer3 protonum="(\d+)" protoname="([^"]*)">/.exec(text);
  const layer4 = /<layer4 protonum="(\d+)" protoname="([^"]*)">/.exec(text);
  if (!layer3 || !layer4) throw new Error(`oracle: ${what} tuple without layer3/layer4: ${text}`);
  const protocolNumber = toInt(layer4[1], 'layer4 protonum');
  const protocol = protocolFromTool(layer4[2]);
  const ports = hasPorts(protocol);
  const counters = text.includes('<counters>');
  return {
    l3: layer3[2] ?? '',
    tuple: {
      ...emptyTuple(),
      src: tag(text, 'src') ?? '',
      dst: tag(text, 'dst') ?? '',
      protocolNumber,
      protocol,
      sport: ports ? optionalInt(tag(text, 'sport'), 'sport') : undefined,
      dport: ports ? optionalInt(tag(text, 'dport'), 'dport') : undefined,
      zone: optionalInt(tag(text, 'zone'), 'tuple zone'),
    },
    ...(counters ? { packets: toInt(tag(text, 'packets'), 'packets'), bytes: toInt(tag(text, 'bytes'), 'bytes') } : {}),
  };
}

/**
 * What both sides can say about an entry, in one shape: the oracle's gaps (ORACLE_UNAVAILABLE)
 * left out, flags restricted to the ones the tool prints. The timeout is compared separately.
 */
export function comparable(e: ConntrackEntry | OracleEntry) {
  return {
    id: e.id,
    family: e.family,
    original: e.original,
    reply: e.reply,
    flags: e.flags.filter((f) => ORACLE_VISIBLE_FLAGS.includes(f)),
    mark: e.mark,
    secctx: e.secctx,
    zone: e.zone,
    use: e.use,
    counters: e.counters,
    timestampStart: e.timestamp?.start,
    tcp: e.tcp === undefined ? undefined : { state: e.tcp.state, stateNumber: e.tcp.stateNumber },
    sctp: e.sctp === undefined ? undefined : { state: e.sctp.state, stateNumber: e.sctp.stateNumber },
    helper: e.helper,
    labels: e.labels === undefined ? undefined : [...e.labels],
  };
}

/** Parses `conntrack -L -o xml...` output (one `<flow>` per entry). */
export function parseConntrackXml(text: string): OracleEntry[] {
  const entries: OracleEntry[] = [];
  for (const flowMatch of text.matchAll(/<flow(?: type="[a-z]+")?>(.*?)<\/flow>/gs)) {
    const flow = flowMatch[1] ?? '';
    const metas = new Map<string, string>();
    for (const meta of flow.matchAll(/<meta direction="(original|reply|independent)">(.*?)<\/meta>/gs)) {
      metas.set(meta[1] ?? '', meta[2] ?? '');
    }
    const originalText = metas.get('original');
    const replyText = metas.get('reply');
    if (originalText === undefined || replyText === undefined) throw new Error(`oracle: flow without both tuples: ${flow}`);
    const original = parseXmlTuple(originalText, 'original');
    const reply = parseXmlTuple(replyText, 'reply');
    const independent = metas.get('independent') ?? '';

    const flags: StatusFlag[] = [];
    if (!independent.includes('<unreplied/>')) flags.push('SEEN_REPLY');
    if (independent.includes('<assured/>')) flags.push('ASSURED');

    const timestampText = /<timestamp>(.*?)<\/timestamp>/s.exec(independent)?.[1];
    const start = timestampText === undefined ? undefined : tag(timestampText, 'start');
    const stop = timestampText === undefined ? undefined : tag(timestampText, 'stop');
    const labelsBlock = /<labels>(.*?)<\/labels>/s.exec(independent)?.[1];
    const protocol = original.tuple.protocol;

    entries.push({
      id: toInt(tag(independent, 'id'), 'id'),
      family: familyOf(original.l3, original.tuple.src),
      original: original.tuple,
      reply: reply.tuple,
      master: undefined,
      status: undefined,
      flags: sortFlags(flags),
      timeout: optionalInt(tag(independent, 'timeout'), 'timeout'),
      mark: optionalInt(tag(independent, 'mark'), 'mark') ?? 0,
      secmark: optionalInt(tag(independent, 'secmark'), 'secmark'),
      secctx: tag(independent, 'secctx'),
      zone: optionalInt(tag(independent, 'zone'), 'zone'),
      use: optionalInt(tag(independent, 'use'), 'use'),
      counters: original.packets !== undefined && reply.packets !== undefined
        ? {
          original: { packets: original.packets, bytes: original.bytes ?? 0 },
          reply: { packets: reply.packets, bytes: reply.bytes ?? 0 },
        }
        : undefined,
      timestamp: start === undefined ? undefined : { start: BigInt(start), stop: stop === undefined ? undefined : BigInt(stop) },
      deltaTime: optionalInt(tag(independent, 'deltatime'), 'deltatime'),
      // SCTP/DCCP names in XML come from the TCP table (a printer bug): take them from extended.
      ...protoState(protocol, protocol === 'tcp' ? tag(independent, 'state') : undefined),
      // <helper> sits after the independent meta, directly in <flow>.
      helper: tag(flow.replace(/<meta .*?<\/meta>/gs, ''), 'helper'),
      labels: labelsBlock === undefined ? undefined : labelBits([...labelsBlock.matchAll(/<label>([^<]*)<\/label>/g)].map((m) => m[1] ?? '')),
      seqAdjust: undefined,
      synproxy: undefined,
    });
  }
  return entries;
}

function familyOf(l3name: string, src: string): Family {
  if (l3name === 'ipv4' || l3name === 'ipv6') return l3name;
  return src.includes(':') ? 'ipv6' : 'ipv4';
}

// ---------------------------------------------------------------------------------------------
// Extended / default text (`-o extended[,id][,timestamp|ktimestamp][,labels]`)

/** Parses one line of `conntrack -L` text output (with or without `-o extended`). */
export function parseConntrackLine(line: string): OracleEntry {
  // "[start=Wed Nov 25 10:55:02 2026]" (ktimestamp) holds spaces: take it out before splitting.
  // It is local time to the second, so it is not parsed: the XML view has the exact nanoseconds.
  const rest = line.replace(/\[(?:start|stop)=[^\]]*\]/g, ' ');
  const tokens = rest.trim().split(/\s+/);

  // Leading words: [l3name l3num] l4name l4num [timeout] [state]
  let i = 0;
  let l3name = '';
  if (tokens[0] === 'ipv4' || tokens[0] === 'ipv6' || tokens[0] === 'unknown') {
    l3name = tokens[0];
    i = 2;
  }
  const protocol = protocolFromTool(tokens[i++]);
  const protocolNumber = toInt(tokens[i++], 'protocol number');
  let timeout: number | undefined;
  let stateName: string | undefined;
  while (i < tokens.length && !tokens[i]?.includes('=') && !tokens[i]?.startsWith('[')) {
    const word = tokens[i++] ?? '';
    if (/^\d+$/.test(word)) timeout = Number(word);
    else stateName = word;
  }

  const tuples: [Tuple, Tuple] = [emptyTuple(), emptyTuple()];
  const counters: Array<{ packets: number; bytes: number } | undefined> = [undefined, undefined];
  let current = -1;
  let icmpIdNext = false;
  const flags = new Set<StatusFlag>(['SEEN_REPLY']);
  const fields = new Map<string, string>();

  for (; i < tokens.length; i++) {
    const token = tokens[i] ?? '';
    if (token.startsWith('[')) {
      if (token === '[UNREPLIED]') flags.delete('SEEN_REPLY');
      else if (token === '[ASSURED]') flags.add('ASSURED');
      else if (token === '[OFFLOAD]') flags.add('OFFLOAD');
      else if (token === '[HW_OFFLOAD]') flags.add('HW_OFFLOAD');
      continue;
    }
    const eq = token.indexOf('=');
    if (eq < 0) continue;
    const key = token.slice(0, eq);
    const value = token.slice(eq + 1);
    if (key === 'src' && current < 1) {
      current++;
      icmpIdNext = false;
    }
    const tuple = current >= 0 ? tuples[current] : undefined;
    // Tuple keys belong to the current tuple until the entry-wide keys start (mark= comes after both).
    if (tuple !== undefined && !fields.has('mark')) {
      switch (key) {
        case 'src': tuple.src = value; continue;
        case 'dst': tuple.dst = value; continue;
        case 'sport': tuple.sport = toInt(value, 'sport'); continue;
        case 'dport': tuple.dport = toInt(value, 'dport'); continue;
        case 'type': tuple.icmpType = toInt(value, 'icmp type'); continue;
        case 'code': tuple.icmpCode = toInt(value, 'icmp code'); icmpIdNext = true; continue;
        case 'packets': counters[current] = { packets: toInt(value, 'packets'), bytes: 0 }; continue;
        case 'bytes': {
          const c = counters[current];
          if (c) c.bytes = toInt(value, 'bytes');
          continue;
        }
        case 'id':
          // In an ICMP tuple `id=` after `code=` is the ICMP id; otherwise it is the entry id.
          if (icmpIdNext) {
            tuple.icmpId = toInt(value, 'icmp id');
            icmpIdNext = false;
            continue;
          }
          break;
        default:
          break;
      }
    }
    fields.set(key, value);
  }

  for (const tuple of tuples) {
    tuple.protocolNumber = protocolNumber;
    tuple.protocol = protocol;
    if (!hasPorts(protocol)) { tuple.sport = undefined; tuple.dport = undefined; }
    if (!isIcmp(protocol)) { tuple.icmpType = undefined; tuple.icmpCode = undefined; tuple.icmpId = undefined; }
  }
  tuples[0].zone = optionalInt(fields.get('zone-orig'), 'zone-orig');
  tuples[1].zone = optionalInt(fields.get('zone-reply'), 'zone-reply');

  const [originalCounters, replyCounters] = counters;
  const labels = fields.get('labels');

  return {
    id: toInt(fields.get('id'), 'id (run with -o id)'),
    family: familyOf(l3name, tuples[0].src),
    original: tuples[0],
    reply: tuples[1],
    master: undefined,
    status: undefined,
    flags: sortFlags(flags),
    timeout,
    mark: optionalInt(fields.get('mark'), 'mark') ?? 0,
    secmark: optionalInt(fields.get('secmark'), 'secmark'),
    secctx: fields.get('secctx'),
    zone: optionalInt(fields.get('zone'), 'zone'),
    use: optionalInt(fields.get('use'), 'use'),
    counters: originalCounters && replyCounters ? { original: originalCounters, reply: replyCounters } : undefined,
    // Not parsed from text (see above); oracleEntries takes it from the XML view.
    timestamp: undefined,
    deltaTime: optionalInt(fields.get('delta-time'), 'delta-time'),
    ...protoState(protocol, stateName),
    helper: fields.get('helper'),
    labels: labels === undefined ? undefined : labelBits(labels.split(',').filter(Boolean)),
    seqAdjust: undefined,
    synproxy: undefined,
  };
}

/** Parses `conntrack -L -o extended,id...` output, one entry per non-empty line. */
export function parseConntrackText(text: string): OracleEntry[] {
  return text.split('\n').filter((line) => line.trim() !== '').map(parseConntrackLine);
}

/**
 * Adds to XML entries what only the text output has (ICMP type/code/id, OFFLOAD flags, SCTP/DCCP
 * state), matching by id. Entries missing from `text` (gone between the two dumps) stay as they are.
 */
export function mergeOracleViews(xml: readonly OracleEntry[], text: readonly OracleEntry[]): OracleEntry[] {
  const byId = new Map(text.map((entry) => [entry.id, entry]));
  return xml.map((entry) => {
    const other = byId.get(entry.id);
    if (other === undefined) return entry;
    const withIcmp = (mine: Tuple, theirs: Tuple): Tuple =>
      isIcmp(mine.protocol)
        ? { ...mine, icmpType: theirs.icmpType, icmpCode: theirs.icmpCode, icmpId: theirs.icmpId }
        : mine;
    const offload = other.flags.filter((flag) => flag === 'OFFLOAD' || flag === 'HW_OFFLOAD');
    return {
      ...entry,
      original: withIcmp(entry.original, other.original),
      reply: withIcmp(entry.reply, other.reply),
      flags: sortFlags([...entry.flags, ...offload]),
      sctp: entry.sctp ?? other.sctp,
    };
  });
}

/** "conntrack v1.4.7 (conntrack-tools): 5 flow entries have been shown." → 5. */
export function parseShownCount(stderr: string): number | undefined {
  const match = /(\d+) flow entries have been shown/.exec(stderr);
  return match?.[1] === undefined ? undefined : Number(match[1]);
}

// ---------------------------------------------------------------------------------------------
// Stats and count

export interface OracleCpuStats {
  cpu: number;
  /** Counter name as the tool prints it (`found`, `invalid`, ...; `expect_new`... for `-S exp`). */
  counters: Partial<Record<CpuCounterName, number>> & Record<string, number>;
}

export interface OracleStats {
  perCpu: OracleCpuStats[];
  /** Sum over CPUs. */
  total: Partial<Record<CpuCounterName, number>> & Record<string, number>;
}

/** Parses `conntrack -S` (or `-S exp`): `cpu=0 \tfound=0 invalid=12 ...` per line. */
export function parseConntrackStats(text: string): OracleStats {
  const perCpu: OracleCpuStats[] = [];
  const total: Record<string, number> = {};
  for (const line of text.split('\n')) {
    const pairs = [...line.matchAll(/([a-z_]+)=(\d+)/g)];
    const cpuPair = pairs.find((pair) => pair[1] === 'cpu');
    if (cpuPair === undefined) continue;
    const counters: Record<string, number> = {};
    for (const [, name, value] of pairs) {
      if (name === undefined || value === undefined || name === 'cpu') continue;
      counters[name] = Number(value);
      total[name] = (total[name] ?? 0) + Number(value);
    }
    perCpu.push({ cpu: Number(cpuPair[2]), counters });
  }
  if (perCpu.length === 0) throw new Error(`oracle: no per-CPU lines in: ${JSON.stringify(text)}`);
  return { perCpu, total };
}

/** Parses `conntrack -C` output: a single number. */
export function parseConntrackCount(text: string): number {
  const trimmed = text.trim();
  if (!/^\d+$/.test(trimmed)) throw new Error(`oracle: conntrack -C printed ${JSON.stringify(text)}`);
  return Number(trimmed);
}

/** The entry id at the end of a `-o id` line. */
export function parseIdFromLine(line: string): number | undefined {
  const match = /\bid=(\d+)\s*$/.exec(line);
  return match?.[1] === undefined ? undefined : Number(match[1]);
}

// ---------------------------------------------------------------------------------------------
// Running the tool inside a namespace

export interface OracleListOptions {
  /** Extra conntrack filter arguments, e.g. ['-p', 'tcp'] or ['-f', 'ipv6']. */
  filter?: readonly string[];
  /**
   * Show labels (default true). The tool names label bits only through
   * /etc/xtables/connlabel.conf, so this runs it in a private mount namespace with an overlay on
   * /etc that provides one; the host's /etc is untouched. Needs `unshare` and overlayfs.
   */
  labels?: boolean;
  timeoutMs?: number;
}

/** Writes a connlabel.conf naming bit N `bitN` into a fresh overlay upper dir; returns the dirs. */
async function labelOverlayDirs(): Promise<{ root: string; upper: string; work: string }> {
  const root = await mkdtemp(join(tmpdir(), 'ctt-labels-'));
  const upper = join(root, 'upper');
  const work = join(root, 'work');
  await mkdir(join(upper, 'xtables'), { recursive: true });
  await mkdir(work);
  const lines = Array.from({ length: 128 }, (_, bit) => `${bit} bit${bit}`);
  await writeFile(join(upper, 'xtables', 'connlabel.conf'), `${lines.join('\n')}\n`);
  return { root, upper, work };
}

async function runConntrack(ns: Netns, args: readonly string[], options: OracleListOptions): Promise<{ stdout: string; stderr: string }> {
  const conntrack = requireTool('conntrack');
  const timeoutMs = options.timeoutMs ?? 60_000;
  if (options.labels === false) return ns.exec(conntrack, args, { timeoutMs });
  const dirs = await labelOverlayDirs();
  try {
    const script = 'mount -t overlay overlay -o "lowerdir=/etc,upperdir=$1,workdir=$2" /etc || exit 97; ' +
      'shift 2; exec "$@"';
    return await ns.exec(requireTool('unshare'), ['--mount', '--propagation', 'private', 'sh', '-c', script, 'sh', dirs.upper, dirs.work, conntrack, ...args], { timeoutMs });
  } finally {
    await rm(dirs.root, { recursive: true, force: true });
  }
}

/**
 * Every entry of the namespace's table as the tool sees it (XML merged with extended, by id).
 * Checks that it parsed as many entries as the tool says it printed.
 */
export async function oracleEntries(ns: Netns, options: OracleListOptions = {}): Promise<OracleEntry[]> {
  const filter = options.filter ?? [];
  const xml = await runConntrack(ns, ['-L', ...filter, '-o', 'xml,ktimestamp,labels'], options);
  const xmlEntries = parseConntrackXml(xml.stdout);
  const shown = parseShownCount(xml.stderr);
  if (shown !== undefined && shown !== xmlEntries.length) {
    throw new Error(`oracle: conntrack printed ${shown} entries, parsed ${xmlEntries.length}`);
  }
  const text = await ns.exec(requireTool('conntrack'), ['-L', ...filter, '-o', 'extended,id'], { timeoutMs: options.timeoutMs ?? 60_000 });
  return mergeOracleViews(xmlEntries, parseConntrackText(text.stdout));
}

/** `conntrack -C`: entries in the namespace's table. */
export async function oracleCount(ns: Netns): Promise<number> {
  return parseConntrackCount((await ns.exec(requireTool('conntrack'), ['-C'])).stdout);
}

/** `conntrack -S`: per-CPU statistics of the namespace, and their sum. */
export async function oracleStats(ns: Netns): Promise<OracleStats> {
  return parseConntrackStats((await ns.exec(requireTool('conntrack'), ['-S'])).stdout);
}

/** `conntrack -S exp`: per-CPU expectation statistics (`expect_new`, `expect_create`, `expect_delete`). */
export async function oracleExpectStats(ns: Netns): Promise<OracleStats> {
  return parseConntrackStats((await ns.exec(requireTool('conntrack'), ['-S', 'exp'])).stdout);
}

/**
 * The ids of every entry, read line by line from `conntrack -L -o id` so big tables (a million
 * entries) never sit in memory as one string. Checks the count against the tool's summary.
 */
export async function oracleIds(ns: Netns, options: { filter?: readonly string[]; timeoutMs?: number } = {}): Promise<number[]> {
  const child = ns.spawn(requireTool('conntrack'), ['-L', ...(options.filter ?? []), '-o', 'id'], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr?.on('data', (chunk: Buffer) => { stderr += chunk.toString(); });
  const closed = once(child, 'close') as Promise<[number | null, NodeJS.Signals | null]>;
  const timer = setTimeout(() => child.kill('SIGKILL'), options.timeoutMs ?? 300_000);
  const ids: number[] = [];
  if (child.stdout === null) throw new Error('oracle: no stdout pipe');
  for await (const line of createInterface({ input: child.stdout, crlfDelay: Infinity })) {
    const id = parseIdFromLine(line);
    if (id === undefined) throw new Error(`oracle: line without id: ${line}`);
    ids.push(id);
  }
  const [code, signal] = await closed;
  clearTimeout(timer);
  if (code !== 0) throw new Error(`conntrack -L -o id failed (${signal ?? `exit code ${code}`}): ${stderr.trim()}`);
  const shown = parseShownCount(stderr);
  if (shown !== undefined && shown !== ids.length) throw new Error(`oracle: conntrack printed ${shown} entries, read ${ids.length} ids`);
  return ids;
}

/**
 * Status flags the tool can select entries by, with the arguments that do: `-u FLAG` for the
 * flags it names, `-n` / `-g` for source / destination NAT (libnetfilter_conntrack: the NAT was
 * done and changed the address), `-j` for either. The rest of the status bits it cannot show.
 */
export const ORACLE_STATUS_SELECTIONS = {
  SEEN_REPLY: ['-u', 'SEEN_REPLY'],
  ASSURED: ['-u', 'ASSURED'],
  EXPECTED: ['-u', 'EXPECTED'],
  FIXED_TIMEOUT: ['-u', 'FIXED_TIMEOUT'],
  OFFLOAD: ['-u', 'OFFLOAD'],
  SRC_NAT: ['-n'],
  DST_NAT: ['-g'],
  ANY_NAT: ['-j'],
} as const satisfies Record<string, readonly string[]>;

export type OracleStatusSelection = keyof typeof ORACLE_STATUS_SELECTIONS;

/** For each selection of ORACLE_STATUS_SELECTIONS, the ids of the entries conntrack -L selects with it. */
export async function oracleStatusIds(ns: Netns): Promise<Record<OracleStatusSelection, Set<number>>> {
  const result = {} as Record<OracleStatusSelection, Set<number>>;
  for (const [name, args] of Object.entries(ORACLE_STATUS_SELECTIONS) as Array<[OracleStatusSelection, readonly string[]]>) {
    result[name] = new Set(await oracleIds(ns, { filter: args }));
  }
  return result;
}
