/**
 * conntrack-tools' commands (-L, -G, -D, -I, -U, -E, -F, -C, -S) on this library: the same
 * stdout text, the same stderr messages and exit statuses, with `-o json` / `-o jsonl` added.
 * Parsing is in ct-syntax.ts, the text layout in ct-format.ts.
 */
import { ConntrackError } from '../base/errors.js';
import { Conntrack } from '../table/conntrack.js';
import type { ConntrackEntry, ConntrackEventType, ConntrackExpectation, EntryChanges, EntryFilter, NatSpec, NewEntry, TcpState, TupleSpec } from '../base/types.js';
import { netnsOption, stopOnTermination, type CommandIo } from './common.js';
import { toJson } from './core.js';
import {
  eventTimestamp, expectationTimestamp, formatCpuStats, formatExpectationLine, formatExpectationXml, formatExpectStats, formatLine, formatXmlFlow,
  XML_EXPECT_FOOTER, XML_EXPECT_HEADER, XML_FOOTER, XML_HEADER, type LineFlags,
} from './ct-format.js';
import { CtFailure, CtParameterError, isConntrackToolsSyntax, parseConntrackArgs, PORT_PROTOCOL_NUMBERS, type CtArgs, type NatOption } from './ct-syntax.js';

export { isConntrackToolsSyntax };

/** What stands before every message, where conntrack-tools writes `conntrack v1.4.7 (conntrack-tools): `. */
export const MESSAGE_PREFIX = 'conntrack (conntrack-tools syntax): ';
const TRY_HELP = "Try `conntrack -h' or 'conntrack --help' for more information.";

const EXIT_PARAMETER_PROBLEM = 2;
const EXIT_OTHER_PROBLEM = 1;

function say(io: CommandIo, text: string): void {
  io.stderr.write(`${MESSAGE_PREFIX}${text}\n`);
}

/** Writes text, waiting when the pipe is full: a 1M-entry dump into `head` stays cheap. */
async function put(io: CommandIo, text: string): Promise<void> {
  if (!io.stdout.write(text)) await new Promise((resolve) => io.stdout.once('drain', resolve));
}

const nowSeconds = () => Math.floor(Date.now() / 1000);
/** Entries per native batch on the -L text path: fewer hand-offs from the dump thread. */
const TEXT_BATCH = 8192;

function lineFlags(args: CtArgs): LineFlags {
  return {
    layer3: args.output.has('extended'),
    id: args.output.has('id'),
    ktimestamp: args.output.has('ktimestamp'),
    labelNames: args.output.has('labels') ? args.labelNames : undefined,
  };
}

function unsupported(what: string): CtFailure {
  return new CtFailure(`${what} is not supported by this command yet (see its README: what is left out)`);
}

/** The part of the options the library filters on (in the kernel where it can). */
function entryFilter(args: CtArgs, forUpdate = false): EntryFilter {
  const filter: EntryFilter = {};
  if (args.family !== undefined) filter.family = args.family;
  if (args.protocol !== undefined) filter.protocol = args.protocol.number;
  // LISTEN stays LISTEN: the library takes it as SYN_SENT2.
  if (args.state !== undefined) filter.tcpState = args.state as TcpState;
  const tuple = (t: CtArgs['original']) => {
    const out: NonNullable<EntryFilter['reply']> = {};
    if (t.src !== undefined) out.src = t.srcPrefix === undefined ? t.src : `${t.src}/${t.srcPrefix}`;
    if (t.dst !== undefined) out.dst = t.dstPrefix === undefined ? t.dst : `${t.dst}/${t.dstPrefix}`;
    if (t.sport !== undefined) out.sport = t.sport;
    if (t.dport !== undefined) out.dport = t.dport;
    return Object.keys(out).length > 0 ? out : undefined;
  };
  const original = tuple(args.original);
  const reply = tuple(args.reply);
  if (original !== undefined) filter.original = original;
  if (reply !== undefined) filter.reply = reply;
  // For -U, mark and status are what to set, not what to select.
  if (!forUpdate) {
    if (args.mark !== undefined) filter.mark = { value: args.mark.value & args.mark.mask, mask: args.mark.mask };
    if (args.status !== undefined && (args.status.set.length > 0 || args.status.unset.length > 0)) filter.status = { ...args.status };
  }
  if (args.zone !== undefined) filter.zone = args.zone;
  return filter;
}

