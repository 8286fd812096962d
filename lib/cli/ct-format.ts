/**
 * Entries and events as conntrack-tools 1.4.7 prints them (libnetfilter_conntrack's default
 * layout), so scripts that parse `conntrack -L` / `-E` text read ours unchanged.
 *
 * Field order, spacing and the conditions for each field follow what conntrack-tools prints for
 * the same entry; test/integration/cli/ct-output.test.ts compares both line by line.
 */
import type { ConntrackEntry, ConntrackEventType, ConntrackExpectation, CpuStats, ExpectCpuStats, Tuple } from '../base/types.js';

export interface LineFlags {
  /** `-o extended`: the family name and number first. */
  layer3: boolean;
  /** `-o id`: `id=N` after `use=`. */
  id: boolean;
  /** `-o ktimestamp`: `[start=…] [stop=…]` from the kernel's timestamps. */
  ktimestamp: boolean;
  /** `-o labels` with a label map (connlabel.conf): bit number → name. */
  labelNames: ReadonlyMap<number, string> | undefined;
}

const PORT_PROTOCOLS = new Set([6, 17, 136, 132, 33]);
const GRE = 47;
const ICMP = 1;
const ICMPV6 = 58;
const SEEN_REPLY = 1 << 1;
const ASSURED = 1 << 2;
const OFFLOAD = 1 << 14;
const HW_OFFLOAD = 1 << 15;

function tupleText(t: Tuple): string {
  let text = `src=${t.src} dst=${t.dst} `;
  const p = t.protocolNumber;
  if (PORT_PROTOCOLS.has(p)) text += `sport=${t.sport ?? 0} dport=${t.dport ?? 0} `;
  else if (p === GRE) text += `srckey=0x${(t.sport ?? 0).toString(16)} dstkey=0x${(t.dport ?? 0).toString(16)} `;
  else if (p === ICMP || p === ICMPV6) text += `type=${t.icmpType ?? 0} code=${t.icmpCode ?? 0} id=${t.icmpId ?? 0} `;
  return text;
}

const DAYS = ['Sun', 'Mon', 'Tue', 'Wed', 'Thu', 'Fri', 'Sat'];
const MONTHS = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'];
const two = (n: number) => String(n).padStart(2, '0');

/** C's ctime() without its newline, in local time: `Wed Dec  2 02:33:16 2026`. */
export function ctime(seconds: number): string {
  const d = new Date(seconds * 1000);
  return `${DAYS[d.getDay()]} ${MONTHS[d.getMonth()]} ${String(d.getDate()).padStart(2, ' ')} ${two(d.getHours())}:${two(d.getMinutes())}:${two(d.getSeconds())} ${d.getFullYear()}`;
}

/**
 * One entry as conntrack-tools prints it. In events the kernel leaves a zero mark out unless the
 * event is about the mark, and conntrack-tools prints what the message carries; the entry does
 * not say whether the attribute was there, so an event shows `mark=` when it is not zero. `nowSeconds` is the wall clock for `delta-time`
 * (conntrack-tools reads it per entry; one reading per batch gives the same second).
 */
