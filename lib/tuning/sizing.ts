/**
 * Conntrack table sizing: the kernel's own default model (what a machine gets when nobody
 * tunes it), the memory a setting costs, and a recommendation for a given load.
 *
 * The default model follows nf_conntrack_init_start() in net/netfilter/nf_conntrack_core.c.
 * Three eras, each checked against the kernel source of that era:
 *
 * - Linux < 4.0: buckets = RAM / 16384 / sizeof(struct hlist_head); more than 1 GiB of RAM gives
 *   16384 buckets; never fewer than 32; nf_conntrack_max = 4 x buckets.
 * - Linux 4.0 .. 5.14: as above, and more than 4 GiB gives 65536 buckets (commit "netfilter:
 *   conntrack: adjust nf_conntrack_buckets default value", Marcelo Leitner, 2014-12-23, first in 4.0).
 * - Linux >= 5.15: more than 4 GiB *on 64-bit* gives 262144 buckets, more than 1 GiB gives 65536,
 *   never fewer than 1024, and nf_conntrack_max = 1 x buckets (d532bcd0b269 "netfilter: conntrack:
 *   sanitize table size default settings", merged for 5.15-rc1). Still the rule in 6.18.
 *
 * In every era a hashsize given on the module/kernel command line (nf_conntrack.hashsize=N)
 * replaces the RAM rule and nf_conntrack_max becomes 8 x buckets ("When a table size is given we
 * use the old value of 8 to avoid implicit reduction of the max entries setting").
 *
 * The table is allocated by nf_ct_alloc_hashtable(), which rounds the bucket count up to a whole
 * number of pages: roundup(size, PAGE_SIZE / sizeof(struct hlist_nulls_head)). Since 4.7 (one
 * hash table for all namespaces, allocated in nf_conntrack_init_start) nf_conntrack_max is
 * computed from the rounded size; before 4.7 the table was allocated per namespace later, so
 * nf_conntrack_max used the unrounded size while nf_conntrack_buckets showed the rounded one.
 *
 * Distribution kernels may carry backports (OpenWrt 22.03 backported the 5.15 rule to 5.10):
 * when it matters, read the live values (lib/sysctl.ts) instead of trusting the release number.
 */
import { readFile } from 'node:fs/promises';
import { invalidArgument } from '../base/errors.js';

/** INT_MAX: nf_conntrack_max is an int sysctl (bounded 0..INT_MAX since 6.15, 8b6861390ffe). */
export const INT_MAX = 2 ** 31 - 1;

/**
 * Largest bucket count nf_ct_alloc_hashtable() accepts: the slot count times
 * sizeof(struct hlist_nulls_head) must stay within INT_MAX (9cc1c73ad666 and its follow-up), and
 * the count is first rounded up to a multiple of 512 (4 KiB pages, 8-byte heads).
 */
export const MAX_BUCKETS = Math.floor(INT_MAX / 8 / 512) * 512;

/** Size of a bucket head (struct hlist_nulls_head is one pointer). */
export const BUCKET_HEAD_BYTES = 8;

/**
 * Slab object size used when /proc/slabinfo cannot be read (it is root-only). 256 bytes is what
 * the `nf_conntrack` slab reports on a current x86-64 distribution kernel (6.18 here): struct
 * nf_conn rounded up to the cache line by SLAB_HWCACHE_ALIGN. Debug options make it larger
 * (the example assumes 320); extensions such as accounting and timestamps are
 * allocated separately and are not included.
 */
export const DEFAULT_OBJECT_SIZE = 256;

const GIB = 1024 ** 3;

export interface KernelRelease {
  major: number;
  minor: number;
  patch: number;
}

/** Parses `uname -r` output such as '6.18.44-fc-v782', '5.4.0-150-generic' or '4.19'. */
export function parseKernelRelease(release: string): KernelRelease {
  if (typeof release !== 'string') throw invalidArgument('kernelRelease must be a string such as "6.18.0"');
  const match = /^(\d+)\.(\d+)(?:\.(\d+))?(?:[-+._~].*)?$/.exec(release.trim());
  if (match === null) {
    throw invalidArgument(
      `kernelRelease "${release}" is not a kernel release; expected MAJOR.MINOR[.PATCH][-suffix] as printed by uname -r`,
    );
  }
  return { major: Number(match[1]), minor: Number(match[2]), patch: Number(match[3] ?? 0) };
}