function isSnat(e: ConntrackEntry): boolean {
  return e.reply.dst !== e.original.src;
}
function isDnat(e: ConntrackEntry): boolean {
  return e.reply.src !== e.original.dst;
}
function isSpat(e: ConntrackEntry): boolean {
  return e.reply.dport !== e.original.sport;
}
function isDpat(e: ConntrackEntry): boolean {
  return e.reply.sport !== e.original.dport;
}

/** conntrack-tools' NAT filter: `-n [IP[:PORT]]`, `-g …`, `-j …` (either). */
function natMatches(e: ConntrackEntry, spec: NatOption, kind: 'src' | 'dst'): boolean {
  const addressNat = kind === 'src' ? isSnat(e) : isDnat(e);
  const portNat = kind === 'src' ? isSpat(e) : isDpat(e);
  const natAddress = kind === 'src' ? e.reply.dst : e.reply.src;
  const natPort = kind === 'src' ? e.reply.dport : e.reply.sport;
  if (spec.address === undefined && spec.port === undefined) return addressNat || portNat;
  if (spec.address !== undefined && !(addressNat && natAddress === spec.address)) return false;
  if (spec.port !== undefined && !(portNat && natPort === spec.port)) return false;
  return true;
}

/** What the library's filter cannot say; undefined when nothing is left to check. */
function extraPredicate(args: CtArgs, forUpdate = false): ((e: ConntrackEntry) => boolean) | undefined {
  const checks: Array<(e: ConntrackEntry) => boolean> = [];
  const { icmp } = args;
  if (icmp.type !== undefined) checks.push((e) => e.original.icmpType === icmp.type);
  if (icmp.code !== undefined) checks.push((e) => e.original.icmpCode === icmp.code);
  if (icmp.id !== undefined) checks.push((e) => e.original.icmpId === icmp.id);
  if (args.secmark !== undefined && !forUpdate) checks.push((e) => e.secmark === args.secmark);
  if (args.id !== undefined) checks.push((e) => e.id === args.id);
  if (args.origZone !== undefined) checks.push((e) => (e.original.zone ?? 0) === args.origZone);
  if (args.replyZone !== undefined) checks.push((e) => (e.reply.zone ?? 0) === args.replyZone);
  if (args.label !== undefined) {
    const wanted = args.label;
    checks.push((e) => e.labels !== undefined && wanted.every((bit) => e.labels?.includes(bit)));
  }
  const { srcNat, dstNat, anyNat } = args;
  if (anyNat !== undefined) checks.push((e) => natMatches(e, anyNat, 'src') || natMatches(e, anyNat, 'dst'));
  if (srcNat !== undefined) checks.push((e) => natMatches(e, srcNat, 'src'));
  if (dstNat !== undefined) checks.push((e) => natMatches(e, dstNat, 'dst'));
  if (checks.length === 0) return undefined;
  return (e) => checks.every((check) => check(e));
}

function openHandle(args: CtArgs): Promise<Conntrack> {
  return Conntrack.open(netnsOption(args.netns));
}

// ---------------------------------------------------------------------------------------------

const nowMicroseconds = () => Math.round((performance.timeOrigin + performance.now()) * 1000);

/**
 * One expectation as text: the line (after `[seconds.micro]\t` with `-o timestamp`), or with
 * `-o xml` a `<flow>` element (`<when>` in it with `-o timestamp`); an event's type goes first.
 * -o extended, id and ktimestamp change nothing here, as in conntrack-tools.
 */
function expectationText(args: CtArgs, x: ConntrackExpectation, event?: ConntrackEventType): string {
  const stamp = args.output.has('timestamp');
  if (args.output.has('xml')) return formatExpectationXml(x, event, stamp ? new Date() : undefined);
  // libnetfilter_conntrack's "%9s " of [NEW], [UPDATE], [DESTROY].
  const type = event === undefined ? '' : `${`[${event.toUpperCase()}]`.padStart(9)} `;
  return `${stamp ? expectationTimestamp(nowMicroseconds()) : ''}${type}${formatExpectationLine(x)}`;
}

