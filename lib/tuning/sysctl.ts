/**
 * Typed access to the conntrack sysctls (`net.netfilter.nf_conntrack_*`), in this process's
 * network namespace or another one.
 *
 * Names are looked up in the directory listing of /proc/sys/net/netfilter of the target
 * namespace: user input is compared with the listing and never becomes part of a path.
 * Types and ranges come from the kernel's ctl_table entries (proc_handler, extra1/extra2) in
 * net/netfilter/nf_conntrack_standalone.c and net/ipv6/netfilter/nf_conntrack_reasm.c.
 *
 * /proc/sys shows the sysctls of the reader's network namespace, so another namespace is read
 * from a native thread that entered it (binding().netns*File); this process's own namespace is
 * read with node:fs.
 */
import { netnsPath } from '../binding/netns.js';
import { readdir, readFile, stat, writeFile } from 'node:fs/promises';
import { ConntrackError, invalidArgument, resourceError } from '../base/errors.js';
import { binding } from '../binding/native.js';
import { MAX_BUCKETS } from './sizing.js';
import type { NetnsSpec } from '../base/types.js';

const SYSCTL_DIR = '/proc/sys/net/netfilter';
const HASHSIZE_PARAMETER = '/sys/module/nf_conntrack/parameters/hashsize';
const FULL_PREFIX = 'net.netfilter.';
const INT_MAX = 2 ** 31 - 1;
const U8_MAX = 255;

/**
 * Inode number of the initial network namespace: PROC_NET_INIT_INO (0xEFFFFFF9) in
 * include/linux/proc_ns.h, fixed since Linux 3.8. Used instead of /proc/1/ns/net because pid 1
 * may itself live in a container's namespace, and its ns links can be unreadable even to root.
 */
export const INITIAL_NETNS_INODE = 0xeffffff9;

/**
 * Longest timeout, in seconds, that every kernel accepts: proc_dointvec_jiffies rejects values
 * above INT_MAX / HZ (do_proc_dointvec_jiffies_conv), and HZ is at most 1000.
 */
export const MAX_TIMEOUT_SECONDS = Math.floor(INT_MAX / 1000);

export type SysctlType = 'integer' | 'boolean' | 'seconds' | 'bytes' | 'protocol';

/** global: one value for the whole kernel, shown in every namespace. per-netns: each namespace has its own. */
export type SysctlScope = 'global' | 'per-netns' | 'unknown';

/** Where a setting can be written. */
export type SysctlWritability = 'read-only' | 'initial-netns-only' | 'any-netns';

export interface SysctlDescription {
  /** Full name, e.g. net.netfilter.nf_conntrack_max. */
  name: string;
  type: SysctlType;
  /** Inclusive bounds this library enforces before writing (undefined: none known). */
  min: number | undefined;
  max: number | undefined;
  unit: string | undefined;
  scope: SysctlScope;
  writable: SysctlWritability;
  /** The kernel's proc_handler for the entry. */
  kernelHandler: string;
  description: string;
  /** False for a name the running kernel lists but this library has no table entry for. */
  known: boolean;
}

type Entry = Omit<SysctlDescription, 'name' | 'known'>;

function timeout(description: string): Entry {
  return {
    type: 'seconds',
    min: 1,
    max: MAX_TIMEOUT_SECONDS,
    unit: 'seconds',
    scope: 'per-netns',
    writable: 'any-netns',
    kernelHandler: 'proc_dointvec_jiffies',
    description,
  };
}

function flag(description: string): Entry {
  return {
    type: 'boolean',
    min: 0,
    max: 1,
    unit: undefined,
    scope: 'per-netns',
    writable: 'any-netns',
    kernelHandler: 'proc_dou8vec_minmax (extra1 SYSCTL_ZERO, extra2 SYSCTL_ONE)',
    description,
  };
}

