/**
 * Public data types of the library. Field names follow conntrack-tools where they exist,
 * spelled out in camelCase; the CTA_* attribute each one comes from is named in its comment.
 */
import type { ConntrackErrorCode } from './errors.js';

/** Where a handle operates: a netns path (`/run/netns/NAME`, `/proc/PID/ns/net`) or a pid. */
export type NetnsSpec = string | number;

export type Family = 'ipv4' | 'ipv6';

/** Layer-4 protocol name as conntrack-tools prints it, or `unknown` (see `protocolNumber`). */
export type ProtocolName =
  | 'tcp' | 'udp' | 'udplite' | 'icmp' | 'icmpv6' | 'sctp' | 'dccp' | 'gre' | 'unknown';

/** One direction of a connection (CTA_TUPLE_ORIG, CTA_TUPLE_REPLY, CTA_TUPLE_MASTER). */
export interface Tuple {
  /** Canonical address text: dotted quad, or RFC 5952 IPv6. */
  src: string;
  dst: string;
  /** CTA_PROTO_NUM. */
  protocolNumber: number;
  protocol: ProtocolName;
  /** TCP, UDP, UDP-Lite, SCTP, DCCP ports; undefined for other protocols. */
  sport: number | undefined;
  dport: number | undefined;
  /** ICMP and ICMPv6 only. */
  icmpType: number | undefined;
  icmpCode: number | undefined;
  icmpId: number | undefined;
  /** CTA_TUPLE_ZONE: a zone that applies to this direction only. */
  zone: number | undefined;
}

/** Names of the IPS_* status bits (include/uapi/linux/netfilter/nf_conntrack_common.h). */
export type StatusFlag =
  | 'EXPECTED' | 'SEEN_REPLY' | 'ASSURED' | 'CONFIRMED' | 'SRC_NAT' | 'DST_NAT'
  | 'SEQ_ADJUST' | 'SRC_NAT_DONE' | 'DST_NAT_DONE' | 'DYING' | 'FIXED_TIMEOUT'
  | 'TEMPLATE' | 'UNTRACKED' | 'HELPER' | 'OFFLOAD' | 'HW_OFFLOAD';

export type TcpState =
  | 'NONE' | 'SYN_SENT' | 'SYN_RECV' | 'ESTABLISHED' | 'FIN_WAIT' | 'CLOSE_WAIT'
  | 'LAST_ACK' | 'TIME_WAIT' | 'CLOSE' | 'SYN_SENT2';

export type SctpState =
  | 'NONE' | 'CLOSED' | 'COOKIE_WAIT' | 'COOKIE_ECHOED' | 'ESTABLISHED' | 'SHUTDOWN_SENT'
  | 'SHUTDOWN_RECD' | 'SHUTDOWN_ACK_SENT' | 'HEARTBEAT_SENT' | 'HEARTBEAT_ACKED';

export type DccpState =
  | 'NONE' | 'REQUEST' | 'RESPOND' | 'PARTOPEN' | 'OPEN' | 'CLOSEREQ' | 'CLOSING'
  | 'TIMEWAIT' | 'IGNORE' | 'INVALID';

/** CTA_PROTOINFO_TCP. Flags are the IP_CT_TCP_FLAG_* bits with their mask. */
export interface TcpInfo {
  state: TcpState;
  stateNumber: number;
  wscaleOriginal: number | undefined;
  wscaleReply: number | undefined;
  flagsOriginal: number | undefined;
  flagsReply: number | undefined;
}

export interface SctpInfo {
  state: SctpState;
  stateNumber: number;
  vtagOriginal: number | undefined;
  vtagReply: number | undefined;
}

export interface DccpInfo {
  state: DccpState;
  stateNumber: number;
  role: number | undefined;
  handshakeSeq: bigint | undefined;
}

/** CTA_COUNTERS_ORIG / CTA_COUNTERS_REPLY (present when nf_conntrack_acct is on). */
export interface Counters {
  packets: number;
  bytes: number;
}

/** CTA_SEQ_ADJ_ORIG / CTA_SEQ_ADJ_REPLY. */
export interface SeqAdjust {
  /** TCP sequence number (u32) from which offsetAfter applies instead of offsetBefore. */
  correctionPos: number;
  /** Signed: negative when a helper made the payload shorter. */
  offsetBefore: number;
  /** Signed: negative when a helper made the payload shorter. */
  offsetAfter: number;
}

