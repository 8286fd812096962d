/**
 * Loads the addon and states its shape. The binding is thin on purpose: it moves bytes and
 * numbers; names, defaults, validation and errors live in TypeScript.
 *
 * The addon loads on first use, not on import: sizing, persistence files, evaluate() and metrics
 * rendering work on a platform without it, and the rest fails with ERR_CONNTRACK_NATIVE.
 */
import { createRequire } from 'node:module';
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

import type { RECORD_LAYOUT } from './layout.generated.js';
import { ConntrackError } from '../base/errors.js';

/** An error as the addon raises it: errno and the operation that failed. */
export interface NativeError extends Error {
  errno?: number;
  syscall?: string;
  /** Set for framing and decoding errors: the kernel message could not be parsed. */
  protocol?: boolean;
}

/** The binding's form of a tuple (native/addon_values.cc readTuple). */
export interface NativeTupleSpec {
  src: Uint8Array;
  dst: Uint8Array;
  proto: number;
  sport?: number;
  dport?: number;
  icmpType?: number;
  icmpCode?: number;
  icmpId?: number;
}

/** The binding's form of an entry request (native/addon_values.cc readEntrySpec). */
export interface NativeEntrySpec {
  family: number;
  orig?: NativeTupleSpec;
  reply?: NativeTupleSpec;
  id?: number;
  mark?: number;
  timeout?: number;
  status?: number;
  tcpState?: number;
  zone?: number;
  /** Label bits as four words (bit b: word b >> 5, bit b & 31). */
  labels?: Uint32Array;
  labelsMask?: Uint32Array;
  /** Create only: NAT ranges (addresses of the spec's family). */
  natSrc?: NativeNatRange;
  natDst?: NativeNatRange;
}

/** The binding's form of a NAT range (native/addon_values.cc readEntrySpec). */
export interface NativeNatRange {
  min: Uint8Array;
  max: Uint8Array;
  minPort?: number;
  maxPort?: number;
}

/** The binding's form of an expectation request (native/addon_values.cc readExpectationSpec). */
export interface NativeExpectationSpec {
  family: number;
  master?: NativeTupleSpec;
  tuple?: NativeTupleSpec;
  mask?: NativeTupleSpec;
  natTuple?: NativeTupleSpec;
  timeout?: number;
  id?: number;
  zone?: number;
  flags?: number;
  class?: number;
  natDir?: number;
  helper?: string;
  fn?: string;
}

/** createMany() / updateMany() batches on a socket of their own (native/addon_bulk.cc). */
export interface NativeBulk {
  /** Sends `count` spec records (lib/table/entry-spec.ts encodeSpec) as ENTRY_OP create or update; one errno per item (0: done). */
  apply(op: number, records: Uint32Array, count: number): Promise<Int32Array>;
  close(): void;
}

/** What a deleteMatching() pass did so far (native/bulk_delete.h DeleteCounters). */
export interface NativeDeleteCounters {
  scanned: number;
  duplicates: number;
  matched: number;
  deleted: number;
  alreadyGone: number;
  failed: number;
  firstErrno: number;
  kernelFlush: boolean;
  matchedBy: number[];
}

/** One deleteMatching() pass on the thread pool. */
export interface NativeDeleteRun {
  /** The final counters; `stopped` after abort(). Rejects with the error (carrying `counters`). */
  done(): Promise<NativeDeleteCounters & { stopped: boolean }>;
  abort(): void;
  counters(): NativeDeleteCounters;
}

/** Which filtered flushes this kernel honours (native/flush_probe.h). */
export interface NativeFlushSupport {
  family: boolean;
  mark: boolean;
  status: boolean;
  zone: boolean;
  /** Why the probe could not run (then nothing is supported). */
  problem?: string;
}

/** The filter as native code takes it: already validated and normalised by lib/table/filter.ts. */
export interface NativeFilter {
  family: number; // 0 any, 2 AF_INET, 10 AF_INET6
  protocol: number; // -1 any
  tcpStates: number; // bit mask of TCP state numbers, 0 = any
  markValue: number;
  markMask: number; // 0 = no mark filter
  zone: number; // -1 any
  statusSet: number;
  statusUnset: number;
  /** Per tuple (0 original, 1 reply), per end (0 src, 1 dst): address prefix bytes, prefix length. */
  addresses: Array<{ tuple: 0 | 1; end: 0 | 1; family: number; bytes: Uint8Array; prefix: number }>;
  ports: Array<{ tuple: 0 | 1; end: 0 | 1; low: number; high: number }>;
  /** Ask the kernel to pre-filter (mark, status, zone, family, exact tuple parts). */
  kernel: boolean;
}

/** One batch of decoded entries: fixed-size records of u32 slots, plus the batch's text. */
export interface NativeBatch {
  records: ArrayBuffer;
  count: number;
  strings: string;
  /** Events only: ENOBUFS reports (lost events) after the previous batch, before this one's records. */
  overflowsBefore: number;
  /** Summaries only: the entries each record (group) stands for. */
  counts?: Uint32Array;
}