/** The conntrack sysctls of Linux 4.x .. 6.18, from the kernel's ctl_table entries. */
const TABLE: Readonly<Record<string, Entry>> = {
  nf_conntrack_max: {
    type: 'integer',
    min: 0,
    max: INT_MAX,
    unit: 'entries',
    scope: 'global',
    writable: 'initial-netns-only',
    kernelHandler: 'proc_dointvec_minmax (0 .. INT_MAX since 6.15, 8b6861390ffe; proc_dointvec before)',
    description:
      'Maximum number of conntrack entries. One global limit, checked against each namespace\'s own count; read-only outside the initial namespace (2671fa4dc010, 5.13 and stable).',
  },
  nf_conntrack_count: {
    type: 'integer',
    min: undefined,
    max: undefined,
    unit: 'entries',
    scope: 'per-netns',
    writable: 'read-only',
    kernelHandler: 'proc_dointvec (mode 0444)',
    description: 'Entries currently tracked in this namespace.',
  },
  nf_conntrack_buckets: {
    type: 'integer',
    min: 1,
    max: MAX_BUCKETS,
    unit: 'buckets',
    scope: 'global',
    writable: 'initial-netns-only',
    kernelHandler: 'nf_conntrack_hash_sysctl (writable since 4.8; read-only before: use the hashsize module parameter)',
    description:
      'Size of the hash table shared by all namespaces. The kernel rounds it up to whole pages (a multiple of 512 with 4 KiB pages) and reports the rounded size.',
  },
  nf_conntrack_expect_max: {
    type: 'integer',
    min: 1,
    max: INT_MAX,
    unit: 'expectations',
    scope: 'global',
    writable: 'initial-netns-only',
    kernelHandler: 'proc_dointvec_minmax (1 .. INT_MAX since 6.15; proc_dointvec before)',
    description: 'Maximum number of expectations (related connections announced by helpers). Global.',
  },
  nf_conntrack_checksum: flag('Verify checksums of incoming packets; packets with bad checksums are INVALID.'),
  nf_conntrack_acct: flag('Per-entry packet and byte counters (CTA_COUNTERS_*), for entries created after it is set.'),
  nf_conntrack_timestamp: flag('Per-entry start and stop timestamps (CTA_TIMESTAMP), for entries created after it is set.'),
  nf_conntrack_helper: flag('Automatic helper assignment by port (removed in 6.0).'),
  nf_conntrack_tcp_loose: flag('Pick up connections already established when first seen.'),
  nf_conntrack_tcp_be_liberal: flag('Mark only out-of-window RST segments as INVALID.'),
  nf_conntrack_tcp_ignore_invalid_rst: flag('Do not mark out-of-window RST segments as INVALID (5.14+).'),
  nf_conntrack_dccp_loose: flag('Pick up DCCP connections already established (DCCP was removed in 6.16).'),
  nf_conntrack_default_on: flag('Enable conntrack in new namespaces by default (4.10 .. 4.12 only).'),
  nf_conntrack_events: {
    type: 'integer',
    min: 0,
    max: 2,
    unit: undefined,
    scope: 'per-netns',
    writable: 'any-netns',
    kernelHandler: 'proc_dou8vec_minmax (extra2 SYSCTL_TWO; 0/1 before 5.19)',
    description: 'Conntrack event notifications over ctnetlink: 0 off, 1 on, 2 only when a listener or rule needs them.',
  },
  nf_conntrack_log_invalid: {
    type: 'protocol',
    min: 0,
    max: U8_MAX,
    unit: 'IP protocol number',
    scope: 'per-netns',
    writable: 'any-netns',
    kernelHandler: 'proc_dou8vec_minmax (u8)',
    description: 'Log invalid packets of this IP protocol (6 TCP, 17 UDP, ...); 255 logs all, 0 none.',
  },
  nf_conntrack_tcp_max_retrans: {
    type: 'integer',
    min: 0,
    max: U8_MAX,
    unit: 'retransmissions',
    scope: 'per-netns',
    writable: 'any-netns',
    kernelHandler: 'proc_dou8vec_minmax (u8)',
    description: 'Retransmissions without an acceptable ACK before nf_conntrack_tcp_timeout_max_retrans applies.',
  },
  nf_conntrack_frag6_low_thresh: {
    type: 'bytes',
    min: 0,
    max: Number.MAX_SAFE_INTEGER,
    unit: 'bytes',
    scope: 'per-netns',
    writable: 'any-netns',
    kernelHandler: 'proc_doulongvec_minmax (extra2 = nf_conntrack_frag6_high_thresh)',
    description: 'IPv6 reassembly memory the fragment handler shrinks back to; at most nf_conntrack_frag6_high_thresh.',
  },
  nf_conntrack_frag6_high_thresh: {
    type: 'bytes',
    min: 0,
    max: Number.MAX_SAFE_INTEGER,
    unit: 'bytes',
    scope: 'per-netns',
    writable: 'any-netns',
    kernelHandler: 'proc_doulongvec_minmax (extra1 = nf_conntrack_frag6_low_thresh)',
    description: 'Maximum memory used to reassemble IPv6 fragments; at least nf_conntrack_frag6_low_thresh.',
  },
  nf_conntrack_frag6_timeout: timeout('Time an incomplete IPv6 fragment queue is kept.'),
  nf_conntrack_events_retry_timeout: timeout('Reliable event redelivery interval (removed in 4.10).'),
  nf_conntrack_generic_timeout: timeout('Timeout of entries of protocols without their own tracker.'),
  nf_conntrack_tcp_timeout_syn_sent: timeout('TCP: SYN sent, no answer yet.'),
  nf_conntrack_tcp_timeout_syn_recv: timeout('TCP: SYN/ACK seen.'),
  nf_conntrack_tcp_timeout_established: timeout('TCP: established (default 432000 s, five days).'),
  nf_conntrack_tcp_timeout_fin_wait: timeout('TCP: FIN seen.'),
  nf_conntrack_tcp_timeout_close_wait: timeout('TCP: FIN acknowledged, waiting for the other FIN.'),
  nf_conntrack_tcp_timeout_last_ack: timeout('TCP: second FIN seen.'),
  nf_conntrack_tcp_timeout_time_wait: timeout('TCP: closed, lingering in TIME_WAIT.'),
  nf_conntrack_tcp_timeout_close: timeout('TCP: RST seen.'),
  nf_conntrack_tcp_timeout_max_retrans: timeout('TCP: too many retransmissions without an ACK.'),
  nf_conntrack_tcp_timeout_unacknowledged: timeout('TCP: data not acknowledged.'),
  nf_conntrack_udp_timeout: timeout('UDP: one direction seen.'),
  nf_conntrack_udp_timeout_stream: timeout('UDP: both directions seen (a stream).'),
  nf_conntrack_udplite_timeout: timeout('UDP-Lite: one direction seen (merged into UDP in 5.x).'),
  nf_conntrack_udplite_timeout_stream: timeout('UDP-Lite: both directions seen.'),
  nf_conntrack_icmp_timeout: timeout('ICMP.'),
  nf_conntrack_icmpv6_timeout: timeout('ICMPv6.'),
  nf_conntrack_gre_timeout: timeout('GRE: one direction seen.'),
  nf_conntrack_gre_timeout_stream: timeout('GRE: both directions seen.'),
  nf_conntrack_sctp_timeout_closed: timeout('SCTP: CLOSED.'),
  nf_conntrack_sctp_timeout_cookie_wait: timeout('SCTP: COOKIE_WAIT.'),
  nf_conntrack_sctp_timeout_cookie_echoed: timeout('SCTP: COOKIE_ECHOED.'),
  nf_conntrack_sctp_timeout_established: timeout('SCTP: ESTABLISHED.'),
  nf_conntrack_sctp_timeout_shutdown_sent: timeout('SCTP: SHUTDOWN_SENT.'),
  nf_conntrack_sctp_timeout_shutdown_recd: timeout('SCTP: SHUTDOWN_RECD.'),
  nf_conntrack_sctp_timeout_shutdown_ack_sent: timeout('SCTP: SHUTDOWN_ACK_SENT.'),
  nf_conntrack_sctp_timeout_heartbeat_sent: timeout('SCTP: HEARTBEAT_SENT.'),
  nf_conntrack_sctp_timeout_heartbeat_acked: timeout('SCTP: HEARTBEAT_ACKED (removed in 6.1).'),
  nf_conntrack_dccp_timeout_request: timeout('DCCP: REQUEST.'),
  nf_conntrack_dccp_timeout_respond: timeout('DCCP: RESPOND.'),
  nf_conntrack_dccp_timeout_partopen: timeout('DCCP: PARTOPEN.'),
  nf_conntrack_dccp_timeout_open: timeout('DCCP: OPEN.'),
  nf_conntrack_dccp_timeout_closereq: timeout('DCCP: CLOSEREQ.'),
  nf_conntrack_dccp_timeout_closing: timeout('DCCP: CLOSING.'),
  nf_conntrack_dccp_timeout_timewait: timeout('DCCP: TIMEWAIT.'),
};