function atLeast(release: KernelRelease, major: number, minor: number): boolean {
  return release.major > major || (release.major === major && release.minor >= minor);
}

function roundUp(value: number, multiple: number): number {
  return Math.ceil(value / multiple) * multiple;
}

export interface KernelDefaultsInput {
  /** `uname -r` of the kernel to model. */
  kernelRelease: string;
  /** RAM the kernel manages: MemTotal from /proc/meminfo (totalram_pages x PAGE_SIZE), in bytes. */
  memoryBytes: number;
  /** nf_conntrack.hashsize given at boot or module load; 0 or absent means "not given". */
  hashsizeParam?: number;
  /** sizeof(void *): 8 on 64-bit kernels (default), 4 on 32-bit ones. */
  pointerSize?: 8 | 4;
  /** PAGE_SIZE (default 4096; arm64 and ppc64 kernels may use 16384 or 65536). */
  pageSize?: number;
}

export interface KernelDefaults {
  /** nf_conntrack_buckets (= /sys/module/nf_conntrack/parameters/hashsize) after boot. */
  buckets: number;
  /** nf_conntrack_max after boot. */
  max: number;
  /** nf_conntrack_expect_max after boot: 4 x max(1, buckets / 256) (nf_conntrack_expect_init). */
  expectMax: number;
  /** Which source rule applied, with the kernel version it comes from. */
  rule: string;
}

function requirePositiveInteger(name: string, value: unknown, max = Number.MAX_SAFE_INTEGER): number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < 1 || value > max) {
    throw invalidArgument(`${name} must be an integer from 1 to ${max}, got ${String(value)}`);
  }
  return value;
}