/** CTA_SYNPROXY. */
export interface Synproxy {
  isn: number;
  its: number;
  tsoff: number;
}

/** One conntrack entry, fully decoded. Every entry has the same shape; absent parts are undefined. */
export interface ConntrackEntry {
  /** CTA_ID. */
  id: number;
  family: Family;
  original: Tuple;
  reply: Tuple;
  /** CTA_TUPLE_MASTER: the connection this one was expected by (RELATED). */
  master: Tuple | undefined;
  /** CTA_STATUS as the raw bit set, and as names. */
  status: number;
  flags: readonly StatusFlag[];
  /** CTA_TIMEOUT in seconds; undefined for offloaded entries. */
  timeout: number | undefined;
  /** CTA_MARK. */
  mark: number;
  /** CTA_SECMARK (obsolete kernels) and CTA_SECCTX. */
  secmark: number | undefined;
  secctx: string | undefined;
  /** CTA_ZONE. */
  zone: number | undefined;
  /** CTA_USE: reference count. */
  use: number | undefined;
  counters: { original: Counters; reply: Counters } | undefined;
  /** CTA_TIMESTAMP in nanoseconds since the epoch (present when nf_conntrack_timestamp is on). */
  timestamp: { start: bigint; stop: bigint | undefined } | undefined;
  tcp: TcpInfo | undefined;
  sctp: SctpInfo | undefined;
  dccp: DccpInfo | undefined;
  /** CTA_HELP / CTA_HELP_NAME. */
  helper: string | undefined;
  /** CTA_LABELS: the bit numbers set, ascending. */
  labels: readonly number[] | undefined;
  seqAdjust: { original: SeqAdjust | undefined; reply: SeqAdjust | undefined } | undefined;
  synproxy: Synproxy | undefined;
}

/** A port, or an inclusive range `[low, high]`. */
export type PortMatch = number | readonly [number, number];

export interface TupleFilter {
  /** Address or CIDR, IPv4 or IPv6. */
  src?: string;
  dst?: string;
  sport?: PortMatch;
  dport?: PortMatch;
}

/**
 * What `entries()`, `stream()` and `list` select. Everything given must match.
 * The kernel is asked to filter what it can; the rest, and everything again, is checked natively.
 */
export interface EntryFilter extends TupleFilter {
  family?: Family;
  /** Protocol name or number. */
  protocol?: ProtocolName | number;
  /** Any of these TCP states (implies protocol tcp); `'LISTEN'` (conntrack-tools' name) is taken as SYN_SENT2. */
  tcpState?: TcpState | readonly TcpState[];
  /** Shorthands `src`, `dst`, `sport`, `dport` apply to the original tuple. */
  original?: TupleFilter;
  reply?: TupleFilter;
  /** `(entry.mark & mask) === (value & mask)`; mask defaults to 0xffffffff. */
  mark?: number | { value: number; mask?: number };
  zone?: number;
  /** Status bits that must be set, and ones that must be clear. */
  status?: StatusFlag | readonly StatusFlag[] | { set?: readonly StatusFlag[]; unset?: readonly StatusFlag[] };
}

export interface OpenOptions {
  netns?: NetnsSpec;
}

export interface EntriesOptions {
  signal?: AbortSignal;
  /** Entries per batch handed from native code to JS (default 1024). */
  batchSize?: number;
  /** Ask the kernel to filter what it can (default true). The native re-check always runs. */
  kernelFilter?: boolean;
  /**
   * Read and zero the counters (IPCTNL_MSG_CT_GET_CTRZERO, like `conntrack -L -z`): each entry
   * comes with the counts up to now, and the kernel starts them again from zero. As with the
   * tool, the kernel zeroes every entry it sends: what the kernel cannot filter (see Filters) is
   * zeroed too, though not returned.
   */
  zeroCounters?: boolean;
  /**
   * Which of the kernel's lists (`conntrack -L [table]`): the table (default); `dying`, entries
   * deleted whose destroy event is still to be delivered; `unconfirmed`, entries not yet in the
   * table (always empty since Linux 5.19, which no longer keeps that list).
   */
  table?: 'conntrack' | 'dying' | 'unconfirmed';
}

