/**
 * A live copy of the table in native memory: subscribed to events first, then filled by a dump,
 * and filled again from a fresh dump whenever events were lost (a resync). Queries answer from
 * memory without asking the kernel.
 */
import { closedError, invalidArgument } from '../base/errors.js';
import type { NativeBatch, NativeFilter } from '../binding/native.js';
import type { ConntrackEntry, EntryFilter, TupleSpec } from '../base/types.js';
import { compileFilter } from './filter.js';
import { decodeBatch } from './records.js';
import { checkSummaryOptions, SummaryBuilder, summaryKeyNumbers, type Summary, type SummaryKey } from './summary.js';
import { tupleSpec } from './entry-spec.js';

/** The native object behind a Mirror (native/addon_mirror.cc). */
export interface NativeMirror {
  size(): number;
  get(tuple: { family: number; protocol: number; src: Uint8Array; dst: Uint8Array; sport?: number; dport?: number; icmpType?: number; icmpCode?: number; icmpId?: number; zone?: number }): NativeBatch | null;
  entries(filter: NativeFilter | null): NativeBatch;
  summarize(filter: NativeFilter | null, keys: number[]): NativeBatch;
  bytes(): number;
  counters(): { overflows: number; events: number; receiveBufferBytes: number; bufferGrowths: number };
  close(): void;
}

export interface MirrorOptions {
  /** The event socket's buffer (default 8 MiB); it doubles on overflow up to `maxReceiveBufferBytes` (default 64 MiB). */
  receiveBufferBytes?: number;
  maxReceiveBufferBytes?: number;
}

/** An item of a mirror's change stream: the mirror was filled again from a fresh dump. */
export interface MirrorResync {
  type: 'resync';
  /** Resyncs so far, the first fill not counted. */
  resyncs: number;
  at: Date;
  /** Entries after it. */
  size: number;
}

export class Mirror implements AsyncIterable<MirrorResync> {
  #native: NativeMirror | undefined;
  #syncs = 0;
  #lastResync: Date | undefined;
  #waiters: Array<(item: MirrorResync | null) => void> = [];
  #queue: MirrorResync[] = [];
  #failure: Error | undefined;
  #onClose: () => void;

  /** @internal Use Conntrack.mirror(). */
  constructor(start: (onSync: (error: Error | null) => void) => NativeMirror, onClose: () => void, ready: (error?: Error) => void) {
    this.#onClose = onClose;
    this.#native = start((error) => {
      if (error !== null) {
        this.#failure ??= error;
        if (this.#syncs === 0) ready(error);
        return;
      }
      this.#syncs += 1;
      if (this.#syncs === 1) {
        ready();
        return;
      }
      this.#lastResync = new Date();
      const item: MirrorResync = { type: 'resync', resyncs: this.#syncs - 1, at: this.#lastResync, size: this.size };
      const waiter = this.#waiters.shift();
      if (waiter) waiter(item);
      else this.#queue.push(item);
    });
  }

  #mirror(): NativeMirror {
    if (this.#native === undefined) throw closedError();
    return this.#native;
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

  /** Group counts like Conntrack.summarize(), from memory. */
  summarize(options: { by: readonly SummaryKey[]; top?: number; filter?: EntryFilter }): Summary {
    checkSummaryOptions(options);
    const builder = new SummaryBuilder(options.by);
    builder.add(this.#mirror().summarize(compileFilter(options.filter, false), summaryKeyNumbers(options.by)));
    return builder.finish(options.top);
  }

  /** The mirror's resyncs as they happen, until close(). */
  async *[Symbol.asyncIterator](): AsyncIterator<MirrorResync> {
    for (;;) {
      if (this.#failure) throw this.#failure;
      const queued = this.#queue.shift();
      if (queued) {
        yield queued;
        continue;
      }
      if (this.#native === undefined) return;
      const item = await new Promise<MirrorResync | null>((resolve) => this.#waiters.push(resolve));
      if (item === null) return;
      yield item;
    }
  }

  /** Stops listening and frees the native memory. Idempotent. */
  close(): void {
    const native = this.#native;
    if (native === undefined) return;
    this.#native = undefined;
    native.close();
    for (const waiter of this.#waiters.splice(0)) waiter(null);
    this.#onClose();
  }

  async [Symbol.asyncDispose](): Promise<void> {
    this.close();
  }
}