/** The kernel's default nf_conntrack_buckets and nf_conntrack_max for a kernel and a machine. */
export function kernelDefaults(input: KernelDefaultsInput): KernelDefaults {
  const release = parseKernelRelease(input.kernelRelease);
  const memoryBytes = requirePositiveInteger('memoryBytes', input.memoryBytes);
  const pointerSize = input.pointerSize ?? 8;
  if (pointerSize !== 8 && pointerSize !== 4) throw invalidArgument('pointerSize must be 8 or 4');
  const pageSize = input.pageSize ?? 4096;
  if (![4096, 16384, 65536].includes(pageSize)) throw invalidArgument('pageSize must be 4096, 16384 or 65536');
  const hashsizeParam = input.hashsizeParam ?? 0;
  if (!Number.isInteger(hashsizeParam) || hashsizeParam < 0 || hashsizeParam > MAX_BUCKETS) {
    throw invalidArgument(`hashsizeParam must be an integer from 0 to ${MAX_BUCKETS}, got ${String(hashsizeParam)}`);
  }

  const nrPages = Math.floor(memoryBytes / pageSize);
  const pagesPerGiB = GIB / pageSize;
  // nf_ct_alloc_hashtable(): roundup(size, PAGE_SIZE / sizeof(struct hlist_nulls_head)).
  const granule = pageSize / pointerSize;
  const version = `${release.major}.${release.minor}`;
  const sanitized = atLeast(release, 5, 15);
  const singleTable = atLeast(release, 4, 7);

  let requested: number;
  let factor: number;
  let rule: string;
  if (hashsizeParam > 0) {
    // "When a table size is given we use the old value of 8" (every era).
    requested = hashsizeParam;
    factor = 8;
    rule = `hashsize=${hashsizeParam} given at boot: buckets = hashsize, nf_conntrack_max = 8 x buckets (nf_conntrack_init_start, all versions)`;
  } else if (sanitized) {
    // d532bcd0b269, Linux 5.15+: 262144 above 4 GiB on 64-bit, 65536 above 1 GiB, at least 1024, factor 1.
    const proportional = Math.floor(Math.floor((nrPages * pageSize) / 16384) / pointerSize);
    factor = 1;
    if (pointerSize === 8 && nrPages > 4 * pagesPerGiB) {
      requested = 262144;
      rule = `Linux ${version} (>= 5.15, d532bcd0b269): RAM > 4 GiB on a 64-bit kernel: 262144 buckets, nf_conntrack_max = 1 x buckets`;
    } else if (nrPages > pagesPerGiB) {
      requested = 65536;
      rule = `Linux ${version} (>= 5.15, d532bcd0b269): RAM > 1 GiB: 65536 buckets, nf_conntrack_max = 1 x buckets`;
    } else if (proportional < 1024) {
      requested = 1024;
      rule = `Linux ${version} (>= 5.15, d532bcd0b269): RAM / 16384 / ${pointerSize} = ${proportional} is below the floor: 1024 buckets, nf_conntrack_max = 1 x buckets`;
    } else {
      requested = proportional;
      rule = `Linux ${version} (>= 5.15, d532bcd0b269): buckets = RAM / 16384 / ${pointerSize}, nf_conntrack_max = 1 x buckets`;
    }
  } else {
    // Before 5.15: 16384 above 1 GiB, (4.0+) 65536 above 4 GiB on any word size, at least 32, factor 4.
    const proportional = Math.floor(Math.floor((nrPages * pageSize) / 16384) / pointerSize);
    const fourGiBRule = atLeast(release, 4, 0);
    const era = fourGiBRule ? '4.0 .. 5.14' : '< 4.0';
    factor = 4;
    if (fourGiBRule && nrPages > 4 * pagesPerGiB) {
      requested = 65536;
      rule = `Linux ${version} (${era}): RAM > 4 GiB: 65536 buckets, nf_conntrack_max = 4 x buckets`;
    } else if (nrPages > pagesPerGiB) {
      requested = 16384;
      rule = `Linux ${version} (${era}): RAM > 1 GiB: 16384 buckets, nf_conntrack_max = 4 x buckets`;
    } else if (proportional < 32) {
      requested = 32;
      rule = `Linux ${version} (${era}): RAM / 16384 / ${pointerSize} = ${proportional} is below the floor: 32 buckets, nf_conntrack_max = 4 x buckets`;
    } else {
      requested = proportional;
      rule = `Linux ${version} (${era}): buckets = RAM / 16384 / ${pointerSize}, nf_conntrack_max = 4 x buckets`;
    }
  }

  const buckets = roundUp(requested, granule);
  if (buckets !== requested) {
    rule += `; allocation rounds ${requested} up to ${buckets} (a multiple of PAGE_SIZE / ${pointerSize} = ${granule})`;
  }
  // From 4.7 the single table is allocated before nf_conntrack_max is computed.
  const max = factor * (singleTable ? buckets : requested);
  if (!singleTable && buckets !== requested) rule += '; before 4.7 nf_conntrack_max used the unrounded size';
  // nf_conntrack_expect_init() runs after the allocation from 4.7 on, before it earlier.
  const expectMax = 4 * Math.max(1, Math.floor((singleTable ? buckets : requested) / 256));
  return { buckets, max, expectMax, rule };
}

export interface MemoryCostInput {
  max: number;
  buckets: number;
  /** Bytes per conntrack entry: the `nf_conntrack` slab objsize (see readSlabObjectSize). */
  objectSize?: number;
}

export interface MemoryCost {
  perEntryBytes: number;
  /** max x perEntryBytes: what a full table holds in the nf_conntrack slab. */
  entriesBytes: number;
  /** buckets x 8: the hash table, allocated up front whether or not it is used. */
  bucketsBytes: number;
  totalBytes: number;
}

/** Worst-case kernel memory of a conntrack table (full table plus the bucket array). */
export function memoryCost(input: MemoryCostInput): MemoryCost {
  const max = requireCount('max', input.max, INT_MAX, 0);
  const buckets = requireCount('buckets', input.buckets, MAX_BUCKETS, 1);
  const perEntryBytes = input.objectSize === undefined ? DEFAULT_OBJECT_SIZE : requireObjectSize(input.objectSize);
  const entriesBytes = max * perEntryBytes;
  const bucketsBytes = buckets * BUCKET_HEAD_BYTES;
  return { perEntryBytes, entriesBytes, bucketsBytes, totalBytes: entriesBytes + bucketsBytes };
}

