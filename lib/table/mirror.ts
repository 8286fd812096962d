/**
 * A live copy of the table in native memory: subscribed to events first, then filled by a dump,
 * and filled again from a fresh dump whenever events were lost (a resync). Queries answer from
 * memory without asking the kernel.
 */
import { closedError, invalidArgument } from '../base/errors.js';
import type { NativeBatch, NativeFilter } from '../binding/native.js';
import type { ConntrackEntry, ConntrackEvent, EntryFilter, TupleSpec } from '../base/types.js';
import { compileFilter } from './filter.js';
import { decodeBatch, decodeEventBatch } from './records.js';
import { checkSummaryOptions, GroupKeys, summaryFromColumns, summaryKeyNumbers, type NativeSummaryColumns, type Summary, type SummaryKey } from './summary.js';
import { tupleSpec } from './entry-spec.js';

/** The native object behind a Mirror (native/addon_mirror.cc). */
export interface NativeMirror {
  size(): number;
  get(tuple: { family: number; protocol: number; src: Uint8Array; dst: Uint8Array; sport?: number; dport?: number; icmpType?: number; icmpCode?: number; icmpId?: number; zone?: number }): NativeBatch | null;
  entries(filter: NativeFilter | null): NativeBatch;
  summarize(filter: NativeFilter | null, keys: number[], top: number, knownGrouping: number, knownGenerations: Uint32Array | undefined, values: Float64Array | undefined): NativeSummaryColumns;
  bytes(): number;
  counters(): { overflows: number; events: number; receiveBufferBytes: number; bufferGrowths: number; liveSummaries: number };
  watchChanges(on: boolean): void;
  takeChanges(): NativeBatch;
  close(): void;
}

/** What the native side reports after each dump (native/ct_mirror.h SyncReason and SyncResult). */
export interface NativeSyncInfo {
  reason: number;
  removed: number;
  added: number;
}

export interface MirrorOptions {
  /** The event socket's buffer (default 8 MiB); it doubles on overflow up to `maxReceiveBufferBytes` (default 64 MiB). */
  receiveBufferBytes?: number;
  maxReceiveBufferBytes?: number;
  /**
   * Milliseconds between periodic resyncs from a fresh dump, counted from the end of the last one;
   * 0: resync only after lost events. Default: 60000 when net.netfilter.nf_conntrack_events is 2
   * (the kernel then reports the destroy of an entry only if a listener existed when the entry was
   * made, so entries older than the mirror would otherwise never leave it), else 0.
   */
  resyncInterval?: number;
}

/** An item of a mirror's change stream: the mirror was filled again from a fresh dump. */
export interface MirrorResync {
  type: 'resync';
  /** Why: events were lost (`overflow`), or the periodic resync (`interval`). */
  reason: 'overflow' | 'interval';
  /** Resyncs so far, the first fill not counted. */
  resyncs: number;
  at: Date;
  /** Entries after it. */
  size: number;
  /** Entries the dump no longer showed (gone while events were lost), removed. */
  removed: number;
  /** Entries the dump showed that the mirror lacked, added. */
  added: number;
}

/**
 * The change stream lagged: this many changes were not kept for it because it was not read fast
 * enough (the mirror itself stayed current; only the stream skipped them).
 */
export interface MirrorLagged {
  type: 'lagged';
  dropped: number;
}

/** An item of a mirror's change stream. */
export type MirrorChange = ConntrackEvent | MirrorResync | MirrorLagged;

const SYNC_REASONS = ['initial', 'overflow', 'interval'] as const;

/** Groupings whose keys are held between answers: as many as the mirror keeps live summaries. */
const KEPT_GROUPINGS = 8;

/** Which grouping a summarize() asks for: its keys and filter (addresses' bytes as numbers). */
function groupingName(keys: readonly number[], filter: NativeFilter | null): string {
  return `${keys.join(',')}|${JSON.stringify(filter, (_, value: unknown) => (value instanceof Uint8Array ? Array.from(value) : value))}`;
}

interface Stream {
  queue: MirrorChange[];
  wake: (() => void) | undefined;
}

export class Mirror implements AsyncIterable<MirrorChange> {
  #native: NativeMirror | undefined;
  #syncs = 0;
  #lastResync: Date | undefined;
  #streams = new Set<Stream>();
  #failure: Error | undefined;
  #onClose: () => void;
  // The key objects of the groupings asked lately, the least recently asked first.
  #groupKeys = new Map<string, GroupKeys>();