export interface GetOptions {
  /** Read and zero the entry's counters (IPCTNL_MSG_CT_GET_CTRZERO). */
  zeroCounters?: boolean;
}

/**
 * An entry's tuple in one direction, to find or make it: everything the kernel hashes. Ports
 * for TCP, UDP, UDP-Lite, SCTP and DCCP; type, code and id for ICMP and ICMPv6.
 */
export interface TupleSpec {
  protocol: Exclude<ProtocolName, 'unknown'> | number;
  /** IPv4 or IPv6 address; both ends of one family. */
  src: string;
  dst: string;
  sport?: number;
  dport?: number;
  icmpType?: number;
  icmpCode?: number;
  icmpId?: number;
}

/**
 * Which entry: its original tuple (and zone), its reply tuple (`{ reply, zone }`: the kernel
 * finds an entry by either direction), or an entry as entries() returned it (then also its id).
 */
export type EntryTarget = (TupleSpec & { zone?: number }) | { reply: TupleSpec; zone?: number } | ConntrackEntry;

/** What update() can change on an existing entry. */
export interface EntryChanges {
  /** CTA_MARK. */
  mark?: number;
  /** Seconds until the entry expires, from now. */
  timeout?: number;
  /**
   * Label bits (0-127): a list replaces them all; `{ add, remove }` changes only those bits
   * (like conntrack -U --label-add / --label-del).
   */
  labels?: readonly number[] | { add?: readonly number[]; remove?: readonly number[] };
}

/**
 * An entry for create(): what `conntrack -I` takes. Give the original tuple, the reply tuple or
 * both; a missing one is the other mirrored (an ICMP echo request's reply is an echo reply, and
 * the reverse), as `conntrack -I` does.
 */
export type NewEntry = NewEntryFields & ({ original: TupleSpec; reply?: TupleSpec } | { original?: undefined; reply: TupleSpec });

export interface NewEntryFields {
  /** Seconds until it expires. */
  timeout: number;
  mark?: number;
  zone?: number;
  /** TCP only: the state it starts in (default ESTABLISHED). `'LISTEN'` (conntrack-tools' name) is taken as SYN_SENT2. */
  tcpState?: TcpState;
  /** Status bits to set, for example ['SEEN_REPLY', 'ASSURED'] (CONFIRMED is implied). */
  flags?: readonly StatusFlag[];
  /** Label bits (0-127). The kernel keeps labels only where a rule uses `ct label`. */
  labels?: readonly number[];
  /**
   * Source NAT (`conntrack -I --src-nat`): the original's source becomes this address (and port)
   * in the reply tuple, which the kernel computes (a `reply` given is its starting point).
   */
  srcNat?: NatSpec;
  /** Destination NAT (`conntrack -I --dst-nat`): the original's destination, likewise. */
  dstNat?: NatSpec;
}

/** Where NAT maps one end: an address or an inclusive range, and (TCP, UDP, UDP-Lite, SCTP, DCCP) a port or range. */
export interface NatSpec {
  address: string | readonly [string, string];
  port?: number | readonly [number, number];
}

/** One item of updateMany(): which entry, and what changes. */
export interface EntryUpdate {
  target: EntryTarget;
  changes: EntryChanges;
}

/** An item a bulk change could not apply: which (its index in the input), and why. */
export interface BulkFailure<T> {
  index: number;
  item: T;
  /** ERR_CONNTRACK_INVALID_ARGUMENT (nothing sent), ERR_CONNTRACK_EXISTS, ERR_CONNTRACK_NOT_FOUND, ERR_CONNTRACK_UNAVAILABLE, ERR_CONNTRACK_KERNEL. */
  code: ConntrackErrorCode;
  errno: number | undefined;
  message: string;
}

export interface BulkResult<T> {
  /** Items read from the input. */
  total: number;
  succeeded: number;
  failed: number;
  /** Failures counted by code. */
  failedByCode: Partial<Record<ConntrackErrorCode, number>>;
  /** The first `maxFailures` failures (default 1000), in input order; the counts above are complete. */
  failures: BulkFailure<T>[];
}