function requireCount(name: string, value: unknown, max: number, min: number): number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > max) {
    throw invalidArgument(`${name} must be an integer from ${min} to ${max}, got ${String(value)}`);
  }
  return value;
}

function requireObjectSize(value: unknown): number {
  // struct nf_conn is a few hundred bytes; anything outside 64 B .. 64 KiB is not a slab objsize.
  if (typeof value !== 'number' || !Number.isInteger(value) || value < 64 || value > 65536) {
    throw invalidArgument(`objectSize must be an integer number of bytes from 64 to 65536, got ${String(value)}`);
  }
  return value;
}

/** Finds the objsize column of the `nf_conntrack` line of /proc/slabinfo text. */
export function parseSlabObjectSize(slabinfo: string): number | undefined {
  for (const line of slabinfo.split('\n')) {
    // name active_objs num_objs objsize objperslab pagesperslab : tunables ...
    const fields = line.trim().split(/\s+/);
    if (fields[0] !== 'nf_conntrack') continue;
    const objsize = Number(fields[3]);
    return Number.isInteger(objsize) && objsize > 0 ? objsize : undefined;
  }
  return undefined;
}

/**
 * The `nf_conntrack` slab object size from /proc/slabinfo, or undefined when the file is not
 * readable (it is mode 0400: root only) or has no such cache (conntrack not loaded, or the cache
 * was merged with another one of the same size).
 */
export async function readSlabObjectSize(path = '/proc/slabinfo'): Promise<number | undefined> {
  try {
    return parseSlabObjectSize(await readFile(path, 'utf8'));
  } catch {
    return undefined;
  }
}

export interface RecommendInput {
  /** Peak concurrent connections to track (include ones lingering in TIME_WAIT). */
  connections: number;
  /** Conntrack entries per connection: 1 for a plain or NATed flow, 2 through a local proxy. */
  flowsPerConnection?: number;
  /** Multiplier over the peak (default 2). */
  headroom?: number;
  /** Conntrack entries per hash bucket when the table is full (default 1, like the kernel since 5.15). */
  entriesPerBucket?: number;
  /** Bytes per entry; default DEFAULT_OBJECT_SIZE (pass readSlabObjectSize()'s answer). */
  objectSize?: number;
  /** Kernel release, to compare with its default. */
  kernelRelease?: string;
  /** MemTotal in bytes, to compare with its default and to warn when the table is a large share of RAM. */
  memoryBytes?: number;
}

export interface Recommendation {
  max: number;
  buckets: number;
  memory: MemoryCost;
  /** Hash nodes per bucket in a full table: 2 x max / buckets (every entry is hashed twice). */
  averageChainLength: number;
  reasons: string[];
  /** sysctl name → value, as a sysctl.d file would hold them. */
  sysctl: Record<string, string | number>;
  /** Shell commands that apply the recommendation now (as root, in the initial namespace). */
  commands: string[];
}

export const DEFAULT_HEADROOM = 2;
const MAX_ROUNDING = 1024;

function formatBytes(bytes: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return `${unit === 0 ? value : value.toFixed(1)} ${units[unit]}`;
}