  /** @internal Use Conntrack.mirror(). */
  constructor(
    start: (onSync: (error: Error | null, info: NativeSyncInfo) => void, onChange: () => void) => NativeMirror,
    onClose: () => void,
    ready: (error?: Error) => void,
  ) {
    this.#onClose = onClose;
    this.#native = start((error, info) => {
      if (error !== null) {
        this.#failure ??= error;
        if (this.#syncs === 0) ready(error);
        this.#wakeAll();
        return;
      }
      this.#syncs += 1;
      if (this.#syncs === 1) {
        ready();
        return;
      }
      this.#lastResync = new Date();
      // Changes recorded before the dump ended come first.
      this.#takeChanges();
      this.#broadcast({
        type: 'resync', reason: SYNC_REASONS[info.reason] === 'interval' ? 'interval' : 'overflow',
        resyncs: this.#syncs - 1, at: this.#lastResync, size: this.size, removed: info.removed, added: info.added,
      });
    }, () => this.#takeChanges());
  }

  #mirror(): NativeMirror {
    if (this.#native === undefined) throw closedError();
    return this.#native;
  }

  #takeChanges(): void {
    if (this.#native === undefined || this.#streams.size === 0) return;
    for (const item of decodeEventBatch(this.#native.takeChanges())) {
      this.#broadcast(item.type === 'overflow' ? { type: 'lagged', dropped: item.count } : item);
    }
  }

  #broadcast(item: MirrorChange): void {
    for (const stream of this.#streams) {
      stream.queue.push(item);
      stream.wake?.();
    }
  }

  #wakeAll(): void {
    for (const stream of this.#streams) stream.wake?.();
  }
  /** Entries in the mirror. */
  get size(): number {
    return this.#mirror().size();
  }

  /** Times the mirror filled itself again after lost events. */
  get resyncs(): number {
    return Math.max(0, this.#syncs - 1);
  }

  /** When the last resync ended, if any. */
  get lastResync(): Date | undefined {
    return this.#lastResync;
  }

  /** Native memory the mirror's store holds, in bytes. */
  get nativeBytes(): number {
    return this.#mirror().bytes();
  }

  counters(): ReturnType<NativeMirror['counters']> {
    return this.#mirror().counters();
  }

  /** The entry with this original tuple (and zone), or undefined. */
  get(tuple: TupleSpec & { zone?: number }): ConntrackEntry | undefined {
    const { family, native } = tupleSpec(tuple, 'tuple');
    const zone = tuple.zone ?? 0;
    if (!Number.isInteger(zone) || zone < 0 || zone > 65535) throw invalidArgument('zone must be an integer from 0 to 65535');
    const batch = this.#mirror().get({ family, protocol: native.proto, src: native.src, dst: native.dst,
      sport: native.sport, dport: native.dport, icmpType: native.icmpType, icmpCode: native.icmpCode, icmpId: native.icmpId, zone });
    return batch === null ? undefined : decodeBatch(batch)[0];
  }

  /** Every entry that matches `filter`, from memory. */
  entries(filter?: EntryFilter): ConntrackEntry[] {
    return decodeBatch(this.#mirror().entries(compileFilter(filter, false)));
  }

  /**
   * Group counts like Conntrack.summarize(), from memory. The first call for a grouping (its `by`
   * and `filter`) scans the mirror; the mirror then keeps that grouping's counts current with each
   * change, so asking again costs its number of groups (up to 8 groupings, the least recently asked
   * dropped first; none of over 100,000 groups). A group's key is frozen and the same object in
   * every answer while the group lives.
   */
  summarize(options: { by: readonly SummaryKey[]; top?: number; filter?: EntryFilter }): Summary {
    checkSummaryOptions(options);
    const native = this.#mirror();
    const filter = compileFilter(options.filter, false);
    const keyNumbers = summaryKeyNumbers(options.by);
    const name = groupingName(keyNumbers, filter);
    let keys = this.#groupKeys.get(name);
    if (keys === undefined) {
      keys = new GroupKeys();
      if (this.#groupKeys.size === KEPT_GROUPINGS) this.#groupKeys.delete(this.#groupKeys.keys().next().value as string);
    } else {
      this.#groupKeys.delete(name);
    }
    this.#groupKeys.set(name, keys);
    const result = native.summarize(filter, keyNumbers, options.top ?? 0, keys.grouping, keys.generations, keys.values);
    return summaryFromColumns(options.by, result, keys);
  }

  /**
   * The mirror's changes as they happen, until close(): each new, update and destroy event that
   * changed it (as events() yields them), and a `resync` item after each resync. Changes are kept
   * only while some iteration runs, from when it starts.
   */
  async *[Symbol.asyncIterator](): AsyncIterator<MirrorChange> {
    const native = this.#mirror();
    const stream: Stream = { queue: [], wake: undefined };
    this.#streams.add(stream);
    if (this.#streams.size === 1) native.watchChanges(true);
    try {
      for (;;) {
        if (this.#failure) throw this.#failure;
        const item = stream.queue.shift();
        if (item !== undefined) {
          yield item;
          continue;
        }
        if (this.#native === undefined) return;
        await new Promise<void>((resolve) => (stream.wake = resolve));
        stream.wake = undefined;
      }
    } finally {
      this.#streams.delete(stream);
      if (this.#streams.size === 0) this.#native?.watchChanges(false);
    }
  }

  /** Stops listening and frees the native memory. Idempotent. */
  close(): void {
    const native = this.#native;
    if (native === undefined) return;
    this.#native = undefined;
    this.#groupKeys.clear();
    native.close();
    this.#wakeAll();
    this.#onClose();
  }

  async [Symbol.asyncDispose](): Promise<void> {
    this.close();
  }
}