/** Short names (nf_conntrack_*) this library has a table entry for. */
export const KNOWN_SYSCTLS: readonly string[] = Object.freeze(Object.keys(TABLE).sort());

function sysctlError(message: string, cause?: unknown): ConntrackError {
  return new ConntrackError('ERR_CONNTRACK_SYSCTL', message, cause === undefined ? {} : { cause });
}

/**
 * Checks the shape of a name and returns its short form (nf_conntrack_max). Accepts
 * `net.netfilter.nf_conntrack_max` and `nf_conntrack_max`; anything with a path separator,
 * dots elsewhere, or other characters is refused before any lookup.
 */
export function normalizeSysctlName(name: unknown): string {
  if (typeof name !== 'string') throw sysctlError(`a sysctl name must be a string, got ${typeof name}`);
  const short = name.startsWith(FULL_PREFIX) ? name.slice(FULL_PREFIX.length) : name;
  if (short.length > 96 || !/^nf_conntrack_[a-z0-9_]+$/.test(short)) {
    throw sysctlError(
      `"${printable(name)}" is not a conntrack sysctl name: expected net.netfilter.nf_conntrack_<name> or nf_conntrack_<name> ` +
        '(lowercase letters, digits and underscores; names are looked up in /proc/sys/net/netfilter, never used as paths)',
    );
  }
  return short;
}

