/**
 * The handle: one ctnetlink socket in one network namespace, plus any dumps it runs
 * (each dump has its own socket and thread in native code).
 */
import { readFile } from 'node:fs/promises';
import { Readable } from 'node:stream';

import { abortError, closedError, ConntrackError, invalidArgument, resourceError } from '../base/errors.js';
import { compileFilter } from './filter.js';
import { netnsPath } from '../binding/netns.js';
import { binding, type NativeAttrPairs, type NativeBatch, type NativeCpuRow, type NativeDump, type NativeEntrySpec, type NativeError, type NativeHandle } from '../binding/native.js';
import { decodeBatch, decodeEventBatch } from './records.js';
import { Mirror, type MirrorOptions, type NativeMirror } from './mirror.js';
import { renderBatchText, type TextChunk, type TextLayout } from './text.js';
import { readSysctl, readSysctlWith, type NetnsFiles } from '../tuning/sysctl.js';
import { checkSummaryOptions, SummaryBuilder, summaryKeyNumbers, type Summary, type SummarizeOptions } from './summary.js';
import { AF_INET, AF_INET6, changesSpec, ENTRY_OP, newEntrySpec, targetSpec } from './entry-spec.js';
import { applyMany, deleteMatchingNative, type ItemSpecs } from './bulk.js';
import {
  decodeExpectationBatch, decodeExpectationEventBatch, EXPECTATION_OP, expectationDumpSpec, expectationTargetSpec, newExpectationSpec,
} from './expectations.js';
import type {
  BulkOptions, BulkResult, ConntrackEntry, ConntrackEvent, ConntrackEventType, ConntrackExpectation, Count, DeleteOptions, DeleteResult, EntryChanges,
  EntryTarget, EntryUpdate, ExpectationEvent, ExpectationFilter, ExpectationTarget, Family, GetOptions, NewEntry, NewExpectation, CpuCounterName,
  CpuCounters, CpuStats, EntriesOptions, EntryFilter, EventsOptions, ExpectCounterName, ExpectStats, NetnsSpec, OpenOptions, OverflowEvent, Stats,
} from '../base/types.js';
import type { NativeExpectationSpec } from '../binding/native.js';

/** CTA_STATS_* numbers (nfnetlink_conntrack.h) and the names conntrack -S prints. */
const CPU_COUNTERS: Record<number, CpuCounterName> = {
  1: 'searched', 2: 'found', 3: 'new', 4: 'invalid', 5: 'ignore', 6: 'delete', 7: 'delete_list',
  8: 'insert', 9: 'insert_failed', 10: 'drop', 11: 'early_drop', 12: 'error', 13: 'search_restart',
  14: 'clash_resolve', 15: 'chaintoolong',
};
const EXPECT_COUNTERS: Record<number, ExpectCounterName> = { 1: 'new', 2: 'create', 3: 'delete' };
const CTA_STATS_GLOBAL_ENTRIES = 1;
const CTA_STATS_GLOBAL_MAX_ENTRIES = 2;

const DEFAULT_BATCH_SIZE = 1024;
const MAX_BATCH_SIZE = 65536;
const DEFAULT_EVENT_BATCH_SIZE = 256;
/** Socket buffer for bursts while JS is busy (the in-process queue holds as many bytes again). */
const DEFAULT_EVENT_BUFFER_BYTES = 8 << 20;
const MAX_EVENT_BUFFER_BYTES = 1 << 30;
/** Where the buffer stops growing after overflows (without reliable delivery). */
const DEFAULT_MAX_EVENT_BUFFER_BYTES = 64 << 20;
/** A mirror's periodic resync when nf_conntrack_events is 2 (see MirrorOptions.resyncInterval). */
export const DEFAULT_RESYNC_INTERVAL_MS = 60_000;
const MAX_RESYNC_INTERVAL_MS = 2 ** 31 - 1;

// With nf_conntrack_events = 2 entries made before any listener never report their destroy.
async function defaultResyncInterval(netns: string | undefined): Promise<number> {
  const value = await readSysctl('nf_conntrack_events', netns === undefined ? {} : { netns }).catch(() => '2');
  return Number(value) === 2 ? DEFAULT_RESYNC_INTERVAL_MS : 0;
}

/** In NFNLGRP_CONNTRACK_* order (and NFNLGRP_CONNTRACK_EXP_*, three groups later). */
const EVENT_GROUP_TYPES: readonly ConntrackEventType[] = ['new', 'update', 'destroy'];
const EXPECTATION_GROUP_SHIFT = 3;
/** IPCTNL_MSG_CT_* dump requests for EntriesOptions.zeroCounters and .table. */
const DUMP_MESSAGE = { ctrZero: 3, dying: 6, unconfirmed: 7 } as const;