export interface NativeDumpCounters {
  messages: number;
  entries: number;
  duplicates: number;
  filteredOut: number;
  kernelFiltered: boolean;
  overflows: number;
  /** Events: the socket's receive buffer as the kernel sizes it now. */
  receiveBufferBytes?: number;
  /** Events: times the buffer grew after an overflow. */
  bufferGrowths?: number;
}

export interface NativeDump {
  /** Resolves with the next batch, or null at the end of the dump. */
  read(): Promise<NativeBatch | null>;
  /** Ends the dump; a pending read resolves with null. Idempotent. */
  close(): void;
  counters(): NativeDumpCounters;
}

/** GET_STATS answer: attribute number → value, as flat pairs. */
export type NativeAttrPairs = number[];

export interface NativeCpuRow {
  cpu: number;
  attrs: NativeAttrPairs;
}

export interface NativeHandle {
  /** IPCTNL_MSG_CT_GET_STATS; sync when the kernel already answered, else a promise. */
  globalStats(): NativeAttrPairs | Promise<NativeAttrPairs>;
  /**
   * globalStats() for pollers: `call()` writes a sync answer's pairs into `out` and returns how
   * many values it wrote (no allocation, no per-call argument handling).
   */
  globalStatsFunction(): { call: () => number | Promise<NativeAttrPairs>; out: Uint32Array };
  /** IPCTNL_MSG_CT_GET_STATS_CPU (expectations: IPCTNL_MSG_EXP_GET_STATS_CPU) as a dump. */
  cpuStats(expectations: boolean): NativeCpuRow[] | Promise<NativeCpuRow[]>;
  /**
   * A dump; with `summaryKeys`, of group records with counts (lib/table/summary.ts) instead of
   * entries; `message` picks the request (IPCTNL_MSG_CT_GET_CTRZERO, _GET_DYING, _GET_UNCONFIRMED).
   */
  startDump(filter: NativeFilter | null, batchSize: number, summaryKeys?: number[] | null, message?: number): NativeDump;
  /** Subscribes to NFNLGRP_CONNTRACK_* (bit n - 1 for group n); reads never end until close(). */
  startEvents(filter: NativeFilter | null, batchSize: number, groups: number, receiveBufferBytes: number,
    reliable?: boolean, maxReceiveBufferBytes?: number, expectations?: boolean): NativeDump;
  /**
   * A live mirror of the table (lib/table/mirror.ts states its shape); `onSync` after each dump,
   * `onChange` when change records wait (takeChanges), a resync every `resyncIntervalMs` (0: never).
   */
  startMirror(filter: NativeFilter | null, receiveBufferBytes: number, maxReceiveBufferBytes: number,
    onSync: (error: NativeError | null, info: { reason: number; removed: number; added: number }) => void,
    resyncIntervalMs: number, onChange: () => void): unknown;
  /** Get, create, update or delete one entry (ENTRY_OP); a GET's answer comes as a one-record batch. */
  entryRequest(op: number, spec: NativeEntrySpec): NativeBatch | Promise<NativeBatch>;
  /** Deletes every entry of the namespace (family 0: all). */
  flush(family: number): NativeBatch | Promise<NativeBatch>;
  /**
   * File operations in the handle's own namespace, entered by its descriptor (never by path
   * again): procfs and sysfs as a thread inside it sees them.
   */
  readFile(path: string): Promise<string>;
  writeFile(path: string, data: string): Promise<void>;
  listDir(path: string): Promise<string[]>;
  /** Inode number of the handle's namespace. */
  namespaceInode(): number;
  /** Lists, gets, creates or deletes expectations (EXPECTATION_OP); answers as a batch of expectation records. */
  expectationRequest(op: number, spec: NativeExpectationSpec): NativeBatch | Promise<NativeBatch>;
  /** A NativeBulk in this handle's namespace. */
  openBulk(): NativeBulk;
  /** Starts deleting what any of `filters` selects; `allowFlush`: one filtered flush where the kernel can. */
  startDelete(filters: NativeFilter[], allowFlush: boolean): NativeDeleteRun;
  close(): void;
}

export interface Binding {
  /**
   * Opens the netns (a path; a pid, whose namespace is pinned with a pidfd; null: this process's
   * own) and a ctnetlink socket inside it.
   */
  open(netns: string | number | null): Promise<NativeHandle>;
  /** File operations inside a netns, on a short-lived thread (procfs views depend on the netns). */
  netnsReadFile(netnsPath: string, path: string): Promise<string>;
  netnsWriteFile(netnsPath: string, path: string, data: string): Promise<void>;
  netnsListDir(netnsPath: string, path: string): Promise<string[]>;
  /** Decodes one captured datagram (tests); `events`: as event messages; `expectations`: its expectation messages. */
  decode(datagram: Uint8Array, filter: NativeFilter | null, events?: boolean, summaryKeys?: number[] | null, expectations?: boolean): NativeBatch;
  /** The record layout (native/record_layout.h), read by lib/binding/layout.ts. */
  layout: NativeLayout;
  /** Probes (once per process, in a namespace of its own) which filtered flushes the kernel honours. */
  flushSupport(): NativeFlushSupport;
}