async function listExpectations(args: CtArgs, io: CommandIo): Promise<number> {
  const ct = await openHandle(args);
  let shown = 0;
  try {
    const all = await ct.expectations(args.family === undefined ? undefined : { family: args.family });
    shown = all.length;
    if (args.output.has('json')) await put(io, `${toJson(all, 2)}\n`);
    else if (args.output.has('jsonl')) await put(io, all.map((x) => `${toJson(x)}\n`).join(''));
    else if (all.length > 0) {
      const xml = args.output.has('xml');
      await put(io, (xml ? XML_EXPECT_HEADER : '') + all.map((x) => `${expectationText(args, x)}\n`).join('') + (xml ? XML_EXPECT_FOOTER : ''));
    }
  } finally {
    await ct.close();
  }
  say(io, `${shown} expectations have been shown.`);
  return 0;
}

/** `-s -d -p --sport --dport` (the master with -I expect, the expected connection with -G and -D) as a tuple. */
function expectTuple(args: CtArgs, t: { src?: string; dst?: string; sport?: number; dport?: number }): TupleSpec {
  const protocol = args.protocol as { name: string; number: number };
  if (!PORT_PROTOCOL_NUMBERS.has(protocol.number)) {
    throw unsupported(`-p ${protocol.name} with the expectation table (only TCP, UDP, UDP-Lite, SCTP and DCCP)`);
  }
  return { protocol: protocol.number, src: t.src as string, dst: t.dst as string, sport: t.sport as number, dport: t.dport as number };
}

/** `-G expect`: the expectation a connection with this tuple would match; no message, as conntrack-tools. */
async function getExpectation(args: CtArgs, io: CommandIo): Promise<number> {
  const tuple = expectTuple(args, args.original);
  const ct = await openHandle(args);
  let found: ConntrackExpectation | undefined;
  try {
    found = await ct.getExpectation(tuple);
  } finally {
    await ct.close();
  }
  if (found === undefined) throw new CtFailure('Operation failed: No such file or directory');
  await put(io, `${expectationText(args, found)}\n`);
  return 0;
}

/**
 * `-D expect`: deletes the expectation a connection with this tuple would match. conntrack-tools
 * 1.4.7 then says "0 expectations have been shown." and exits 1 (it never counts the delete); we
 * say and do the same, so a script sees what it saw before. Nothing to delete: ENOENT's message.
 */
async function deleteExpectation(args: CtArgs, io: CommandIo): Promise<number> {
  const tuple = expectTuple(args, args.original);
  const ct = await openHandle(args);
  let deleted: boolean;
  try {
    deleted = await ct.deleteExpectation(tuple);
  } finally {
    await ct.close();
  }
  if (!deleted) throw new CtFailure('Operation failed: No such file or directory');
  say(io, '0 expectations have been shown.');
  return EXIT_OTHER_PROBLEM;
}

/**
 * `-I expect`: the master (`-s -d -p --sport --dport`) must exist and have a helper; the kernel
 * keeps the mask's source address and port (the destination's are all ones). Silent on success.
 */
async function createExpectation(args: CtArgs): Promise<number> {
  const master = expectTuple(args, args.original);
  const tuple = expectTuple(args, args.expect.tuple);
  const m = args.expect.mask;
  const mask = { src: m.src as string, dst: m.dst as string, sport: m.sport as number, dport: m.dport as number };
  const ct = await openHandle(args);
  try {
    await ct.createExpectation({ master, tuple, mask, timeout: args.timeout as number });
  } catch (err) {
    // conntrack-tools' words for these (its err2str, else strerror).
    const words: Record<string, string> = {
      ERR_CONNTRACK_EXISTS: 'File exists', ERR_CONNTRACK_NOT_FOUND: 'master conntrack not found', ERR_CONNTRACK_UNAVAILABLE: 'Operation not supported',
    };
    if (err instanceof ConntrackError && words[err.code] !== undefined) throw new CtFailure(`Operation failed: ${words[err.code]}`);
    throw err;
  } finally {
    await ct.close();
  }
  return 0;
}