/** Maps an addon error to a ConntrackError a person can act on. */
export function toConntrackError(err: unknown, netns: string | undefined): ConntrackError {
  if (err instanceof ConntrackError) return err;
  // The binding's own checks of what lib hands it (lib validates first, so this is a lib bug).
  if (err instanceof TypeError || err instanceof RangeError) {
    return new ConntrackError('ERR_CONNTRACK_INVALID_ARGUMENT', `invalid argument: ${err.message}`, { cause: err });
  }
  const e = err as NativeError & { detail?: string };
  const errno = e?.errno;
  const syscall = e?.syscall ?? '';
  const where = netns ? `network namespace ${netns}` : 'this network namespace';
  const details = { errno, syscall, cause: err };
  if (e?.protocol) {
    return new ConntrackError('ERR_CONNTRACK_PROTOCOL', `the kernel sent a message this library cannot decode: ${e.detail ?? e.message}`, details);
  }
  const resource = resourceError(err, details);
  if (resource !== undefined) return resource;
  if (syscall === 'open netns') {
    if (errno === 2 /* ENOENT */) return new ConntrackError('ERR_CONNTRACK_NETNS', `network namespace ${netns} does not exist`, details);
    if (errno === 3 /* ESRCH */) return new ConntrackError('ERR_CONNTRACK_NETNS', `network namespace ${netns}: ${e.detail ?? 'no such process'}`, details);
    if (errno === 13 /* EACCES */ || errno === 1 /* EPERM */) {
      return new ConntrackError('ERR_CONNTRACK_PERMISSION', `cannot open network namespace ${netns}: run as root or grant CAP_SYS_ADMIN`, { ...details, capability: 'CAP_SYS_ADMIN' });
    }
    return new ConntrackError('ERR_CONNTRACK_NETNS', `${netns} is not a network namespace (${e.detail ?? e.message})`, details);
  }
  if (syscall === 'dup netns') {
    return new ConntrackError('ERR_CONNTRACK_NETNS', `cannot enter ${where} for a dump or subscription: the handle's descriptor of the namespace is no longer valid (${e.message}); open a new handle`, details);
  }
  if (syscall === 'setns') {
    return new ConntrackError('ERR_CONNTRACK_PERMISSION', `entering ${where} needs CAP_SYS_ADMIN (and CAP_NET_ADMIN there): run as root or grant both capabilities`, { ...details, capability: 'CAP_SYS_ADMIN' });
  }
  if (syscall.startsWith('socket') && (errno === 93 /* EPROTONOSUPPORT */ || errno === 97 /* EAFNOSUPPORT */)) {
    return new ConntrackError('ERR_CONNTRACK_UNAVAILABLE', 'this kernel has no netfilter netlink (CONFIG_NETFILTER_NETLINK): conntrack cannot be read', details);
  }
  if (syscall.startsWith('ctnetlink')) {
    if (errno === 1 /* EPERM */) {
      return new ConntrackError('ERR_CONNTRACK_PERMISSION', `reading conntrack in ${where} needs CAP_NET_ADMIN: run as root or grant CAP_NET_ADMIN`, { ...details, capability: 'CAP_NET_ADMIN' });
    }
    if (errno === 95 /* EOPNOTSUPP */ || errno === 2 /* ENOENT */) {
      return new ConntrackError('ERR_CONNTRACK_UNAVAILABLE', `conntrack is not available in ${where} (nf_conntrack and nf_conntrack_netlink must be loaded)`, details);
    }
  }
  if (syscall === 'subscribe to conntrack events') {
    // netlink_setsockopt(NETLINK_ADD_MEMBERSHIP) and nfnetlink_bind() both ask for CAP_NET_ADMIN.
    if (errno === 1 /* EPERM */) {
      return new ConntrackError('ERR_CONNTRACK_PERMISSION', `listening to conntrack events in ${where} needs CAP_NET_ADMIN: run as root or grant CAP_NET_ADMIN`, { ...details, capability: 'CAP_NET_ADMIN' });
    }
    if (errno === 2 /* ENOENT */ || errno === 95 /* EOPNOTSUPP */) {
      return new ConntrackError('ERR_CONNTRACK_UNAVAILABLE', `conntrack events are not available in ${where} (CONFIG_NF_CONNTRACK_EVENTS and nf_conntrack_netlink)`, details);
    }
  }
  const text = e?.message ?? String(err);
  return new ConntrackError('ERR_CONNTRACK_KERNEL', `conntrack request failed in ${where}: ${text}`, details);
}

/**
 * count()'s answer from the (attribute, value) pairs of a GET_STATS reply (the first `length`
 * values of `pairs`). CTA_STATS_GLOBAL_MAX_ENTRIES arrived in Linux 4.18: what a reply lacks is
 * read from procfs, inside `netns` (procfs shows the namespace of whoever reads it).
 */
/**
 * count()'s answer from GET_STATS pairs; kernels before 4.18 lack CTA_STATS_GLOBAL_MAX_ENTRIES, so
 * what is missing comes from procfs of the namespace (`readText`: through a handle's own namespace
 * descriptor; by default the namespace file is opened by path).
 */
export function countFromGlobalStats(
  pairs: ArrayLike<number>, length: number, netns: string | undefined, readText?: (path: string) => Promise<string>,
): Promise<Count> {
  let entries: number | undefined;
  let max: number | undefined;
  for (let i = 0; i + 1 < length; i += 2) {
    if (pairs[i] === CTA_STATS_GLOBAL_ENTRIES) entries = pairs[i + 1];
    else if (pairs[i] === CTA_STATS_GLOBAL_MAX_ENTRIES) max = pairs[i + 1];
  }
  if (entries !== undefined && max !== undefined) return Promise.resolve({ entries, max });
  return countFromProcfs(entries, max, netns, readText);
}

async function countFromProcfs(
  entries: number | undefined, max: number | undefined, netns: string | undefined, readText?: (path: string) => Promise<string>,
): Promise<Count> {
  if (entries === undefined) entries = await readProcNumber('/proc/sys/net/netfilter/nf_conntrack_count', netns, readText);
  if (max === undefined) max = await readProcNumber('/proc/sys/net/netfilter/nf_conntrack_max', netns, readText);
  return { entries, max };
}

async function readProcNumber(path: string, netns: string | undefined, readText?: (path: string) => Promise<string>): Promise<number> {
  try {
    const text = readText ? await readText(path) : netns ? await binding().netnsReadFile(netns, path) : await readFile(path, 'utf8');
    return Number.parseInt(text, 10);
  } catch (err) {
    throw toConntrackError(err, netns);
  }
}

function counterMaps<N extends string>(pairs: NativeAttrPairs, names: Record<number, N>) {
  const counters: Partial<Record<N, number>> = {};
  const unknown: Record<number, number> = {};
  for (let i = 0; i + 1 < pairs.length; i += 2) {
    const type = pairs[i] as number;
    const value = pairs[i + 1] as number;
    const name = names[type];
    if (name !== undefined) counters[name] = value;
    else unknown[type] = value;
  }
  return { counters, unknown };
}