/**
 * The record layout as the addon exports it (native/record_layout.h kLayoutConstants), by group
 * and name; layout.generated.ts holds the same numbers for use without the addon.
 */
export type NativeLayout = { readonly [G in keyof typeof RECORD_LAYOUT]: { readonly [K in keyof (typeof RECORD_LAYOUT)[G]]: number } };

function packageRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    const manifest = join(dir, 'package.json');
    if (existsSync(manifest)) {
      const name = (JSON.parse(readFileSync(manifest, 'utf8')) as { name?: string }).name;
      if (name === 'conntrack') return dir;
    }
    const parent = dirname(dir);
    if (parent === dir) throw new Error('conntrack: package root not found');
    dir = parent;
  }
}

/** The platforms `npm run prebuilds` makes binaries for (scripts/prebuilds.sh). */
export const PREBUILT_PLATFORMS = ['linux-x64', 'linux-arm64'] as const;
/** The oldest glibc the prebuilds load with (test/unit/package/prebuilds.test.ts checks it). */
export const PREBUILT_GLIBC = '2.28';

/**
 * The C library of this process: glibc (with its version, from Node's report) or musl. LIBC=musl
 * or LIBC=glibc overrides it, as it does node-gyp-build's choice of prebuild.
 */
export function libcOfProcess(): { name: 'glibc' | 'musl'; version?: string } {
  const forced = process.env.LIBC;
  if (forced === 'musl' || forced === 'glibc') return { name: forced };
  const header = (process.report?.getReport() as { header?: { glibcVersionRuntime?: string } } | undefined)?.header;
  const version = header?.glibcVersionRuntime;
  return version === undefined ? { name: 'musl' } : { name: 'glibc', version };
}

const SOURCE_BUILD_HELP =
  'build it from source instead: install a C++17 compiler, make and python3 ' +
  '(Debian/Ubuntu: apt-get install g++ make python3; Alpine: apk add build-base python3 linux-headers), ' +
  'then run "npm rebuild conntrack"';

/** The error for an addon that is missing or does not load: what, where, and the two ways out. */
export function nativeUnavailable(root: string, file: string | undefined, cause: unknown): ConntrackError {
  const libc = libcOfProcess();
  const platform = `${process.platform}-${process.arch}`;
  const where = `${platform} (${libc.version === undefined ? libc.name : `${libc.name} ${libc.version}`})`;
  const prebuilt = `prebuilds ship for ${PREBUILT_PLATFORMS.join(' and ')} with glibc ${PREBUILT_GLIBC} or newer`;
  const rest = 'Sizing, persistence files, evaluate() and metrics rendering work without it';
  if (file === undefined) {
    const prebuild = join(root, 'prebuilds', platform, `conntrack.napi.${libc.name}.node`);
    const local = join(root, 'build', 'Release', 'conntrack.node');
    return new ConntrackError(
      'ERR_CONNTRACK_NATIVE',
      `conntrack's native addon is missing for ${where}: looked for ${prebuild} and ${local}. ` +
        `Use a platform with a prebuild (${prebuilt}), or ${SOURCE_BUILD_HELP}. (${rest}.)`,
      { cause },
    );
  }
  const reason = cause instanceof Error ? cause.message.split('\n')[0] : String(cause);
  return new ConntrackError(
    'ERR_CONNTRACK_NATIVE',
    `conntrack's native addon ${file} did not load on ${where}: ${reason}. ` +
      `Use a platform with a prebuild (${prebuilt}), or ${SOURCE_BUILD_HELP}. (${rest}.)`,
    { cause },
  );
}

let loaded: Binding | undefined;

/** The addon, loaded on first call; throws ERR_CONNTRACK_NATIVE when there is none that loads. */
export function binding(): Binding {
  if (loaded === undefined) {
    const require = createRequire(import.meta.url);
    const root = packageRoot();
    // node-gyp-build's choice: a local build/Release first, then prebuilds/<platform>-<arch>
    // matched on libc; CONNTRACK_PREBUILD=DIR makes it look in DIR instead.
    const gypBuild = require('node-gyp-build') as { resolve(dir: string): string };
    let file: string;
    try {
      file = gypBuild.resolve(root);
    } catch (cause) {
      throw nativeUnavailable(process.env.CONNTRACK_PREBUILD ?? root, undefined, cause);
    }
    try {
      loaded = require(file) as Binding;
    } catch (cause) {
      throw nativeUnavailable(root, file, cause);
    }
  }
  return loaded;
}