async function list(args: CtArgs, io: CommandIo): Promise<number> {
  if (args.table === 'expect') return listExpectations(args, io);
  const filter = entryFilter(args);
  if (args.zero) {
    if (Object.keys(filter).length > 0 || args.secmark !== undefined || args.label !== undefined) {
      throw new CtParameterError("Can't use -z with filtering parameters");
    }
  }
  // The table's own dump, or the kernel's dying or unconfirmed list; -z reads and zeroes counters
  // of the table (conntrack-tools takes -z with the lists too, and lists them as they are).
  const dump = args.table === 'conntrack' ? { zeroCounters: args.zero } : { table: args.table };
  if (args.output.has('save')) throw unsupported('-o save');
  const extra = extraPredicate(args);
  const flags = lineFlags(args);
  const xml = args.output.has('xml');
  let shown = 0;
  const ct = await openHandle(args);
  try {
    const plain = !xml && !args.output.has('json') && !args.output.has('jsonl') && !args.output.has('ktimestamp') && !args.output.has('labels');
    if (plain && extra === undefined) {
      // The fast path: lines written from the records, no entry objects.
      for await (const chunk of ct.text(filter, { extended: flags.layer3, id: flags.id }, { batchSize: TEXT_BATCH, ...dump })) {
        shown += chunk.count;
        if (!io.stdout.write(chunk.text)) await new Promise((resolve) => io.stdout.once('drain', resolve));
      }
    } else if (args.output.has('json')) {
      const all: ConntrackEntry[] = [];
      for await (const batch of ct.batches(filter, dump)) for (const e of batch) if (extra === undefined || extra(e)) all.push(e);
      shown = all.length;
      await put(io, `${toJson(all, 2)}\n`);
    } else {
      const jsonl = args.output.has('jsonl');
      for await (const batch of ct.batches(filter, dump)) {
        const now = nowSeconds();
        let text = '';
        for (const e of batch) {
          if (extra !== undefined && !extra(e)) continue;
          if (xml && shown === 0) text += XML_HEADER;
          text += jsonl ? toJson(e) : xml ? formatXmlFlow(e, now, flags) : formatLine(e, flags, now);
          text += '\n';
          shown++;
        }
        if (text !== '') await put(io, text);
      }
      if (xml && shown > 0) await put(io, XML_FOOTER);
    }
  } finally {
    await ct.close();
  }
  say(io, `${shown} flow entries have been shown.`);
  return 0;
}

function tupleSpec(args: CtArgs, direction: 'original' | 'reply'): TupleSpec | undefined {
  const t = args[direction];
  if (t.src === undefined || t.dst === undefined || args.protocol === undefined) return undefined;
  const spec: TupleSpec = { protocol: args.protocol.number, src: t.src, dst: t.dst };
  if (t.sport !== undefined) spec.sport = t.sport;
  if (t.dport !== undefined) spec.dport = t.dport;
  if (args.protocol.number === 1 || args.protocol.number === 58) {
    spec.icmpType = args.icmp.type;
    spec.icmpCode = args.icmp.code;
    spec.icmpId = args.icmp.id ?? 0;
  }
  return spec;
}

function lineOf(args: CtArgs, e: ConntrackEntry): string {
  if (args.output.has('json') || args.output.has('jsonl')) return toJson(e);
  if (args.output.has('xml')) return formatXmlFlow(e, nowSeconds(), lineFlags(args));
  return formatLine(e, lineFlags(args), nowSeconds());
}

async function get(args: CtArgs, io: CommandIo): Promise<number> {
  if (args.table === 'expect') return getExpectation(args, io);
  const original = tupleSpec(args, 'original');
  const reply = tupleSpec(args, 'reply');
  const ct = await openHandle(args);
  let entry: ConntrackEntry | undefined;
  try {
    entry = await ct.get(original !== undefined ? original : { reply: reply as TupleSpec });
  } finally {
    await ct.close();
  }
  if (entry === undefined) throw new CtFailure("Operation failed: such conntrack doesn't exist");
  await put(io, `${lineOf(args, entry)}\n`);
  say(io, '1 flow entries have been shown.');
  return 0;
}