function printable(text: string): string {
  const shown = text.length > 60 ? `${text.slice(0, 60)}...` : text;
  return shown.replace(/[^\x20-\x7e]/g, '?');
}

function editDistance(a: string, b: string): number {
  const row = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i += 1) {
    let diagonal = row[0]!;
    row[0] = i;
    for (let j = 1; j <= b.length; j += 1) {
      const above = row[j]!;
      row[j] = Math.min(above + 1, row[j - 1]! + 1, diagonal + (a[i - 1] === b[j - 1] ? 0 : 1));
      diagonal = above;
    }
  }
  return row[b.length]!;
}

/** Up to five names of `candidates` closest to `short` (edit distance, or sharing its words). */
export function closeMatches(short: string, candidates: readonly string[]): string[] {
  const core = short.replace(/^nf_conntrack_/, '');
  const words = core.split('_').filter((word) => word.length >= 3);
  return candidates
    .map((candidate) => {
      const candidateCore = candidate.replace(/^nf_conntrack_/, '');
      let score = editDistance(core, candidateCore);
      if (candidateCore.includes(core) || core.includes(candidateCore)) score = Math.min(score, 1);
      else if (words.some((word) => candidateCore.includes(word))) score = Math.min(score, 3);
      return { candidate, score };
    })
    .filter(({ score }) => score <= Math.max(3, Math.floor(core.length / 4)))
    .sort((x, y) => x.score - y.score || x.candidate.localeCompare(y.candidate))
    .slice(0, 5)
    .map(({ candidate }) => FULL_PREFIX + candidate);
}

/**
 * Resolves a user-given name against the names the kernel lists. Returns the listing's own
 * entry, so the caller builds paths only from kernel-provided names.
 */
export function resolveSysctlName(name: unknown, listing: readonly string[]): string {
  const short = normalizeSysctlName(name);
  const found = listing.find((entry) => entry === short);
  if (found !== undefined) return found;
  const conntrackNames = listing.filter((entry) => entry.startsWith('nf_conntrack_'));
  const suggestions = closeMatches(short, conntrackNames);
  const hint = suggestions.length > 0 ? ` Did you mean: ${suggestions.join(', ')}?` : '';
  const known = short in TABLE
    ? ' This kernel or namespace does not expose it (a protocol tracker not built, conntrack not loaded, or a setting of another kernel version).'
    : '';
  throw sysctlError(`unknown sysctl net.netfilter.${short}.${known}${hint}`);
}

/** Type, range, unit, scope and writability of a setting (from the kernel's sysctl tables). */
export function describeSysctl(name: unknown): SysctlDescription {
  const short = normalizeSysctlName(name);
  const entry = TABLE[short];
  if (entry === undefined) {
    const suggestions = closeMatches(short, KNOWN_SYSCTLS);
    const hint = suggestions.length > 0 ? ` Did you mean: ${suggestions.join(', ')}?` : '';
    throw sysctlError(`unknown sysctl net.netfilter.${short}.${hint}`);
  }
  return { name: FULL_PREFIX + short, known: true, ...entry };
}