/** Recommended nf_conntrack_max and bucket count for a load. */
export function recommend(input: RecommendInput): Recommendation {
  if (input === null || typeof input !== 'object') throw invalidArgument('recommend() takes an options object');
  const connections = requireCount('connections', input.connections, INT_MAX, 1);
  const flows = input.flowsPerConnection ?? 1;
  if (typeof flows !== 'number' || !Number.isInteger(flows) || flows < 1 || flows > 64) {
    throw invalidArgument(`flowsPerConnection must be an integer from 1 to 64, got ${String(flows)}`);
  }
  const headroom = input.headroom ?? DEFAULT_HEADROOM;
  if (typeof headroom !== 'number' || !Number.isFinite(headroom) || headroom < 1 || headroom > 16) {
    throw invalidArgument(`headroom must be a number from 1 to 16, got ${String(headroom)}`);
  }
  const entriesPerBucket = input.entriesPerBucket ?? 1;
  if (typeof entriesPerBucket !== 'number' || !Number.isFinite(entriesPerBucket) || entriesPerBucket < 0.5 || entriesPerBucket > 8) {
    throw invalidArgument(`entriesPerBucket must be a number from 0.5 to 8, got ${String(entriesPerBucket)}`);
  }
  const objectSize = input.objectSize === undefined ? DEFAULT_OBJECT_SIZE : requireObjectSize(input.objectSize);

  const wanted = Math.ceil(connections * flows * headroom);
  const max = roundUp(wanted, MAX_ROUNDING);
  if (max > INT_MAX) {
    throw invalidArgument(
      `${connections} connections x ${flows} flows x headroom ${headroom} needs ${wanted} entries, above the kernel's limit for nf_conntrack_max (${INT_MAX})`,
    );
  }
  // 512 = PAGE_SIZE / sizeof(struct hlist_nulls_head): the kernel allocates whole pages of buckets
  // and reports the rounded count, so asking for a multiple of it makes the read-back match.
  const buckets = Math.min(roundUp(Math.ceil(max / entriesPerBucket), 512), MAX_BUCKETS);
  const memory = memoryCost({ max, buckets, objectSize });
  const averageChainLength = (2 * max) / buckets;

  const reasons: string[] = [
    `nf_conntrack_max = ${connections} connections x ${flows} flow(s) x headroom ${headroom} = ${wanted}, rounded up to a multiple of ${MAX_ROUNDING}: ${max}.`,
    `Headroom covers entries that outlive their connection (TIME_WAIT lasts nf_conntrack_tcp_timeout_time_wait, 120 s by default) and bursts: a full table drops new flows, and assured (established) entries are never early-dropped to make room.`,
    `nf_conntrack_buckets = ${buckets}: ${entriesPerBucket} entr${entriesPerBucket === 1 ? 'y' : 'ies'} per bucket when full, rounded up to a multiple of 512 (the kernel allocates whole pages of 8-byte bucket heads and reports the rounded count).`,
    `Every entry is hashed twice (original and reply direction), so a full table averages ${averageChainLength.toFixed(2)} nodes per chain; Linux 5.15+ uses buckets = max by default to keep this at 2, and refuses to insert into chains that grew past a (randomised) limit (counted as chaintoolong).`,
    `Memory when full: ${max} x ${objectSize} B = ${formatBytes(memory.entriesBytes)} of nf_conntrack slab (plus extensions such as acct/timestamp), and ${buckets} x 8 B = ${formatBytes(memory.bucketsBytes)} of bucket array allocated up front; total ${formatBytes(memory.totalBytes)}.`,
  ];
  if (input.objectSize === undefined) {
    reasons.push(`Entry size assumed ${DEFAULT_OBJECT_SIZE} B (no /proc/slabinfo figure given); run as root to use the real nf_conntrack objsize.`);
  }
  if (input.kernelRelease !== undefined && input.memoryBytes !== undefined) {
    const defaults = kernelDefaults({ kernelRelease: input.kernelRelease, memoryBytes: input.memoryBytes });
    reasons.push(`This kernel's default would be nf_conntrack_max ${defaults.max} with ${defaults.buckets} buckets (${defaults.rule}).`);
  } else if (input.kernelRelease !== undefined) {
    parseKernelRelease(input.kernelRelease);
  }
  if (input.memoryBytes !== undefined) {
    const memoryBytes = requirePositiveInteger('memoryBytes', input.memoryBytes);
    const share = memory.totalBytes / memoryBytes;
    if (share > 0.25) {
      reasons.push(`Warning: a full table would use ${(share * 100).toFixed(0)} % of RAM (${formatBytes(memoryBytes)}); lower the timeouts or the headroom, or add memory.`);
    }
  }

  const sysctl: Record<string, string | number> = {
    'net.netfilter.nf_conntrack_max': max,
    'net.netfilter.nf_conntrack_buckets': buckets,
  };
  const commands = [
    // The module parameter resizes the table on every version and is what the udev/modprobe
    // persistence uses; the buckets sysctl is writable only since 4.8.
    `echo ${buckets} > /sys/module/nf_conntrack/parameters/hashsize`,
    `sysctl -w net.netfilter.nf_conntrack_max=${max}`,
  ];
  return { max, buckets, memory, averageChainLength, reasons, sysctl, commands };
}