export function formatLine(e: ConntrackEntry, flags: LineFlags, nowSeconds: number, event?: ConntrackEventType): string {
  let s = '';
  if (event !== undefined) s += `${`[${event.toUpperCase()}]`.padStart(9)} `;
  if (flags.layer3) s += e.family === 'ipv6' ? 'ipv6     10 ' : 'ipv4     2 ';
  const o = e.original;
  s += `${o.protocol.padEnd(8)} ${o.protocolNumber} `;
  if (e.timeout !== undefined) s += `${e.timeout} `;
  if (e.tcp !== undefined) s += `${e.tcp.state} `;
  if (e.sctp !== undefined) s += `${e.sctp.state} `;
  s += tupleText(o);
  if (o.zone !== undefined) s += `zone-orig=${o.zone} `;
  const c = e.counters;
  if (c !== undefined) s += `packets=${c.original.packets} bytes=${c.original.bytes} `;
  if ((e.status & SEEN_REPLY) === 0) s += '[UNREPLIED] ';
  s += tupleText(e.reply);
  if (e.reply.zone !== undefined) s += `zone-reply=${e.reply.zone} `;
  if (c !== undefined) s += `packets=${c.reply.packets} bytes=${c.reply.bytes} `;
  if ((e.status & HW_OFFLOAD) !== 0) s += '[HW_OFFLOAD] ';
  else if ((e.status & OFFLOAD) !== 0) s += '[OFFLOAD] ';
  else if ((e.status & ASSURED) !== 0) s += '[ASSURED] ';
  if (event === undefined || e.mark !== 0) s += `mark=${e.mark} `;
  if (e.secmark !== undefined) s += `secmark=${e.secmark} `;
  if (e.secctx !== undefined) s += `secctx=${e.secctx} `;
  if (e.zone !== undefined) s += `zone=${e.zone} `;
  const ts = e.timestamp;
  if (ts !== undefined) {
    const start = Number(ts.start / 1_000_000_000n);
    const stop = ts.stop === undefined || ts.stop === 0n ? nowSeconds : Number(ts.stop / 1_000_000_000n);
    s += `delta-time=${Math.max(0, stop - start)} `;
    if (flags.ktimestamp) {
      s += `[start=${ctime(start)}] `;
      if (ts.stop !== undefined) s += `[stop=${ctime(Number(ts.stop / 1_000_000_000n))}] `;
    }
  }
  if (e.helper !== undefined) s += `helper=${e.helper} `;
  if (e.use !== undefined) s += `use=${e.use} `;
  if (flags.id) s += `id=${e.id} `;
  if (flags.labelNames !== undefined && e.labels !== undefined) {
    const names = e.labels.map((bit) => flags.labelNames?.get(bit)).filter((name) => name !== undefined && name !== '');
    // libnetfilter_conntrack drops the last character before the closing blank: the comma
    // after the last name, or the '=' when no bit has a name.
    s += names.length > 0 ? `labels=${names.join(',')} ` : 'labels ';
  }
  return s.slice(0, -1);
}

/** `[seconds.micro]\t` before an event line with `-o timestamp`. */
export function eventTimestamp(epochMicroseconds: number): string {
  const seconds = Math.floor(epochMicroseconds / 1e6);
  const micro = Math.floor(epochMicroseconds - seconds * 1e6);
  return `[${String(seconds).padStart(8, '0')}.${String(micro).padStart(6, '0')}]\t`;
}

const CPU_COUNTER_ORDER = [
  'searched', 'found', 'new', 'invalid', 'ignore', 'delete', 'delete_list', 'insert', 'insert_failed',
  'drop', 'early_drop', 'error', 'search_restart', 'clash_resolve', 'chaintoolong',
] as const;
/** CTA_STATS_CHAIN_TOOLONG: conntrack-tools names later attributes unknown1, unknown2, … */
const LAST_KNOWN_CPU_COUNTER = 15;

/** `conntrack -S`: one line per CPU, counters in attribute order, a blank before the newline. */
export function formatCpuStats(rows: readonly CpuStats[]): string {
  let out = '';
  for (const row of rows) {
    out += `cpu=${String(row.cpu).padEnd(4)}\t`;
    for (const name of CPU_COUNTER_ORDER) {
      const value = row.counters[name];
      if (value !== undefined) out += `${name}=${value} `;
    }
    for (const [type, value] of Object.entries(row.unknown).sort(([a], [b]) => Number(a) - Number(b))) {
      const n = Number(type) - LAST_KNOWN_CPU_COUNTER;
      if (n >= 1 && n <= 4) out += `unknown${n}=${value} `;
    }
    out += '\n';
  }
  return out;
}