function describeListed(short: string): SysctlDescription {
  const entry = TABLE[short];
  if (entry !== undefined) return { name: FULL_PREFIX + short, known: true, ...entry };
  // Listed by the running kernel but newer than this table: allow integers, the kernel checks the rest.
  return {
    name: FULL_PREFIX + short,
    known: false,
    type: 'integer',
    min: undefined,
    max: undefined,
    unit: undefined,
    scope: 'unknown',
    writable: 'any-netns',
    kernelHandler: 'unknown',
    description: 'Exposed by this kernel; not in this library\'s table, so only the integer form is checked.',
  };
}

/** Checks a value against a setting's type and range and returns it as a number. */
export function parseSysctlValue(description: SysctlDescription, value: unknown): number {
  let number: number;
  if (typeof value === 'boolean' && description.type === 'boolean') {
    number = value ? 1 : 0;
  } else if (typeof value === 'number') {
    number = value;
  } else if (typeof value === 'string' && /^\s*-?\d+\s*$/.test(value)) {
    number = Number(value.trim());
  } else {
    throw sysctlError(`${description.name} takes an integer${rangeText(description)}, got ${JSON.stringify(value) ?? String(value)}`);
  }
  if (!Number.isSafeInteger(number)) {
    throw sysctlError(`${description.name} takes an integer${rangeText(description)}, got ${String(value)}`);
  }
  const { min, max } = description;
  if ((min !== undefined && number < min) || (max !== undefined && number > max)) {
    let why = '';
    if (description.type === 'seconds') {
      why = ` (the kernel stores timeouts in jiffies and refuses more than INT_MAX / HZ; ${MAX_TIMEOUT_SECONDS} s is safe for every HZ)`;
    } else if (description.type === 'boolean') {
      why = ' (0 off, 1 on)';
    }
    throw sysctlError(`${description.name} = ${number} is out of range${rangeText(description)}${why}`);
  }
  return number;
}

function rangeText(description: SysctlDescription): string {
  const { min, max, unit } = description;
  if (min === undefined && max === undefined) return '';
  const unitText = unit === undefined ? '' : ` ${unit}`;
  if (max === undefined) return ` >= ${min}${unitText}`;
  if (min === undefined) return ` <= ${max}${unitText}`;
  return ` from ${min} to ${max}${unitText}`;
}

/** How sysctl files of one namespace are reached. */
export interface NetnsFiles {
  /** Namespace file, or null for this process's namespace. */
  readonly nsPath: string | null;
  listDir(path: string): Promise<string[]>;
  readFile(path: string): Promise<string>;
  writeFile(path: string, data: string): Promise<void>;
  /** Inode number of the namespace (compared with INITIAL_NETNS_INODE). */
  inode(): Promise<number>;
}

function ownNamespaceFiles(): NetnsFiles {
  return {
    nsPath: null,
    listDir: (path) => readdir(path),
    readFile: (path) => readFile(path, 'utf8'),
    writeFile: (path, data) => writeFile(path, data),
    inode: async () => (await stat('/proc/thread-self/ns/net')).ino,
  };
}

function nativeNamespaceFiles(nsPath: string): NetnsFiles {
  // Another namespace's procfs is read from a native thread inside it; without the addon,
  // binding() throws ERR_CONNTRACK_NATIVE, which says what to do.
  const native = () => binding();
  return {
    nsPath,
    listDir: (path) => native().netnsListDir(nsPath, path),
    readFile: (path) => native().netnsReadFile(nsPath, path),
    writeFile: (path, data) => native().netnsWriteFile(nsPath, path, data),
    inode: async () => (await stat(nsPath)).ino,
  };
}

export interface SysctlOptions {
  /** Network namespace: a path (/run/netns/NAME, /proc/PID/ns/net) or a pid. Default: this process's. */
  netns?: NetnsSpec;
}

async function namespaceFiles(options: SysctlOptions | undefined): Promise<NetnsFiles> {
  if (options?.netns === undefined) return ownNamespaceFiles();
  const path = netnsPath(options.netns);
  let target;
  try {
    target = await stat(path);
  } catch (cause) {
    throw new ConntrackError('ERR_CONNTRACK_NETNS', `network namespace ${path} does not exist or is not accessible`, { cause });
  }
  // Our own namespace needs no native thread.
  const own = await stat('/proc/thread-self/ns/net');
  if (own.ino === target.ino && own.dev === target.dev) return ownNamespaceFiles();
  return nativeNamespaceFiles(path);
}