async function create(args: CtArgs, io: CommandIo): Promise<number> {
  if (args.command === 'add') throw unsupported('-A/--add');
  if (args.table === 'expect') return createExpectation(args);
  const nat = (option: NatOption | undefined, name: string): NatSpec | undefined => {
    if (option === undefined) return undefined;
    if (option.address === undefined) throw new CtParameterError(`--${name} needs an address (IP[:PORT]) with -I`);
    return option.port === undefined ? { address: option.address } : { address: option.address, port: option.port };
  };
  const srcNat = nat(args.srcNat, 'src-nat');
  const dstNat = nat(args.dstNat, 'dst-nat');
  if (args.origZone !== undefined || args.replyZone !== undefined) throw unsupported('--orig-zone/--reply-zone with -I');
  const original = tupleSpec(args, 'original');
  const reply = tupleSpec(args, 'reply');
  const common = {
    timeout: args.timeout as number,
    ...(args.mark !== undefined ? { mark: args.mark.value } : {}),
    ...(args.zone !== undefined ? { zone: args.zone } : {}),
    ...(args.state !== undefined ? { tcpState: args.state as NewEntry['tcpState'] } : {}),
    ...(args.status !== undefined ? { flags: args.status.set } : {}),
    ...(args.labelAdd !== undefined ? { labels: args.labelAdd } : {}),
    ...(srcNat !== undefined ? { srcNat } : {}),
    ...(dstNat !== undefined ? { dstNat } : {}),
  };
  const entry: NewEntry = original !== undefined ? { ...common, original, ...(reply !== undefined ? { reply } : {}) } : { ...common, reply: reply as TupleSpec };
  const ct = await openHandle(args);
  try {
    await ct.create(entry);
  } finally {
    await ct.close();
  }
  say(io, '1 flow entries have been created.');
  return 0;
}

async function remove(args: CtArgs, io: CommandIo): Promise<number> {
  if (args.table === 'expect') return deleteExpectation(args, io);
  const filter = entryFilter(args);
  const extra = extraPredicate(args);
  let deleted = 0;
  const ct = await openHandle(args);
  try {
    // deleteMatching()'s walk (a dump, then one delete per entry), kept here because
    // conntrack-tools prints every entry it deletes.
    for await (const e of ct.entries(filter)) {
      if (extra !== undefined && !extra(e)) continue;
      if (await ct.delete(e)) {
        await put(io, `${lineOf(args, e)}\n`);
        deleted++;
      }
    }
  } finally {
    await ct.close();
  }
  say(io, `${deleted} flow entries have been deleted.`);
  return deleted === 0 ? EXIT_OTHER_PROBLEM : 0;
}

function labelChanges(args: CtArgs, e: ConntrackEntry): EntryChanges['labels'] | undefined {
  const current = new Set(e.labels ?? []);
  if (args.labelAdd !== undefined) {
    const add = args.labelAdd.filter((bit) => !current.has(bit));
    return add.length > 0 ? { add } : undefined;
  }
  if (args.labelDel !== undefined) {
    if (e.labels === undefined) return undefined;
    const remove = args.labelDel === 'all' ? [...current] : args.labelDel.filter((bit) => current.has(bit));
    return remove.length > 0 ? { remove } : undefined;
  }
  return undefined;
}

async function update(args: CtArgs, io: CommandIo): Promise<number> {
  if (args.status !== undefined) throw unsupported('-u/--status with -U');
  const filter = entryFilter(args, true);
  const extra = extraPredicate(args, true);
  let updated = 0;
  const ct = await openHandle(args);
  try {
    for await (const e of ct.entries(filter)) {
      if (extra !== undefined && !extra(e)) continue;
      const changes: EntryChanges = {};
      if (args.mark !== undefined) {
        const mark = ((e.mark & ~args.mark.mask) ^ args.mark.value) >>> 0;
        if (mark !== e.mark) changes.mark = mark;
      }
      if (args.timeout !== undefined) changes.timeout = args.timeout;
      const labels = labelChanges(args, e);
      if (labels !== undefined) changes.labels = labels;
      // Like conntrack-tools, an entry the change would leave as it is counts as not updated.
      if (Object.keys(changes).length === 0) continue;
      let done: boolean;
      try {
        done = await ct.update(e, changes);
      } catch (err) {
        // An entry without label room (no `ct label` rule): conntrack-tools skips it too.
        if (changes.labels !== undefined && e.labels === undefined && err instanceof ConntrackError && err.code === 'ERR_CONNTRACK_UNAVAILABLE') continue;
        throw err;
      }
      if (!done) continue;
      const now = await ct.get(e);
      if (now === undefined) continue;
      await put(io, `${lineOf(args, now)}\n`);
      updated++;
    }
  } finally {
    await ct.close();
  }
  say(io, `${updated} flow entries have been updated.`);
  return updated === 0 ? EXIT_OTHER_PROBLEM : 0;
}