/** `conntrack -S expect`. */
export function formatExpectStats(rows: readonly ExpectCpuStats[]): string {
  let out = '';
  for (const row of rows) {
    out += `cpu=${String(row.cpu).padEnd(4)}\t`;
    for (const name of ['new', 'create', 'delete'] as const) {
      const value = row.counters[name];
      if (value !== undefined) out += `expect_${name}=${value} `;
    }
    out += '\n';
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// XML (`-o xml`): libnetfilter_conntrack's element layout.

function xmlTuple(t: Tuple, direction: 'original' | 'reply', e: ConntrackEntry): string {
  const l3 = e.family === 'ipv6' ? '<layer3 protonum="10" protoname="ipv6">' : '<layer3 protonum="2" protoname="ipv4">';
  let s = `<meta direction="${direction}">${l3}<src>${t.src}</src><dst>${t.dst}</dst></layer3>`;
  s += `<layer4 protonum="${t.protocolNumber}" protoname="${t.protocol}">`;
  const p = t.protocolNumber;
  if (PORT_PROTOCOLS.has(p)) s += `<sport>${t.sport ?? 0}</sport><dport>${t.dport ?? 0}</dport>`;
  else if (p === GRE) s += `<srckey>0x${(t.sport ?? 0).toString(16)}</srckey><dstkey>0x${(t.dport ?? 0).toString(16)}</dstkey>`;
  // ICMP's type, code and id are not in libnetfilter_conntrack's XML.
  s += '</layer4>';
  if (t.zone !== undefined) s += `<zone>${t.zone}</zone>`;
  const c = e.counters;
  if (c !== undefined) {
    const d = direction === 'original' ? c.original : c.reply;
    s += `<counters><packets>${d.packets}</packets><bytes>${d.bytes}</bytes></counters>`;
  }
  return `${s}</meta>`;
}

/** SCTP states as libnetfilter_conntrack's XML printer names them (it indexes the TCP table). */
const XML_TCP_NAMES = ['NONE', 'SYN_SENT', 'SYN_RECV', 'ESTABLISHED', 'FIN_WAIT', 'CLOSE_WAIT', 'LAST_ACK', 'TIME_WAIT', 'CLOSE', 'SYN_SENT2'];

/**
 * One `<flow>` element (`-o xml`): `<timestamp>` with `-o ktimestamp`, and for events `<when>`
 * when `eventTime` is given (`-o timestamp`).
 */
export function formatXmlFlow(e: ConntrackEntry, nowSeconds: number, flags: LineFlags, event?: ConntrackEventType, eventTime?: Date): string {
  const labelNames = flags.labelNames;
  let s = event === undefined ? '<flow>' : `<flow type="${event}">`;
  s += xmlTuple(e.original, 'original', e) + xmlTuple(e.reply, 'reply', e);
  s += '<meta direction="independent">';
  if (e.tcp !== undefined) s += `<state>${e.tcp.state}</state>`;
  else if (e.sctp !== undefined) s += `<state>${XML_TCP_NAMES[e.sctp.stateNumber] ?? 'NONE'}</state>`;
  if (e.timeout !== undefined) s += `<timeout>${e.timeout}</timeout>`;
  s += `<mark>${e.mark}</mark>`;
  if (e.secmark !== undefined) s += `<secmark>${e.secmark}</secmark>`;
  if (e.secctx !== undefined) s += `<secctx>${e.secctx}</secctx>`;
  if (e.zone !== undefined) s += `<zone>${e.zone}</zone>`;
  if (labelNames !== undefined && e.labels !== undefined) {
    s += `<labels>${e.labels.map((bit) => labelNames.get(bit)).filter((n) => n !== undefined && n !== '').map((n) => `<label>${n}</label>`).join('')}</labels>`;
  }
  if (e.use !== undefined) s += `<use>${e.use}</use>`;
  s += `<id>${e.id}</id>`;
  if ((e.status & SEEN_REPLY) === 0) s += '<unreplied/>';
  if ((e.status & ASSURED) !== 0) s += '<assured/>';
  const ts = e.timestamp;
  if (ts !== undefined) {
    if (flags.ktimestamp) s += `<timestamp><start>${ts.start}</start>${ts.stop === undefined ? '' : `<stop>${ts.stop}</stop>`}</timestamp>`;
    const start = Number(ts.start / 1_000_000_000n);
    const stop = ts.stop === undefined || ts.stop === 0n ? nowSeconds : Number(ts.stop / 1_000_000_000n);
    s += `<deltatime>${Math.max(0, stop - start)}</deltatime>`;
  }
  s += '</meta>';
  if (e.helper !== undefined) s += `<helper>${e.helper}</helper>`;
  if (eventTime !== undefined) s += xmlWhen(eventTime);
  return `${s}</flow>`;
}

/** `<when>…</when>`: the local time an event was printed at (`-o xml,timestamp`). */
function xmlWhen(d: Date): string {
  return `<when><hour>${d.getHours()}</hour><min>${d.getMinutes()}</min><sec>${d.getSeconds()}</sec><wday>${d.getDay() + 1}</wday><day>${d.getDate()}</day><month>${d.getMonth() + 1}</month><year>${d.getFullYear()}</year></when>`;
}

export const XML_HEADER = '<?xml version="1.0" encoding="utf-8"?>\n<conntrack>\n';
export const XML_FOOTER = '</conntrack>\n';

/**
 * One expectation as `conntrack -L expect` prints it (libnetfilter_conntrack's default layout):
 * timeout, protocol, the expected tuple, its mask and the master's tuple, then zone, flags, class
 * and helper. The NAT part and the function name are not printed by the tool.
 */
export function formatExpectationLine(x: ConntrackExpectation): string {
  const tuple = (prefix: string, t: Tuple) =>
    `${prefix}src=${t.src} ${prefix}dst=${t.dst} ${t.sport !== undefined ? `sport=${t.sport} dport=${t.dport} ` : ''}`;
  let line = `${x.timeout ?? 0} proto=${x.tuple.protocolNumber} ${tuple('', x.tuple)}${tuple('mask-', x.mask)}${tuple('master-', x.master)}`;
  if (x.zone !== undefined) line += `zone=${x.zone} `;
  if (x.flags.length > 0) line += `${x.flags.join(',')} `;
  if (x.class !== undefined) line += `class=${x.class} `;
  if (x.helper !== undefined) line += `helper=${x.helper} `;
  return line.trimEnd();
}


/** The expectation table's XML document: `<expect>` around the `<flow>` elements. */
export const XML_EXPECT_HEADER = '<?xml version="1.0" encoding="utf-8"?>\n<expect>\n';
export const XML_EXPECT_FOOTER = '</expect>\n';

function xmlPorts(t: Tuple): string {
  const p = t.protocolNumber;
  if (PORT_PROTOCOLS.has(p)) return `<sport>${t.sport ?? 0}</sport><dport>${t.dport ?? 0}</dport>`;
  if (p === GRE) return `<srckey>0x${(t.sport ?? 0).toString(16)}</srckey><dstkey>0x${(t.dport ?? 0).toString(16)}</dstkey>`;
  return '';
}

/**
 * One expectation as `conntrack -L expect -o xml` prints it (libnetfilter_conntrack's layout):
 * the addresses of the expected tuple, its mask and the master under `<layer3>`, their ports
 * under `<layer4>`, then helper, timeout, class, zone, `<when>` (events with `-o timestamp`) and
 * the flags. `event` makes it `<flow type="new">` and so on.
 */
export function formatExpectationXml(x: ConntrackExpectation, event?: ConntrackEventType, eventTime?: Date): string {
  const l3 = x.family === 'ipv6' ? '<layer3 protonum="10" protoname="ipv6">' : '<layer3 protonum="2" protoname="ipv4">';
  const addresses = (t: Tuple) => `<src>${t.src}</src><dst>${t.dst}</dst>`;
  let s = event === undefined ? '<flow>' : `<flow type="${event}">`;
  s += `${l3}<expected>${addresses(x.tuple)}</expected><mask>${addresses(x.mask)}</mask><master>${addresses(x.master)}</master></layer3>`;
  s += `<layer4 protonum="${x.tuple.protocolNumber}" protoname="${x.tuple.protocol}">`;
  s += `<expected>${xmlPorts(x.tuple)}</expected><mask>${xmlPorts(x.mask)}</mask><master>${xmlPorts(x.master)}</master></layer4>`;
  s += '<meta>';
  if (x.helper !== undefined) s += `<helper-name>${x.helper}</helper-name>`;
  if (x.timeout !== undefined) s += `<timeout>${x.timeout}</timeout>`;
  if (x.class !== undefined) s += `<class>${x.class}</class>`;
  if (x.zone !== undefined) s += `<zone>${x.zone}</zone>`;
  if (eventTime !== undefined) s += xmlWhen(eventTime);
  for (const flag of x.flags) s += `<${flag.toLowerCase()}/>`;
  return `${s}</meta></flow>`;
}

/** `[seconds.micro]\t` before an expectation line with `-o timestamp`: printf's `%-8ld.%-6ld`, padded on the right. */
export function expectationTimestamp(epochMicroseconds: number): string {
  const seconds = Math.floor(epochMicroseconds / 1e6);
  const micro = Math.floor(epochMicroseconds - seconds * 1e6);
  return `[${String(seconds).padEnd(8)}.${String(micro).padEnd(6)}]\t`;
}