interface SystemError {
  code?: string;
  errno?: number;
  syscall?: string;
}

function errorCode(error: unknown): string | undefined {
  const { code, errno } = (error ?? {}) as SystemError;
  if (typeof code === 'string') return code;
  if (typeof errno === 'number') {
    const byNumber: Record<number, string> = { 1: 'EPERM', 2: 'ENOENT', 13: 'EACCES', 22: 'EINVAL', 95: 'EOPNOTSUPP' };
    return byNumber[Math.abs(errno)];
  }
  return undefined;
}

function translateError(error: unknown, action: string): ConntrackError {
  if (error instanceof ConntrackError) return error;
  const code = errorCode(error);
  const { errno, syscall } = (error ?? {}) as SystemError;
  const details = { cause: error, ...(typeof errno === 'number' ? { errno: Math.abs(errno) } : {}), ...(syscall ? { syscall } : {}) };
  if (syscall === 'open netns' && code !== 'EACCES' && code !== 'EPERM') {
    // The namespace file itself: missing, not on nsfs, not a network namespace.
    return new ConntrackError('ERR_CONNTRACK_NETNS', `${action}: ${(error as Error)?.message ?? String(error)}`, details);
  }
  if (code === 'EACCES' || code === 'EPERM') {
    const enteringNamespace = syscall === 'setns';
    return new ConntrackError(
      'ERR_CONNTRACK_PERMISSION',
      enteringNamespace
        ? `${action}: entering another network namespace needs CAP_SYS_ADMIN; run as root`
        : `${action}: permission denied; run as root, or grant CAP_NET_ADMIN (writing sysctls) to the process`,
      { ...details, capability: enteringNamespace ? 'CAP_SYS_ADMIN' : 'CAP_NET_ADMIN' },
    );
  }
  if (code === 'EINVAL') return new ConntrackError('ERR_CONNTRACK_SYSCTL', `${action}: the kernel rejected the value (EINVAL)`, details);
  if (code === 'ENOENT') {
    return new ConntrackError('ERR_CONNTRACK_UNAVAILABLE', `${action}: not present (is conntrack loaded in this kernel?)`, details);
  }
  const resource = resourceError(error, details);
  if (resource !== undefined) return resource;
  return new ConntrackError('ERR_CONNTRACK_KERNEL', `${action}: ${(error as Error)?.message ?? String(error)}`, details);
}

async function listConntrackSysctls(files: NetnsFiles): Promise<string[]> {
  let listing: string[];
  try {
    listing = await files.listDir(SYSCTL_DIR);
  } catch (error) {
    throw translateError(error, `listing ${SYSCTL_DIR}`);
  }
  return listing.filter((entry) => entry.startsWith('nf_conntrack_')).sort();
}

function parseReadValue(text: string): number | string {
  const trimmed = text.trim();
  return /^-?\d+$/.test(trimmed) && Number.isSafeInteger(Number(trimmed)) ? Number(trimmed) : trimmed;
}

async function readListed(files: NetnsFiles, short: string): Promise<number | string> {
  try {
    return parseReadValue(await files.readFile(`${SYSCTL_DIR}/${short}`));
  } catch (error) {
    throw translateError(error, `reading net.netfilter.${short}`);
  }
}

/** @internal Reads one setting through the given file access (tests pass a fake). */
export async function readSysctlWith(files: NetnsFiles, name: unknown): Promise<number | string> {
  normalizeSysctlName(name); // refuse malformed names before touching the kernel
  const short = resolveSysctlName(name, await listConntrackSysctls(files));
  return readListed(files, short);
}

/** @internal */
export async function readAllSysctlsWith(files: NetnsFiles): Promise<Record<string, number | string>> {
  const result: Record<string, number | string> = {};
  for (const short of await listConntrackSysctls(files)) {
    result[FULL_PREFIX + short] = await readListed(files, short);
  }
  return result;
}