export interface BulkOptions {
  signal?: AbortSignal;
  /** Items per native batch (default 1024); two batches are in flight, one filling, one sent. */
  batchSize?: number;
  /** How many failures to keep with their item (default 1000). */
  maxFailures?: number;
}

/** What deleteMatching() did. */
export interface DeleteResult {
  /** Entries deleted. */
  deleted: number;
  /** Entries that matched a filter: deleted + alreadyGone + failed. */
  matched: number;
  /** Matched, but gone before their delete arrived (expired, deleted by someone else). */
  alreadyGone: number;
  /** Matched, and the kernel refused to delete them (`errno`: the first refusal's). */
  failed: number;
  errno: number | undefined;
  /** Entries the scan read (0 for a kernel flush). */
  scanned: number;
  /** Entries each filter matched, in the order given (an entry may match several). */
  matchedByFilter: number[];
  /**
   * One filtered flush did it (the filter had only family, mark, status and zone, and this kernel
   * was probed to honour them): the kernel reports no count, so `deleted` is the drop in the
   * namespace's count, which an entry made meanwhile makes smaller.
   */
  kernelFlush: boolean;
}

export interface DeleteOptions {
  signal?: AbortSignal;
  /** Let one filtered flush do it where the kernel can (default true); false: entry by entry, exact counts. */
  kernelFlush?: boolean;
}

/** NF_CT_EXPECT_* bits. */
export type ExpectFlag = 'PERMANENT' | 'INACTIVE' | 'USERSPACE';

/** One expectation (`conntrack -L expect`), fully decoded. Absent parts are undefined. */
export interface ConntrackExpectation {
  /** CTA_EXPECT_ID. */
  id: number;
  family: Family;
  /** CTA_EXPECT_TUPLE: the connection expected. */
  tuple: Tuple;
  /**
   * CTA_EXPECT_MASK: which bits of `tuple` must match, as a tuple (an address of all ones is an
   * exact address, a port of 0 any port).
   */
  mask: Tuple;
  /** CTA_EXPECT_MASTER: the original tuple of the connection that expects it. */
  master: Tuple;
  /** CTA_EXPECT_TIMEOUT in seconds. */
  timeout: number | undefined;
  /** CTA_EXPECT_HELP_NAME: the master's helper. */
  helper: string | undefined;
  /** CTA_EXPECT_CLASS: the helper's class of expectation. */
  class: number | undefined;
  /** CTA_EXPECT_FLAGS as bits, and as names. */
  flagBits: number;
  flags: readonly ExpectFlag[];
  /** CTA_EXPECT_ZONE. */
  zone: number | undefined;
  /** CTA_EXPECT_NAT: the direction and where the expected connection is NATed to. */
  nat: { dir: 'original' | 'reply'; tuple: Tuple } | undefined;
  /** CTA_EXPECT_FN: the helper function run on the expected connection (e.g. `nat-follow-master`). */
  fn: string | undefined;
}

/** Which expectations expectations() lists: everything given must match. */
export interface ExpectationFilter {
  family?: Family;
  /** Of the expected tuple. */
  protocol?: ProtocolName | number;
  helper?: string;
  /** Only those of this master connection (its original tuple; the kernel selects them). */
  master?: TupleSpec & { zone?: number };
}

/** An expectation for createExpectation() (`conntrack -I expect`). */
export interface NewExpectation {
  /** The master connection's original tuple: it must exist and have a helper (or `helper` names one). */
  master: TupleSpec;
  /** The connection to expect. */
  tuple: TupleSpec;
  /** Which parts must match: default the whole tuple but the source port (any). */
  mask?: { src?: string; dst?: string; sport?: number; dport?: number };
  /** Seconds until it expires. */
  timeout: number;
  helper?: string;
  zone?: number;
  flags?: readonly ExpectFlag[];
  class?: number;
  /** Where the expected connection is NATed to (address and port), for one direction. */
  nat?: { dir: 'original' | 'reply'; address: string; port?: number };
  /** An expectation function by name (e.g. `nat-follow-master`). */
  fn?: string;
}

/** Which expectation: its expected tuple (and zone), or an expectation as listed (then also its id). */
export type ExpectationTarget = (TupleSpec & { zone?: number }) | ConntrackExpectation;

