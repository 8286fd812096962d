/**
 * Changing many entries at kernel speed: createMany() and updateMany() validate each item in JS,
 * write it as a spec record and hand native code a batch at a time (two in flight: one being
 * filled while the other is sent, many requests per sendmsg); deleteMatching() runs wholly in
 * native code (native/bulk_delete.h). Item failures are reported by index and code, never thrown.
 */
import { abortError, ConntrackError, invalidArgument, type ConntrackErrorCode } from '../base/errors.js';
import type { NativeBulk, NativeDeleteCounters, NativeEntrySpec, NativeHandle } from '../binding/native.js';
import { compileFilter } from './filter.js';
import { ENTRY_OP } from './entry-spec.js';
import { SpecRecords } from './spec-records.js';
import type { BulkFailure, BulkOptions, BulkResult, DeleteOptions, DeleteResult, EntryFilter } from '../base/types.js';

// Measured on 100,000 creates (benchmarks/bulk.mjs): 512 to 1,024 items per batch are fastest;
// larger batches keep more items alive across collections (4,096: a third slower).
const DEFAULT_BULK_BATCH = 1024;
const MAX_BULK_BATCH = 65536;
const DEFAULT_MAX_FAILURES = 1000;

const ENOENT = 2;
const EPERM = 1;
const EEXIST = 17;
const ENOSPC = 28;

/** What one item becomes: its request, and (updates changing labels and more) a second one sent only after the first succeeded. */
export interface ItemSpecs {
  first: NativeEntrySpec;
  then?: NativeEntrySpec;
}

function checkBulkOptions(options: BulkOptions): { batchSize: number; maxFailures: number; signal: AbortSignal | undefined } {
  if (options === null || typeof options !== 'object') throw invalidArgument('options must be an object');
  const batchSize = options.batchSize ?? DEFAULT_BULK_BATCH;
  if (!Number.isInteger(batchSize) || batchSize < 1 || batchSize > MAX_BULK_BATCH) {
    throw invalidArgument(`batchSize must be an integer from 1 to ${MAX_BULK_BATCH}`);
  }
  const maxFailures = options.maxFailures ?? DEFAULT_MAX_FAILURES;
  if (!Number.isInteger(maxFailures) || maxFailures < 0) throw invalidArgument('maxFailures must be an integer >= 0');
  if (options.signal !== undefined && !(options.signal instanceof AbortSignal)) throw invalidArgument('signal must be an AbortSignal');
  return { batchSize, maxFailures, signal: options.signal };
}

/** An item's refusal by the kernel as a code and a message a person can act on. */
function refusal(op: number, errno: number, sentLabels: boolean): { code: ConntrackErrorCode; message: string } {
  if (errno === EEXIST && op === ENTRY_OP.create) return { code: 'ERR_CONNTRACK_EXISTS', message: 'an entry with this tuple exists already' };
  if (errno === ENOENT) return { code: 'ERR_CONNTRACK_NOT_FOUND', message: 'no entry with this tuple (and id)' };
  if (errno === ENOSPC && sentLabels) {
    return { code: 'ERR_CONNTRACK_UNAVAILABLE', message: 'this entry has no room for labels: the kernel keeps labels only while a rule uses `ct label`' };
  }
  if (errno === EPERM) return { code: 'ERR_CONNTRACK_PERMISSION', message: 'changing conntrack needs CAP_NET_ADMIN' };
  return { code: 'ERR_CONNTRACK_KERNEL', message: `the kernel refused it (errno ${errno})` };
}

class Outcome<T> implements BulkResult<T> {
  total = 0;
  succeeded = 0;
  failed = 0;
  failedByCode: Partial<Record<ConntrackErrorCode, number>> = {};
  failures: BulkFailure<T>[] = [];
  readonly #maxFailures: number;

  constructor(maxFailures: number) {
    this.#maxFailures = maxFailures;
  }