function sum<K extends string | number>(rows: Array<Partial<Record<K, number>>>): Partial<Record<K, number>> {
  const total: Partial<Record<K, number>> = {};
  for (const row of rows) {
    for (const key of Object.keys(row) as K[]) total[key] = (total[key] ?? 0) + (row[key] ?? 0);
  }
  return total;
}

export interface DumpCounters {
  /** Conntrack messages received from the kernel. */
  messages: number;
  /** Entries handed to JS. */
  entries: number;
  /** Entries the kernel sent twice (a dump of a changing table) and that were dropped. */
  duplicates: number;
  /** Entries dropped by the native filter check. */
  filteredOut: number;
  /** The kernel applied (part of) the filter itself. */
  kernelFiltered: boolean;
  /** Events: how many times the kernel reported lost events (ENOBUFS). 0 for dumps. */
  overflows: number;
  /** Events: the socket's receive buffer now, as the kernel sizes it. */
  receiveBufferBytes?: number;
  /** Events: how many times the buffer grew after an overflow. */
  bufferGrowths?: number;
}

/**
 * One item at a time from a run's batches; ending the iteration ends the run. A `precondition`
 * that resolves to an error fails the run at the first next().
 */
function itemsOf<T>(run: DumpRun<T>, precondition?: Promise<Error | undefined>): EntryIterator<T> {
  let buffered: T[] = [];
  let index = 0;
  let pending = precondition;
  const iterator: EntryIterator<T> = {
    async next(): Promise<IteratorResult<T>> {
      if (pending !== undefined) {
        const failure = await pending;
        pending = undefined;
        if (failure !== undefined) run.close(failure);
      }
      run.throwIfFailed(); // abort or close also stop what is already buffered
      while (index >= buffered.length) {
        const batch = await run.next();
        if (batch === null) return { value: undefined, done: true };
        buffered = batch;
        index = 0;
      }
      return { value: buffered[index++] as T, done: false };
    },
    async return(): Promise<IteratorResult<T>> {
      run.close();
      buffered = [];
      return { value: undefined, done: true };
    },
    counters: () => run.counters(),
    [Symbol.asyncIterator]() {
      return this;
    },
  };
  return iterator;
}

/** The dump request EntriesOptions ask for (0: the table). */
function dumpMessage(options: EntriesOptions): number {
  const { zeroCounters, table } = options;
  if (zeroCounters !== undefined && typeof zeroCounters !== 'boolean') throw invalidArgument('zeroCounters must be a boolean');
  if (table !== undefined && table !== 'conntrack' && table !== 'dying' && table !== 'unconfirmed') {
    throw invalidArgument("table must be 'conntrack', 'dying' or 'unconfirmed'");
  }
  if (table === 'dying' || table === 'unconfirmed') {
    if (zeroCounters === true) throw invalidArgument(`zeroCounters is for the table, not the ${table} list`);
    return DUMP_MESSAGE[table];
  }
  return zeroCounters === true ? DUMP_MESSAGE.ctrZero : 0;
}

function checkBatchSize(batchSize: number): void {
  if (!Number.isInteger(batchSize) || batchSize < 1 || batchSize > MAX_BATCH_SIZE) {
    throw invalidArgument(`batchSize must be an integer from 1 to ${MAX_BATCH_SIZE}`);
  }
}

/** An async iterator over a dump's entries that can also report its counters. */
export interface EntryIterator<T> extends AsyncIterableIterator<T> {
  counters(): DumpCounters;
}

export class Conntrack implements AsyncDisposable {
  readonly netns: string | undefined;
  #native: NativeHandle | undefined;
  #inflight: Promise<unknown> | undefined;
  readonly #dumps = new Set<DumpRun<unknown>>();
  readonly #mirrors = new Set<Mirror>();
  /** count()'s request and where its answers land: no allocation per call for a poller. */
  readonly #stats: { call: () => number | Promise<NativeAttrPairs>; out: Uint32Array };

  private constructor(native: NativeHandle, netns: string | undefined) {
    this.#native = native;
    this.netns = netns;
    this.#stats = native.globalStatsFunction();
  }

  /** Opens a handle, in `options.netns` when given (a path or a pid), else in this process's namespace. */
  static async open(options: OpenOptions = {}): Promise<Conntrack> {
    if (options === null || typeof options !== 'object') throw invalidArgument('options must be an object');
    const path = options.netns === undefined ? undefined : netnsPath(options.netns);
    // A pid goes to native code as a pid: it pins the process while opening its namespace.
    const target = typeof options.netns === 'number' ? options.netns : path ?? null;
    try {
      return new Conntrack(await binding().open(target), path);
    } catch (err) {
      throw toConntrackError(err, path);
    }
  }

  get closed(): boolean {
    return this.#native === undefined;
  }