async function flush(args: CtArgs, io: CommandIo): Promise<number> {
  const ct = await openHandle(args);
  try {
    if (args.table === 'expect') await ct.flushExpectations();
    else await ct.flush(args.family === undefined ? {} : { family: args.family });
  } finally {
    await ct.close();
  }
  say(io, args.table === 'expect' ? 'expectation table has been emptied.' : 'connection tracking table has been emptied.');
  return 0;
}

async function count(args: CtArgs, io: CommandIo): Promise<number> {
  const ct = await openHandle(args);
  try {
    await put(io, `${args.table === 'expect' ? (await ct.expectations()).length : (await ct.count()).entries}\n`);
  } finally {
    await ct.close();
  }
  return 0;
}

async function stats(args: CtArgs, io: CommandIo): Promise<number> {
  const ct = await openHandle(args);
  try {
    if (args.table === 'expect') await put(io, formatExpectStats((await ct.expectationStats()).perCpu));
    else await put(io, formatCpuStats((await ct.stats()).perCpu));
  } finally {
    await ct.close();
  }
  return 0;
}

const MIN_EVENT_BUFFER = 4096;
const MAX_EVENT_BUFFER = 1 << 30;

async function events(args: CtArgs, io: CommandIo): Promise<number> {
  if (args.table === 'expect') return expectationEvents(args, io);
  if (args.output.has('json')) throw new CtParameterError('events are a stream: use -o jsonl');
  if (args.output.has('save')) throw unsupported('-o save');
  const filter = entryFilter(args);
  const extra = extraPredicate(args);
  const flags = lineFlags(args);
  const xml = args.output.has('xml');
  const jsonl = args.output.has('jsonl');
  const stamp = args.output.has('timestamp') && !xml && !jsonl;
  let receiveBufferBytes: number | undefined;
  if (args.bufferSize !== undefined) {
    receiveBufferBytes = Math.min(MAX_EVENT_BUFFER, Math.max(MIN_EVENT_BUFFER, args.bufferSize));
    // The kernel doubles what SO_RCVBUFFORCE asks for, and conntrack-tools prints what it reads back.
    io.stderr.write(`NOTICE: Netlink socket buffer size has been set to ${receiveBufferBytes * 2} bytes.\n`);
  }
  let shown = 0;
  let headerDone = false;
  const subscribe = (ct: Conntrack, signal: AbortSignal) => ct.events(filter, {
    signal,
    ...(args.events !== undefined ? { types: args.events } : {}),
    ...(receiveBufferBytes !== undefined ? { receiveBufferBytes } : {}),
  });
  await followEvents(args, subscribe, async (event) => {
    if (event.type === 'overflow') {
      io.stderr.write(OVERFLOW_WARNING);
      return;
    }
    if (extra !== undefined && !extra(event.entry)) return;
    let text: string;
    if (jsonl) text = toJson(event);
    else if (xml) {
      text = (headerDone ? '' : XML_HEADER) + formatXmlFlow(event.entry, nowSeconds(), flags, event.type, args.output.has('timestamp') ? new Date() : undefined);
      headerDone = true;
    } else {
      text = (stamp ? eventTimestamp(Math.round((performance.timeOrigin + performance.now()) * 1000)) : '') + formatLine(event.entry, flags, nowSeconds(), event.type);
    }
    await put(io, `${text}\n`);
    shown++;
  });
  if (headerDone) await put(io, XML_FOOTER);
  say(io, `${shown} flow events have been shown.`);
  return 0;
}

/**
 * Reads a subscription until it ends or Ctrl-C/SIGTERM stops it (conntrack-tools then reports
 * what it showed), handing each item to `each`; the handle is closed last.
 */
async function followEvents<T>(args: CtArgs, subscribe: (ct: Conntrack, signal: AbortSignal) => AsyncIterable<T>,
  each: (item: T) => Promise<void>): Promise<void> {
  const stop = stopOnTermination();
  try {
    const ct = await openHandle(args);
    try {
      for await (const item of subscribe(ct, stop.signal)) await each(item);
    } catch (err) {
      if ((err as Error).name !== 'AbortError') throw err;
    } finally {
      await ct.close();
    }
  } finally {
    stop.dispose();
  }
}