  /** Counts a failure; keeps the `maxFailures` of lowest index (a kernel's refusal arrives after later items' validation errors). */
  fail(index: number, item: T, code: ConntrackErrorCode, errno: number | undefined, message: string): void {
    this.failed++;
    this.failedByCode[code] = (this.failedByCode[code] ?? 0) + 1;
    const kept = this.failures;
    if (kept.length >= this.#maxFailures && (kept.length === 0 || (kept[kept.length - 1] as BulkFailure<T>).index < index)) return;
    let at = kept.length;
    while (at > 0 && (kept[at - 1] as BulkFailure<T>).index > index) at--;
    kept.splice(at, 0, { index, item, code, errno, message });
    if (kept.length > this.#maxFailures) kept.pop();
  }

  result(): BulkResult<T> {
    return { total: this.total, succeeded: this.succeeded, failed: this.failed, failedByCode: this.failedByCode, failures: this.failures };
  }
}

/**
 * Sends every item of `source` as `op` through `bulk`, `batchSize` at a time; `toSpecs` validates
 * one item (throwing a ConntrackError makes it a failure that sends nothing).
 */
export async function applyMany<T>(bulk: NativeBulk, op: number, source: Iterable<T> | AsyncIterable<T>,
  toSpecs: (item: T) => ItemSpecs, options: BulkOptions, mapError: (err: unknown) => Error): Promise<BulkResult<T>> {
  const { batchSize, maxFailures, signal } = checkBulkOptions(options);
  const isSync = source !== null && typeof (source as Iterable<T>)[Symbol.iterator] === 'function';
  if (!isSync && (source === null || typeof (source as AsyncIterable<T>)[Symbol.asyncIterator] !== 'function')) {
    throw invalidArgument('the items must be an iterable or an async iterable');
  }
  if (signal?.aborted) throw abortError(signal);
  const outcome = new Outcome<T>(maxFailures);
  const records = new SpecRecords(batchSize);
  // Per record of the batch being filled: the item's index, the item, whether it sent labels (to
  // explain ENOSPC), its follow-up request. Not the spec itself: kept until the batch is answered,
  // thousands of them would outlive the young generation and make the collector most of the cost.
  let indices: number[] = [];
  let items: T[] = [];
  let labelled: boolean[] = [];
  let followUps: Array<NativeEntrySpec | undefined> = [];
  let pendingFollowUps: Array<{ index: number; item: T; spec: NativeEntrySpec }> = [];
  let inFlight: Promise<void> | undefined;

  const settle = (answer: Int32Array, sent: { indices: number[]; items: T[]; labelled: boolean[]; followUps: Array<NativeEntrySpec | undefined> }) => {
    for (let i = 0; i < answer.length; i++) {
      const errno = answer[i] as number;
      const index = sent.indices[i] as number;
      const item = sent.items[i] as T;
      if (errno === 0) {
        const next = sent.followUps[i];
        if (next === undefined) outcome.succeeded++;
        else pendingFollowUps.push({ index, item, spec: next });
        continue;
      }
      const { code, message } = refusal(op, errno, sent.labelled[i] === true);
      outcome.fail(index, item, code, errno, message);
    }
  };

  const submit = async (): Promise<void> => {
    if (inFlight !== undefined) await inFlight;
    inFlight = undefined;
    if (records.count === 0) return;
    const sent = { indices, items, labelled, followUps };
    let answer: Promise<Int32Array>;
    try {
      answer = bulk.apply(op, records.words, records.count); // copies the records: refilling may start now
    } catch (err) {
      throw mapError(err);
    }
    records.count = 0;
    indices = [];
    items = [];
    labelled = [];
    followUps = [];
    inFlight = answer.then((a) => settle(a, sent), (err: unknown) => {
      throw mapError(err);
    });
  };

  const add = (index: number, item: T, spec: NativeEntrySpec, then: NativeEntrySpec | undefined) => {
    records.push(spec);
    indices.push(index);
    items.push(item);
    labelled.push(spec.labels !== undefined);
    followUps.push(then);
  };

  const takeFollowUps = async () => {
    const ready = pendingFollowUps;
    pendingFollowUps = [];
    for (const f of ready) {
      add(f.index, f.item, f.spec, undefined);
      if (records.count >= batchSize) await submit();
    }
  };

  const accept = (index: number, item: T): void => {
    let s: ItemSpecs;
    try {
      s = toSpecs(item);
    } catch (err) {
      if (!(err instanceof ConntrackError)) throw err;
      outcome.fail(index, item, err.code, undefined, err.message);
      return;
    }
    add(index, item, s.first, s.then);
  };

  try {
    if (isSync) {
      for (const item of source as Iterable<T>) {
        accept(outcome.total++, item);
        if (records.count >= batchSize) {
          if (signal?.aborted) throw abortError(signal);
          await submit();
          await takeFollowUps();
        }
      }
    } else {
      for await (const item of source as AsyncIterable<T>) {
        accept(outcome.total++, item);
        if (records.count >= batchSize) {
          if (signal?.aborted) throw abortError(signal);
          await submit();
          await takeFollowUps();
        }
      }
    }
    // The rest, and follow-ups until none is left.
    do {
      await submit();
      if (inFlight !== undefined) await inFlight;
      inFlight = undefined;
      await takeFollowUps();
    } while (records.count > 0 || pendingFollowUps.length > 0);
  } finally {
    if (inFlight !== undefined) await inFlight.catch(() => undefined);
  }
  return outcome.result();
}

/** Every entry is checked against each filter of a pass (native/addon_handle.cc has the same bound). */
const MAX_DELETE_FILTERS = 4096;

/** Runs one deleteMatching() pass natively over `filters` (ORed). */
export async function deleteMatchingNative(native: NativeHandle, filter: EntryFilter | readonly EntryFilter[],
  options: DeleteOptions, mapError: (err: unknown) => Error): Promise<DeleteResult> {
  if (options === null || typeof options !== 'object') throw invalidArgument('options must be an object');
  const list = Array.isArray(filter) ? filter : [filter];
  if (list.length === 0) throw invalidArgument('deleteMatching() needs at least one filter');
  if (list.length > MAX_DELETE_FILTERS) throw invalidArgument(`deleteMatching() takes at most ${MAX_DELETE_FILTERS} filters in one pass`);
  const compiled = list.map((f, i) => {
    if (f === null || typeof f !== 'object' || Object.keys(f).length === 0) {
      throw invalidArgument(`deleteMatching() needs non-empty filters (filter ${i} selects everything); flush() empties the table`);
    }
    const c = compileFilter(f, true);
    if (c === null) throw invalidArgument(`filter ${i} selects everything; flush() empties the table`);
    return c;
  });
  const { signal } = options;
  if (signal !== undefined && !(signal instanceof AbortSignal)) throw invalidArgument('signal must be an AbortSignal');
  if (signal?.aborted) throw abortError(signal);
  if (options.kernelFlush !== undefined && typeof options.kernelFlush !== 'boolean') throw invalidArgument('kernelFlush must be a boolean');
  let run;
  try {
    run = native.startDelete(compiled, options.kernelFlush !== false);
  } catch (err) {
    throw mapError(err);
  }
  const abort = () => run.abort();
  signal?.addEventListener('abort', abort, { once: true });
  let counters: NativeDeleteCounters & { stopped: boolean };
  try {
    counters = await run.done();
  } catch (err) {
    throw mapError(err);
  } finally {
    signal?.removeEventListener('abort', abort);
  }
  if (counters.stopped && signal?.aborted) throw abortError(signal);
  return {
    deleted: counters.deleted,
    matched: counters.matched,
    alreadyGone: counters.alreadyGone,
    failed: counters.failed,
    errno: counters.firstErrno === 0 ? undefined : counters.firstErrno,
    scanned: counters.scanned,
    matchedByFilter: counters.matchedBy,
    kernelFlush: counters.kernelFlush,
  };
}