  /** The namespace as error messages name it. */
  get #where(): string {
    return this.netns ?? 'this network namespace';
  }

  #handle(): NativeHandle {
    if (this.#native === undefined) throw closedError();
    return this.#native;
  }

  /**
   * The files of this handle's namespace, reached through the handle's own descriptor: after the
   * namespace's path is deleted and made again, or its pid reused, the path names another
   * namespace, while the descriptor still holds this one.
   */
  #files(): NetnsFiles {
    const native = this.#handle();
    return {
      nsPath: this.netns ?? null,
      listDir: (path) => native.listDir(path),
      readFile: (path) => native.readFile(path),
      writeFile: (path, data) => native.writeFile(path, data),
      inode: async () => native.namespaceInode(),
    };
  }

  /** Runs one request; requests on a handle never overlap (the socket is shared). */
  async #request<T>(run: (native: NativeHandle) => T | Promise<T>): Promise<T> {
    while (this.#inflight) await this.#inflight.catch(() => undefined);
    let result: T | Promise<T>;
    try {
      result = run(this.#handle());
    } catch (err) {
      throw toConntrackError(err, this.netns);
    }
    return result instanceof Promise ? this.#track(result) : result;
  }

  /** Holds off other requests until `pending` (the kernel did not answer within the send) settles. */
  async #track<T>(pending: Promise<T>): Promise<T> {
    this.#inflight = pending;
    try {
      return await pending;
    } catch (err) {
      throw toConntrackError(err, this.netns);
    } finally {
      this.#inflight = undefined;
    }
  }

  /**
   * Entries in this namespace and the global limit: one IPCTNL_MSG_CT_GET_STATS request.
   * Not an async function: a poller's call usually completes inside the send, and then costs
   * one already-resolved promise instead of two async frames and their microtask hops.
   */
  count(): Promise<Count> {
    if (this.#native === undefined || this.#inflight !== undefined) return this.#countQueued();
    let answer: number | Promise<NativeAttrPairs>;
    try {
      answer = this.#stats.call();
    } catch (err) {
      return Promise.reject(toConntrackError(err, this.netns));
    }
    if (typeof answer !== 'number') return this.#track(answer).then((pairs) => this.#countFrom(pairs, pairs.length));
    return this.#countFrom(this.#stats.out, answer);
  }

  async #countQueued(): Promise<Count> {
    const answer = await this.#request<number | NativeAttrPairs>(() => this.#stats.call());
    return typeof answer === 'number' ? this.#countFrom(this.#stats.out, answer) : this.#countFrom(answer, answer.length);
  }

  // The procfs fallback reads through this handle's own namespace descriptor, not by path.
  #countFrom(pairs: ArrayLike<number>, length: number): Promise<Count> {
    const readText = this.netns ? (path: string) => this.#handle().readFile(path) : undefined;
    return countFromGlobalStats(pairs, length, this.netns, readText);
  }

  /** Per-CPU conntrack statistics (conntrack -S), and their sum. */
  async stats(): Promise<Stats> {
    const rows = await this.#request((native) => native.cpuStats(false));
    const perCpu: CpuStats[] = rows.map((row: NativeCpuRow) => ({ cpu: row.cpu, ...counterMaps(row.attrs, CPU_COUNTERS) }));
    return {
      perCpu,
      total: sum(perCpu.map((r) => r.counters)) as CpuCounters,
      totalUnknown: sum(perCpu.map((r) => r.unknown)) as Record<number, number>,
    };
  }

  /** Per-CPU expectation-table statistics (conntrack -S expect). */
  async expectationStats(): Promise<ExpectStats> {
    const rows = await this.#request((native) => native.cpuStats(true));
    const perCpu = rows.map((row: NativeCpuRow) => ({ cpu: row.cpu, ...counterMaps(row.attrs, EXPECT_COUNTERS) }));
    return { perCpu, total: sum(perCpu.map((r) => r.counters)), totalUnknown: sum(perCpu.map((r) => r.unknown)) as Record<number, number> };
  }

  /**
   * The entry with this original tuple, or this reply tuple (`{ reply }`) (IPCTNL_MSG_CT_GET);
   * undefined when there is none. `zeroCounters`: read its counters and zero them
   * (IPCTNL_MSG_CT_GET_CTRZERO).
   */
  async get(target: EntryTarget, options: GetOptions = {}): Promise<ConntrackEntry | undefined> {
    if (options === null || typeof options !== 'object') throw invalidArgument('options must be an object');
    const batch = await this.#entryRequest(options.zeroCounters === true ? ENTRY_OP.getZero : ENTRY_OP.get, targetSpec(target));
    return batch === null ? undefined : decodeBatch(batch)[0];
  }

  /**
   * Deletes one entry, like `conntrack -D` with a full tuple. Given an entry from entries(), only
   * that entry goes (its id must match): a newer entry with the same tuple stays. False when there
   * was none.
   */
  async delete(target: EntryTarget): Promise<boolean> {
    return (await this.#entryRequest(ENTRY_OP.delete, targetSpec(target))) !== null;
  }

  /**
   * Deletes every entry that matches `filter` (or any of several filters, in one scan), like
   * `conntrack -D` with filters, in native code: one filtered flush where the kernel can do
   * exactly that, else a dump whose thread queues a delete for each match (tuple, zone and id)
   * while another sends them in batches. Entries gone meanwhile count as `alreadyGone`.
   */
  async deleteMatching(filter: EntryFilter | readonly EntryFilter[], options: DeleteOptions = {}): Promise<DeleteResult> {
    return deleteMatchingNative(this.#handle(), filter, options, (err) => toConntrackError(err, this.netns));
  }

  /**
   * Creates every entry of `entries` (an iterable or async iterable of what create() takes), in
   * native batches sent many requests per sendmsg while the next batch is validated. A failing
   * item (bad input, a taken tuple) is reported with its index and code; the others go on.
   */
  async createMany(entries: Iterable<NewEntry> | AsyncIterable<NewEntry>, options: BulkOptions = {}): Promise<BulkResult<NewEntry>> {
    return this.#applyMany(ENTRY_OP.create, entries, (entry) => ({ first: newEntrySpec(entry) }), options);
  }

  /**
   * Applies every `{ target, changes }` of `updates` as update() would, in native batches. An
   * entry that is not there is a failure with code ERR_CONNTRACK_NOT_FOUND; the others go on.
   */
  async updateMany(updates: Iterable<EntryUpdate> | AsyncIterable<EntryUpdate>, options: BulkOptions = {}): Promise<BulkResult<EntryUpdate>> {
    return this.#applyMany(ENTRY_OP.update, updates, (update) => {
      if (update === null || typeof update !== 'object') throw invalidArgument('an update must be { target, changes }');
      const spec = changesSpec(update.target, update.changes);
      // As update(): labels first, alone, so a refusal leaves the entry as it was.
      if (spec.labels !== undefined && (spec.mark !== undefined || spec.timeout !== undefined)) {
        const { mark, timeout, labels, labelsMask, ...entry } = spec;
        const rest: typeof spec = { ...entry };
        if (mark !== undefined) rest.mark = mark;
        if (timeout !== undefined) rest.timeout = timeout;
        return { first: { ...entry, labels, labelsMask }, then: rest };
      }
      return { first: spec };
    }, options);
  }

  async #applyMany<T>(op: number, items: Iterable<T> | AsyncIterable<T>, toSpecs: (item: T) => ItemSpecs, options: BulkOptions): Promise<BulkResult<T>> {
    let bulk;
    try {
      bulk = this.#handle().openBulk();
    } catch (err) {
      throw toConntrackError(err, this.netns);
    }
    try {
      return await applyMany(bulk, op, items, toSpecs, options, (err) => toConntrackError(err, this.netns));
    } finally {
      bulk.close();
    }
  }

  /** Changes the mark, timeout or labels of an existing entry (`conntrack -U`); false when there was none. */
  async update(target: EntryTarget, changes: EntryChanges): Promise<boolean> {
    const spec = changesSpec(target, changes);
    try {
      // The kernel applies mark and timeout before labels and does not undo them when labels
      // fail: send labels first, alone, so a refusal leaves the entry as it was.
      if (spec.labels !== undefined && (spec.mark !== undefined || spec.timeout !== undefined)) {
        const { mark, timeout, labels, labelsMask, ...entry } = spec;
        if ((await this.#entryRequest(ENTRY_OP.update, { ...entry, labels, labelsMask })) === null) return false;
        const rest: NativeEntrySpec = { ...entry };
        if (mark !== undefined) rest.mark = mark;
        if (timeout !== undefined) rest.timeout = timeout;
        return (await this.#entryRequest(ENTRY_OP.update, rest)) !== null;
      }
      return (await this.#entryRequest(ENTRY_OP.update, spec)) !== null;
    } catch (err) {
      // nf_connlabels_replace(): the entry has no label storage, which the kernel adds only
      // while a rule in the namespace uses `ct label`.
      if (err instanceof ConntrackError && err.errno === 28 /* ENOSPC */ && spec.labels !== undefined) {
        throw new ConntrackError('ERR_CONNTRACK_UNAVAILABLE', `this entry has no room for labels in ${this.#where}: the kernel keeps labels only while a rule there uses \`ct label\``, { errno: 28, syscall: err.syscall, cause: err });
      }
      throw err;
    }
  }

  /** Creates an entry (`conntrack -I`); ERR_CONNTRACK_EXISTS when its tuple is taken. */
  async create(entry: NewEntry): Promise<void> {
    const spec = newEntrySpec(entry);
    try {
      await this.#entryRequest(ENTRY_OP.create, spec);
    } catch (err) {
      if (err instanceof ConntrackError && err.errno === 17 /* EEXIST */) {
        throw new ConntrackError('ERR_CONNTRACK_EXISTS', `an entry with this tuple exists already in ${this.#where}`, { errno: 17, syscall: err.syscall, cause: err });
      }
      throw err;
    }
  }

  /** Deletes every entry of this namespace (of one family when given), like `conntrack -F`. */
  async flush(options: { family?: Family } = {}): Promise<void> {
    if (options === null || typeof options !== 'object') throw invalidArgument('options must be an object');
    const family = options.family === undefined ? 0 : options.family === 'ipv4' ? AF_INET : options.family === 'ipv6' ? AF_INET6 : -1;
    if (family < 0) throw invalidArgument("family must be 'ipv4' or 'ipv6'");
    await this.#request((native) => native.flush(family));
  }

  /** The expectations (`conntrack -L expect`), of one master when the filter names it. */
  async expectations(filter?: ExpectationFilter): Promise<ConntrackExpectation[]> {
    const spec = expectationDumpSpec(filter);
    const batch = await this.#expectationRequest(EXPECTATION_OP.dump, spec);
    let list = batch === null ? [] : decodeExpectationBatch(batch);
    const protocol = filter?.protocol;
    if (protocol !== undefined) {
      list = list.filter((e) => (typeof protocol === 'number' ? e.tuple.protocolNumber === protocol : e.tuple.protocol === protocol));
    }
    if (filter?.helper !== undefined) list = list.filter((e) => e.helper === filter.helper);
    return list;
  }

  /** The expectation a connection with this tuple would match (its id too, given one), or undefined. */
  async getExpectation(target: ExpectationTarget): Promise<ConntrackExpectation | undefined> {
    const batch = await this.#expectationRequest(EXPECTATION_OP.get, expectationTargetSpec(target));
    return batch === null ? undefined : decodeExpectationBatch(batch)[0];
  }

  /**
   * Creates an expectation (`conntrack -I expect`): its master must exist and have a helper (or
   * `helper` names one). ERR_CONNTRACK_EXISTS when the tuple is expected already,
   * ERR_CONNTRACK_NOT_FOUND without the master.
   */
  async createExpectation(expectation: NewExpectation): Promise<void> {
    const spec = newExpectationSpec(expectation);
    try {
      await this.#request((native) => native.expectationRequest(EXPECTATION_OP.create, spec));
    } catch (err) {
      const details = err instanceof ConntrackError ? { errno: err.errno, syscall: err.syscall, cause: err } : { cause: err };
      if (err instanceof ConntrackError && err.errno === 17 /* EEXIST */) {
        throw new ConntrackError('ERR_CONNTRACK_EXISTS', `an expectation with this tuple exists already in ${this.#where}`, details);
      }
      if (err instanceof ConntrackError && err.errno === 2 /* ENOENT */) {
        throw new ConntrackError('ERR_CONNTRACK_NOT_FOUND', `the master connection does not exist in ${this.#where}`, details);
      }
      if (err instanceof ConntrackError && err.errno === 95 /* EOPNOTSUPP */) {
        const why = spec.helper === undefined ? 'the master connection has no helper' : `the helper ${spec.helper} is unknown here, or the master has no helper`;
        throw new ConntrackError('ERR_CONNTRACK_UNAVAILABLE', `${why} in ${this.#where}: expectations belong to a helper's connection (an nft \`ct helper\` rule assigns one)`, details);
      }
      throw err;
    }
  }

  /** Deletes the expectation matching this tuple; false when there is none. */
  async deleteExpectation(target: ExpectationTarget): Promise<boolean> {
    const spec = expectationTargetSpec(target);
    delete spec.id; // the kernel checks a delete's id against the wrong value (native/expectation.cc)
    return (await this.#expectationRequest(EXPECTATION_OP.delete, spec)) !== null;
  }

  /** Deletes every expectation of this namespace, or those of one helper (`conntrack -F expect`). */
  async flushExpectations(options: { helper?: string } = {}): Promise<void> {
    if (options === null || typeof options !== 'object') throw invalidArgument('options must be an object');
    const spec: NativeExpectationSpec = { family: 0 };
    if (options.helper !== undefined) {
      if (typeof options.helper !== 'string' || !/^[\w.-]{1,15}$/.test(options.helper)) throw invalidArgument('helper must be a helper name');
      spec.helper = options.helper;
    }
    await this.#request((native) => native.expectationRequest(EXPECTATION_OP.delete, spec));
  }

  /** Expectation events as they happen (`conntrack -E expect`), until the iteration ends, `signal` aborts or the handle closes. */
  expectationEvents(options: EventsOptions = {}): EntryIterator<ExpectationEvent | OverflowEvent> {
    return this.#events(undefined, options, true, decodeExpectationEventBatch);
  }

  /** An expectation request; null when the kernel has no such expectation (ENOENT). */
  async #expectationRequest(op: number, spec: NativeExpectationSpec): Promise<NativeBatch | null> {
    try {
      return await this.#request((native) => native.expectationRequest(op, spec));
    } catch (err) {
      if (err instanceof ConntrackError && err.errno === 2 /* ENOENT */ && err.syscall?.startsWith('ctnetlink')) return null;
      throw err;
    }
  }

  /** An entry request; null when the kernel has no such entry (ENOENT). */
  async #entryRequest(op: number, spec: NativeEntrySpec): Promise<NativeBatch | null> {
    try {
      return await this.#request((native) => native.entryRequest(op, spec));
    } catch (err) {
      if (err instanceof ConntrackError && err.errno === 2 /* ENOENT */ && err.syscall?.startsWith('ctnetlink')) return null;
      throw err;
    }
  }

  /**
   * Every entry that matches `filter`, streamed: batches come from a native thread, and the
   * kernel dump pauses while the consumer does not ask for more.
   */
  entries(filter?: EntryFilter, options: EntriesOptions = {}): EntryIterator<ConntrackEntry> {
    return itemsOf(this.#startDump(filter, options, decodeBatch));
  }

  /**
   * The table's events as they happen (new, update, destroy), matching `filter`, until the
   * iteration ends, `signal` aborts or the handle closes. Lost events are never silent: an
   * `{ type: 'overflow' }` item stands where they were lost.
   */
  events(filter?: EntryFilter, options: EventsOptions = {}): EntryIterator<ConntrackEvent | OverflowEvent> {
    return this.#events(filter, options, false, decodeEventBatch);
  }

  #events<T>(filter: EntryFilter | undefined, options: EventsOptions, expectations: boolean, decode: (batch: NativeBatch) => Array<T | OverflowEvent>): EntryIterator<T | OverflowEvent> {
    if (options === null || typeof options !== 'object') throw invalidArgument('options must be an object');
    const batchSize = options.batchSize ?? DEFAULT_EVENT_BATCH_SIZE;
    checkBatchSize(batchSize);
    const receiveBufferBytes = options.receiveBufferBytes ?? DEFAULT_EVENT_BUFFER_BYTES;
    if (!Number.isInteger(receiveBufferBytes) || receiveBufferBytes < 4096 || receiveBufferBytes > MAX_EVENT_BUFFER_BYTES) {
      throw invalidArgument(`receiveBufferBytes must be an integer from 4096 to ${MAX_EVENT_BUFFER_BYTES}`);
    }
    const maxReceiveBufferBytes = options.maxReceiveBufferBytes ?? Math.max(DEFAULT_MAX_EVENT_BUFFER_BYTES, receiveBufferBytes);
    if (!Number.isInteger(maxReceiveBufferBytes) || maxReceiveBufferBytes < receiveBufferBytes || maxReceiveBufferBytes > MAX_EVENT_BUFFER_BYTES) {
      throw invalidArgument(`maxReceiveBufferBytes must be an integer from receiveBufferBytes to ${MAX_EVENT_BUFFER_BYTES}`);
    }
    if (options.reliable !== undefined && typeof options.reliable !== 'boolean') throw invalidArgument('reliable must be a boolean');
    const reliable = options.reliable === true;
    const types = options.types ?? EVENT_GROUP_TYPES;
    if (!Array.isArray(types) || types.length === 0 || types.some((t) => !EVENT_GROUP_TYPES.includes(t))) {
      throw invalidArgument(`types must be a non-empty list of ${EVENT_GROUP_TYPES.join(', ')}`);
    }
    // NFNLGRP_CONNTRACK_NEW, _UPDATE, _DESTROY are groups 1, 2, 3 (the expectation groups 4, 5, 6): bit group - 1.
    const shift = expectations ? EXPECTATION_GROUP_SHIFT : 0;
    const groups = types.reduce((bits, t) => bits | (1 << (EVENT_GROUP_TYPES.indexOf(t) + shift)), 0);
    // Events are filtered in native code only: the kernel has no filter for multicast groups.
    const compiled = compileFilter(filter, false);
    // An overflow item says how large the buffer is after it (it may just have grown).
    let dump: NativeDump | undefined;
    const withBufferSize = (batch: NativeBatch): Array<T | OverflowEvent> => {
      const items = decode(batch);
      const first = items[0] as OverflowEvent | undefined;
      if (batch.overflowsBefore > 0 && first?.type === 'overflow') first.receiveBufferBytes = dump?.counters().receiveBufferBytes ?? 0;
      return items;
    };
    const run = this.#startRun<T | OverflowEvent>(options.signal, withBufferSize, (native) => {
      dump = native.startEvents(compiled, batchSize, groups, receiveBufferBytes, reliable, maxReceiveBufferBytes, expectations);
      return dump;
    });
    // With net.netfilter.nf_conntrack_events = 0 the kernel sends nothing at all: say so at the
    // first next() instead of waiting forever. Checked beside the subscription, which is already
    // listening, so nothing is missed meanwhile; a setting that cannot be read makes no claim.
    const where = this.#where;
    const switchedOff = (this.netns === undefined ? readSysctl('nf_conntrack_events') : readSysctlWith(this.#files(), 'nf_conntrack_events')).then(
      (value) => (Number(value) === 0
        ? new ConntrackError('ERR_CONNTRACK_UNAVAILABLE', `conntrack events are switched off in ${where} (net.netfilter.nf_conntrack_events = 0): set it to 1`)
        : undefined),
      () => undefined,
    );
    return itemsOf(run, switchedOff);
  }

  /**
   * Counts the entries that match `filter` by the keys in `options.by` (for example
   * `{ by: ['tcpState', 'dport'] }`). Native code counts while it decodes: JS gets one record per
   * group, never the entries.
   */
  async summarize(filter: EntryFilter | undefined, options: SummarizeOptions): Promise<Summary> {
    checkSummaryOptions(options);
    const builder = new SummaryBuilder(options.by);
    const run = this.#startDump(filter, options, (batch) => [batch], summaryKeyNumbers(options.by));
    try {
      for (;;) {
        const batches = await run.next();
        if (batches === null) break;
        for (const batch of batches) builder.add(batch);
      }
    } finally {
      run.close();
    }
    return builder.finish(options.top);
  }

  /**
   * A live copy of the entries that match `filter`, kept in native memory: subscribes to events,
   * then dumps, and dumps again by itself whenever events were lost. Resolves once filled.
   */
  async mirror(filter?: EntryFilter, options: MirrorOptions = {}): Promise<Mirror> {
    if (options === null || typeof options !== 'object') throw invalidArgument('options must be an object');
    const receiveBufferBytes = options.receiveBufferBytes ?? DEFAULT_EVENT_BUFFER_BYTES;
    const maxReceiveBufferBytes = options.maxReceiveBufferBytes ?? Math.max(DEFAULT_MAX_EVENT_BUFFER_BYTES, receiveBufferBytes);
    if (!Number.isInteger(receiveBufferBytes) || receiveBufferBytes < 4096 || receiveBufferBytes > MAX_EVENT_BUFFER_BYTES) {
      throw invalidArgument(`receiveBufferBytes must be an integer from 4096 to ${MAX_EVENT_BUFFER_BYTES}`);
    }
    if (!Number.isInteger(maxReceiveBufferBytes) || maxReceiveBufferBytes < receiveBufferBytes || maxReceiveBufferBytes > MAX_EVENT_BUFFER_BYTES) {
      throw invalidArgument(`maxReceiveBufferBytes must be an integer from receiveBufferBytes to ${MAX_EVENT_BUFFER_BYTES}`);
    }
    const resyncInterval = options.resyncInterval ?? await defaultResyncInterval(this.netns);
    if (!Number.isInteger(resyncInterval) || resyncInterval < 0 || resyncInterval > MAX_RESYNC_INTERVAL_MS) {
      throw invalidArgument(`resyncInterval must be an integer from 0 to ${MAX_RESYNC_INTERVAL_MS} (milliseconds)`);
    }
    const compiled = compileFilter(filter, false);
    const native = this.#handle();
    const netns = this.netns;
    const mirrors = this.#mirrors;
    let settle!: (error?: Error) => void;
    const filled = new Promise<void>((resolve, reject) => {
      settle = (error) => (error === undefined ? resolve() : reject(toConntrackError(error, netns)));
    });
    let mirror: Mirror;
    try {
      mirror = new Mirror(
        (onSync, onChange) => native.startMirror(compiled, receiveBufferBytes, maxReceiveBufferBytes,
          (error, info) => onSync(error === null ? null : toConntrackError(error, netns), info), resyncInterval, onChange) as NativeMirror,
        () => mirrors.delete(mirror), settle);
    } catch (err) {
      throw toConntrackError(err, netns);
    }
    mirrors.add(mirror);
    // The native callbacks do not hold the process open: this does, until the first fill ends.
    const keepAlive = setInterval(() => undefined, 1 << 30);
    try {
      await filled;
    } catch (err) {
      mirror.close();
      throw err;
    } finally {
      clearInterval(keepAlive);
    }
    return mirror;
  }

  /** The same dump as entries(), one array per native batch: the fastest way to consume it. */
  batches(filter?: EntryFilter, options: EntriesOptions = {}): EntryIterator<ConntrackEntry[]> {
    const run = this.#startDump(filter, options, decodeBatch);
    const iterator: EntryIterator<ConntrackEntry[]> = {
      async next(): Promise<IteratorResult<ConntrackEntry[]>> {
        const batch = await run.next();
        return batch === null ? { value: undefined, done: true } : { value: batch, done: false };
      },
      async return(): Promise<IteratorResult<ConntrackEntry[]>> {
        run.close();
        return { value: undefined, done: true };
      },
      counters: () => run.counters(),
      [Symbol.asyncIterator]() {
        return this;
      },
    };
    return iterator;
  }

  /**
   * The dump in conntrack-tools' text layout (`conntrack -L`, with its `-o extended` and `-o id`),
   * one Buffer of lines per native batch, written from the records without entry objects.
   */
  text(filter?: EntryFilter, layout: TextLayout = {}, options: EntriesOptions = {}): EntryIterator<TextChunk> {
    if (layout === null || typeof layout !== 'object') throw invalidArgument('layout must be an object');
    const chosen: TextLayout = { extended: layout.extended === true, id: layout.id === true };
    return itemsOf(this.#startDump(filter, options, (batch) => [renderBatchText(batch, chosen, Math.floor(Date.now() / 1000))]));
  }

  /** entries() as an object-mode Readable with backpressure; destroying it ends the dump. */
  stream(filter?: EntryFilter, options: EntriesOptions = {}): Readable {
    const iterator = this.entries(filter, options);
    return Readable.from(iterator, { objectMode: true, highWaterMark: options.batchSize ?? DEFAULT_BATCH_SIZE });
  }

  /** A table dump; with `summaryKeys`, of group records with counts (summarize()). */
  #startDump<T>(filter: EntryFilter | undefined, options: EntriesOptions, decode: (batch: NativeBatch) => T[], summaryKeys?: number[]): DumpRun<T> {
    if (options === null || typeof options !== 'object') throw invalidArgument('options must be an object');
    const batchSize = options.batchSize ?? DEFAULT_BATCH_SIZE;
    checkBatchSize(batchSize);
    const message = dumpMessage(options);
    const compiled = compileFilter(filter, options.kernelFilter ?? true);
    return this.#startRun(options.signal, decode, (native) => native.startDump(compiled, batchSize, summaryKeys ?? null, message));
  }

  #startRun<T>(signal: AbortSignal | undefined, decode: (batch: NativeBatch) => T[], start: (native: NativeHandle) => NativeDump): DumpRun<T> {
    if (signal !== undefined && !(signal instanceof AbortSignal)) {
      throw invalidArgument('signal must be an AbortSignal');
    }
    const native = this.#handle();
    // Already aborted: start nothing; the first next() rejects.
    if (signal?.aborted) return DumpRun.failed(abortError(signal));
    let dump: NativeDump;
    try {
      dump = start(native);
    } catch (err) {
      throw toConntrackError(err, this.netns);
    }
    const dumps = this.#dumps;
    const run: DumpRun<T> = new DumpRun(dump, this.netns, signal, () => dumps.delete(run), decode);
    dumps.add(run);
    return run;
  }

  /** Closes the socket; running dumps end with ERR_CONNTRACK_CLOSED. Idempotent. */
  async close(): Promise<void> {
    const native = this.#native;
    if (native === undefined) return;
    this.#native = undefined;
    for (const run of this.#dumps) run.close(closedError());
    this.#dumps.clear();
    for (const mirror of this.#mirrors) mirror.close();
    native.close();
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }
}

/** One running dump: pulls batches from native code, honours abort and close. */
class DumpRun<T> {
  #dump: NativeDump;
  #decode: (batch: NativeBatch) => T[];
  #netns: string | undefined;
  #signal: AbortSignal | undefined;
  #onEnd: () => void;
  #failure: Error | undefined;
  #ended = false;
  #onAbort = () => this.close(abortError(this.#signal as AbortSignal));

  constructor(dump: NativeDump, netns: string | undefined, signal: AbortSignal | undefined, onEnd: () => void,
    decode: (batch: NativeBatch) => T[]) {
    this.#dump = dump;
    this.#decode = decode;
    this.#netns = netns;
    this.#signal = signal;
    this.#onEnd = onEnd;
    signal?.addEventListener('abort', this.#onAbort, { once: true });
  }

  /** A run that never started: every read rejects with `failure`. */
  static failed<T>(failure: Error): DumpRun<T> {
    const nothing: NativeDump = {
      read: async () => null,
      close: () => undefined,
      counters: () => ({ messages: 0, entries: 0, duplicates: 0, filteredOut: 0, kernelFiltered: false, overflows: 0 }),
    };
    const run = new DumpRun<T>(nothing, undefined, undefined, () => undefined, () => []);
    run.close(failure);
    return run;
  }

  throwIfFailed(): void {
    if (this.#failure) throw this.#failure;
  }

  async next(): Promise<T[] | null> {
    for (;;) {
      if (this.#failure) throw this.#failure;
      if (this.#ended) return null;
      let batch: NativeBatch | null;
      try {
        batch = await this.#dump.read();
      } catch (err) {
        this.close(toConntrackError(err, this.#netns));
        throw this.#failure;
      }
      if (this.#failure) throw this.#failure; // closed or aborted while waiting
      if (batch === null) {
        this.close();
        return null;
      }
      const items = this.#decode(batch);
      if (items.length > 0) return items;
    }
  }

  counters(): DumpCounters {
    return this.#dump.counters();
  }

  /** Ends the dump; with `failure`, later reads throw it. */
  close(failure?: Error): void {
    if (failure && !this.#ended) this.#failure = failure;
    if (this.#ended) return;
    this.#ended = true;
    this.#signal?.removeEventListener('abort', this.#onAbort);
    this.#dump.close();
    this.#onEnd();
  }
}