/** Bucket counts the kernel may report after being asked for `requested` (it rounds up to whole pages). */
function acceptableBucketReadBacks(requested: number): Set<number> {
  // PAGE_SIZE / sizeof(pointer) for 4, 16 and 64 KiB pages on 64- and 32-bit kernels.
  const granules = [512, 1024, 2048, 4096, 8192, 16384];
  return new Set(granules.map((granule) => Math.ceil(requested / granule) * granule));
}

/** @internal Writes one setting through the given file access (tests pass a fake). */
export async function writeSysctlWith(files: NetnsFiles, name: unknown, value: unknown): Promise<number> {
  normalizeSysctlName(name); // refuse malformed names before touching the kernel
  const short = resolveSysctlName(name, await listConntrackSysctls(files));
  const description = describeListed(short);
  if (description.writable === 'read-only') throw sysctlError(`${description.name} is read-only`);
  const number = parseSysctlValue(description, value);

  const initial = (await files.inode().catch(() => undefined)) === INITIAL_NETNS_INODE;
  if (description.writable === 'initial-netns-only' && !initial) {
    throw sysctlError(
      `${description.name} can only be changed from the initial network namespace: the limit is global (one table and one ` +
        `limit for the whole kernel, shown read-only in every other namespace). Change it on the host` +
        (files.nsPath === null ? '' : ` instead of in ${files.nsPath}`) + '.',
    );
  }
  if (short === 'nf_conntrack_frag6_low_thresh' || short === 'nf_conntrack_frag6_high_thresh') {
    await checkFragmentThresholds(files, short, number);
  }

  const path = `${SYSCTL_DIR}/${short}`;
  try {
    await files.writeFile(path, `${number}\n`);
  } catch (error) {
    const code = errorCode(error);
    if (short === 'nf_conntrack_buckets' && code === 'EACCES' && initial) {
      // Before 4.8 nf_conntrack_buckets is read-only; the module parameter resizes the table.
      try {
        await files.writeFile(HASHSIZE_PARAMETER, `${number}\n`);
      } catch (fallbackError) {
        throw translateError(fallbackError, `writing ${HASHSIZE_PARAMETER}`);
      }
    } else if ((code === 'EACCES' || code === 'EPERM') && description.writable === 'initial-netns-only') {
      throw sysctlError(
        `${description.name} is read-only here: only the initial network namespace may change it, the limit is global`,
        error,
      );
    } else {
      throw translateError(error, `writing ${description.name} = ${number}`);
    }
  }

  const readBack = await readListed(files, short);
  const accepted = short === 'nf_conntrack_buckets' ? acceptableBucketReadBacks(number) : new Set([number]);
  if (typeof readBack !== 'number' || !accepted.has(readBack)) {
    throw sysctlError(`wrote ${description.name} = ${number} but the kernel reports ${String(readBack)}; the setting did not take`);
  }
  return readBack;
}

async function checkFragmentThresholds(files: NetnsFiles, short: string, value: number): Promise<void> {
  const low = short === 'nf_conntrack_frag6_low_thresh';
  const other = low ? 'nf_conntrack_frag6_high_thresh' : 'nf_conntrack_frag6_low_thresh';
  const otherValue = await readListed(files, other).catch(() => undefined);
  if (typeof otherValue !== 'number') return;
  if (low ? value > otherValue : value < otherValue) {
    throw sysctlError(
      `net.netfilter.${short} = ${value} must be ${low ? 'at most' : 'at least'} net.netfilter.${other} (${otherValue}); ` +
        `change ${low ? 'the high threshold first' : 'the low threshold first'}`,
    );
  }
}

/** Reads one setting. Numbers come back as numbers, anything else as trimmed text. */
export async function readSysctl(name: string, options?: SysctlOptions): Promise<number | string> {
  return readSysctlWith(await namespaceFiles(options), name);
}

/** Every net.netfilter.nf_conntrack_* setting the kernel exposes in the namespace, by full name. */
export async function readAllSysctls(options?: SysctlOptions): Promise<Record<string, number | string>> {
  return readAllSysctlsWith(await namespaceFiles(options));
}

/**
 * Validates and writes one setting, then reads it back; resolves with the value the kernel
 * reports (for nf_conntrack_buckets, rounded up to whole pages).
 */
export async function writeSysctl(name: string, value: number | string | boolean, options?: SysctlOptions): Promise<number> {
  return writeSysctlWith(await namespaceFiles(options), name, value);
}

export { netnsPath } from '../binding/netns.js';