const OVERFLOW_WARNING = 'WARNING: We have hit ENOBUFS! We are losing events.\nThis message means that the current netlink socket buffer size is too small.\nPlease, check --buffer-size in conntrack(8) manpage.\n';

/** `-E expect`: the expectation events, as conntrack-tools prints them. */
async function expectationEvents(args: CtArgs, io: CommandIo): Promise<number> {
  if (args.output.has('json')) throw new CtParameterError('events are a stream: use -o jsonl');
  const jsonl = args.output.has('jsonl');
  const xml = args.output.has('xml') && !jsonl;
  let shown = 0;
  const subscribe = (ct: Conntrack, signal: AbortSignal) =>
    ct.expectationEvents({ signal, ...(args.events !== undefined ? { types: args.events } : {}) });
  await followEvents(args, subscribe, async (event) => {
    if (event.type === 'overflow') {
      io.stderr.write(OVERFLOW_WARNING);
      return;
    }
    const text = jsonl ? toJson(event) : expectationText(args, event.expectation, event.type);
    await put(io, `${xml && shown === 0 ? XML_EXPECT_HEADER : ''}${text}\n`);
    shown++;
  });
  if (xml && shown > 0) await put(io, XML_EXPECT_FOOTER);
  say(io, `${shown} expectation events have been shown.`);
  return 0;
}

const HELP = `Command line interface for the connection tracking system, in conntrack-tools' syntax.
Usage: conntrack [commands] [options]

Commands:
  -L [table] [options]		List conntrack or expectation table
  -G [table] parameters		Get conntrack or expectation
  -D [table] parameters		Delete conntrack or expectation
  -I [table] parameters		Create a conntrack or expectation
  -U [table] parameters		Update a conntrack
  -E [table] [options]		Show events
  -F [table]			Flush table
  -C [table]			Show counter
  -S				Show statistics

Tables: conntrack, expect, dying, unconfirmed
Expectation parameters (-I expect): --tuple-src ip, --tuple-dst ip, --mask-src ip, --mask-dst ip,
  and after -p: --tuple-port-src, --tuple-port-dst, --mask-port-src, --mask-port-dst

Output (-o): extended, id, timestamp, ktimestamp, labels, xml, userspace; and json, jsonl.
Ours: --netns PATH|PID. This package's own commands: conntrack --help.
`;

const COMMANDS = { list, get, create, add: create, delete: remove, update, flush, count, stats, event: events } as const;

/** Runs conntrack-tools' syntax; returns the exit status. */
export async function runConntrackTools(argv: string[], io: CommandIo): Promise<number> {
  try {
    const args = parseConntrackArgs(argv);
    for (const warning of args.warnings) io.stderr.write(`${warning}\n`);
    if (args.command === 'version') {
      await put(io, 'conntrack (npm conntrack) speaking conntrack-tools v1.4.7 syntax\n');
      return 0;
    }
    if (args.command === 'help') {
      await put(io, HELP);
      return 0;
    }
    return await COMMANDS[args.command](args, io);
  } catch (error) {
    if (error instanceof CtParameterError) {
      say(io, error.message);
      io.stderr.write(`${TRY_HELP}\n`);
      return EXIT_PARAMETER_PROBLEM;
    }
    if (error instanceof CtFailure) {
      say(io, error.message);
      return EXIT_OTHER_PROBLEM;
    }
    if (error instanceof ConntrackError) {
      say(io, `Operation failed: ${operationMessage(error)}`);
      return error.code.startsWith('ERR_CONNTRACK_INVALID') ? EXIT_PARAMETER_PROBLEM : EXIT_OTHER_PROBLEM;
    }
    say(io, `unexpected error: ${(error as Error)?.stack ?? String(error)}`);
    return EXIT_OTHER_PROBLEM;
  }
}

/** conntrack-tools' wording where it has one for the same failure. */
function operationMessage(error: ConntrackError): string {
  if (error.code === 'ERR_CONNTRACK_EXISTS') return 'Such conntrack exists, try -U to update';
  if (error.code === 'ERR_CONNTRACK_PERMISSION') return 'sorry, you must be root or get CAP_NET_ADMIN capability to do this';
  return error.message;
}