export interface ExpectationEvent {
  type: ConntrackEventType;
  expectation: ConntrackExpectation;
}

/** What an event reports: the kernel's NFNLGRP_CONNTRACK_NEW, _UPDATE and _DESTROY groups. */
export type ConntrackEventType = 'new' | 'update' | 'destroy';

export interface ConntrackEvent {
  type: ConntrackEventType;
  /**
   * The entry as the event carries it: an update carries what changed with the rest of the
   * entry; a destroy carries the entry's last state (status DYING) and, when accounting and
   * timestamps are on, its final counters and stop time.
   */
  entry: ConntrackEntry;
}

/**
 * Events were lost: the socket's buffer was full when the kernel had more (ENOBUFS), because
 * the consumer or this process fell behind. `count` is how many times the kernel reported a loss
 * since the previous item; each lost one or more events. Entries seen since may be stale: dump
 * the table again (entries()) to resynchronise.
 */
export interface OverflowEvent {
  type: 'overflow';
  count: number;
  /**
   * The socket's receive buffer after this overflow, as the kernel sizes it (it doubles what was
   * asked): larger than before when the buffer grew (`maxReceiveBufferBytes`).
   */
  receiveBufferBytes: number;
}

export interface EventsOptions {
  /** Which events to subscribe to (default all three); the kernel sends only those. */
  types?: readonly ConntrackEventType[];
  signal?: AbortSignal;
  /** Events per batch handed from native code to JS at most (default 256). */
  batchSize?: number;
  /**
   * The socket's receive buffer in bytes, room for bursts while JS is busy (default 8 MiB;
   * set past net.core.rmem_max with SO_RCVBUFFORCE). Smaller means overflow sooner.
   */
  receiveBufferBytes?: number;
  /**
   * Without `reliable`: on each overflow the buffer doubles up to this many bytes (default
   * 64 MiB, set with SO_RCVBUFFORCE since net.core.rmem_max caps SO_RCVBUF), and the overflow item
   * reports the new size. Equal to `receiveBufferBytes`: the buffer never grows.
   */
  maxReceiveBufferBytes?: number;
  /**
   * Reliable delivery, as conntrackd's NetlinkEventsReliable: sets NETLINK_BROADCAST_ERROR and
   * NETLINK_NO_ENOBUFS, so no overflow is reported and the kernel keeps what it could not queue.
   * The kernel's side: a destroy event that cannot be delivered keeps its entry (still counted
   * against nf_conntrack_max) and is sent again later; new and update events that cannot be
   * delivered are sent with the entry's next event, and the packet path may drop packets rather
   * than lose an event. A slow reader then slows the table, not the reader.
   */
  reliable?: boolean;
}

export interface Count {
  /** Entries in this namespace (CTA_STATS_GLOBAL_ENTRIES). */
  entries: number;
  /** The global limit nf_conntrack_max (CTA_STATS_GLOBAL_MAX_ENTRIES, or /proc on older kernels). */
  max: number;
}

/** Counter names of CTA_STATS_* as conntrack -S prints them. */
export type CpuCounterName =
  | 'found' | 'invalid' | 'insert' | 'insert_failed' | 'drop' | 'early_drop' | 'error'
  | 'search_restart' | 'clash_resolve' | 'chaintoolong'
  | 'searched' | 'new' | 'ignore' | 'delete' | 'delete_list';

export type CpuCounters = Partial<Record<CpuCounterName, number>>;

export interface CpuStats {
  cpu: number;
  counters: CpuCounters;
  /** Counters this library has no name for yet, by CTA_STATS_* attribute number. */
  unknown: Record<number, number>;
}

export interface Stats {
  perCpu: CpuStats[];
  /** Sum over CPUs. */
  total: CpuCounters;
  totalUnknown: Record<number, number>;
}

export type ExpectCounterName = 'new' | 'create' | 'delete';

export interface ExpectCpuStats {
  cpu: number;
  counters: Partial<Record<ExpectCounterName, number>>;
  unknown: Record<number, number>;
}

export interface ExpectStats {
  perCpu: ExpectCpuStats[];
  total: Partial<Record<ExpectCounterName, number>>;
  totalUnknown: Record<number, number>;
}
