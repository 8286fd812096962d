/**
 * Throw-away network namespaces for integration tests, made with `ip netns add`, so every test
 * file gets its own conntrack table and the host's table is never touched.
 *
 * Cleanup, in layers: callers `afterAll(destroyAllNetns)`; a process 'exit' hook removes what is
 * left when a file ends abnormally; and namespaces left by a killed test process (its pid is in the
 * name) are swept the next time any test process creates one.
 */
import { spawn, execFileSync, type ChildProcess, type SpawnOptions } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readdirSync, statSync } from 'node:fs';
import { requireTool } from './tools.js';

export interface ExecResult {
  stdout: string;
  stderr: string;
}

export interface ExecOptions {
  /** Written to the command's stdin, which is then closed. */
  input?: string;
  /** Kill the command (SIGKILL) and reject after this long. Default 30 s. */
  timeoutMs?: number;
}

export interface Netns {
  /** `ctt-PREFIX-PID-RANDOM`: the pid lets a later run sweep namespaces of a killed process. */
  readonly name: string;
  /** `/run/netns/NAME`, what the library's `netns` option takes. */
  readonly path: string;
  /** Inode of the namespace, as the kernel names it in log lines ("table full in netns N"). */
  readonly inode: number;
  /** Runs `cmd args` inside the namespace; rejects on a non-zero exit with stderr in the message. */
  exec(cmd: string, args?: readonly string[], options?: ExecOptions): Promise<ExecResult>;
  /** Starts a long-running process inside the namespace; destroy() kills it if still running. */
  spawn(cmd: string, args?: readonly string[], options?: SpawnOptions): ChildProcess;
  /** Runs a shell script inside the namespace (`sh -c`). */
  sh(script: string, options?: ExecOptions): Promise<ExecResult>;
  /** Loads an nft ruleset (`nft -f -`) inside the namespace. */
  nft(rules: string): Promise<void>;
  /**
   * Writes a sysctl of this namespace (dotted name, e.g. `net.netfilter.nf_conntrack_acct`) when a
   * value is given, and returns the value read back.
   */
  sysctl(name: string, value?: string | number): Promise<string>;
  /** Pids of processes inside the namespace (`ip netns pids`). */
  pids(): Promise<number[]>;
  /** Kills what runs inside and deletes the namespace. Idempotent. */
  destroy(): Promise<void>;
}

const NAME_PREFIX = 'ctt-';
const NETNS_DIR = '/run/netns';

const live = new Map<string, Netns>();
let sweptStale = false;
let exitHookInstalled = false;

/** Runs a command and collects its output; rejects with the command line and stderr on failure. */
export function run(cmd: string, args: readonly string[], options: ExecOptions = {}): Promise<ExecResult> {
  const timeoutMs = options.timeoutMs ?? 30_000;
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: ['pipe', 'pipe', 'pipe'] });
    const stdout: Buffer[] = [];
    const stderr: Buffer[] = [];
    child.stdout.on('data', (chunk: Buffer) => stdout.push(chunk));
    child.stderr.on('data', (chunk: Buffer) => stderr.push(chunk));
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('error', (err) => {
      clearTimeout(timer);
      reject(new Error(`${cmd} ${args.join(' ')}: ${err.message}`, { cause: err }));
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      const result = { stdout: Buffer.concat(stdout).toString(), stderr: Buffer.concat(stderr).toString() };
      if (code === 0) {
        resolve(result);
        return;
      }
      const how = signal === null ? `exit code ${code}` : `signal ${signal}${signal === 'SIGKILL' ? ` (timeout ${timeoutMs} ms?)` : ''}`;
      reject(new Error(`${cmd} ${args.join(' ')} failed (${how}): ${result.stderr.trim() || result.stdout.trim()}`));
    });
    // A command that does not read stdin may close it first; that is not an error here.
    child.stdin.on('error', () => {});
    child.stdin.end(options.input ?? '');
  });
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

function killAllSync(ip: string, name: string): void {
  let pids: number[] = [];
  try {
    pids = parsePids(execFileSync(ip, ['netns', 'pids', name], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }));
  } catch {
    // namespace already gone
  }
  for (const pid of pids) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // exited meanwhile
    }
  }
}

function deleteSync(ip: string, name: string): void {
  killAllSync(ip, name);
  try {
    execFileSync(ip, ['netns', 'del', name], { stdio: 'ignore' });
  } catch {
    // already deleted
  }
}

/**
 * Removes namespaces whose creating test process no longer exists (it was killed mid-file).
 * Runs once per process on the first createNetns; exported for the helpers' own test.
 */
export function sweepStaleNetns(ip = requireTool('ip')): void {
  let names: string[];
  try {
    names = readdirSync(NETNS_DIR);
  } catch {
    return; // no namespace created yet on this machine
  }
  for (const name of names) {
    const match = /^ctt-.+-(\d+)-[0-9a-f]{8}$/.exec(name);
    if (match?.[1] === undefined) continue;
    if (!isAlive(Number(match[1]))) deleteSync(ip, name);
  }
}

function installExitHook(ip: string): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  // Only synchronous work is possible in 'exit'.
  process.on('exit', () => {
    for (const name of live.keys()) deleteSync(ip, name);
    live.clear();
  });
}

function parsePids(text: string): number[] {
  return text.split(/\s+/).filter(Boolean).map(Number).filter((pid) => Number.isInteger(pid) && pid > 0);
}

/** Creates a namespace with `lo` up. Pair with `afterAll(destroyAllNetns)` in the test file. */
export async function createNetns(prefix: string): Promise<Netns> {
  const ip = requireTool('ip');
  if (!sweptStale) {
    sweptStale = true;
    sweepStaleNetns(ip);
  }
  installExitHook(ip);

  const safePrefix = prefix.toLowerCase().replace(/[^a-z0-9]+/g, '-').replace(/^-|-$/g, '') || 'ns';
  const name = `${NAME_PREFIX}${safePrefix}-${process.pid}-${randomBytes(4).toString('hex')}`;
  await run(ip, ['netns', 'add', name]);

  const children = new Set<ChildProcess>();
  let destroyed = false;

  const exec = (cmd: string, args: readonly string[] = [], options: ExecOptions = {}): Promise<ExecResult> =>
    run(ip, ['netns', 'exec', name, cmd, ...args], options);

  const ns: Netns = {
    name,
    path: `${NETNS_DIR}/${name}`,
    inode: statSync(`${NETNS_DIR}/${name}`).ino,
    exec,
    spawn(cmd, args = [], options = {}) {
      const child = spawn(ip, ['netns', 'exec', name, cmd, ...args], options);
      children.add(child);
      child.on('exit', () => children.delete(child));
      return child;
    },
    sh: (script, options) => exec('sh', ['-c', script], options),
    async nft(rules) {
      await exec(requireTool('nft'), ['-f', '-'], { input: rules });
    },
    async sysctl(dotted, value) {
      if (!/^[a-z0-9_.-]+$/i.test(dotted)) throw new Error(`not a sysctl name: ${dotted}`);
      // /proc/sys/net shows the namespace of whoever opens it, so read and write from inside.
      const file = `/proc/sys/${dotted.replaceAll('.', '/')}`;
      if (value !== undefined) {
        await exec('sh', ['-c', 'printf "%s\\n" "$1" > "$0"', file, String(value)]);
      }
      return (await exec('cat', [file])).stdout.trim();
    },
    async pids() {
      return parsePids((await run(ip, ['netns', 'pids', name])).stdout);
    },
    async destroy() {
      if (destroyed) return;
      destroyed = true;
      for (const child of children) child.kill('SIGKILL');
      // Processes started by other means (ip netns exec from a test's shell) are killed too:
      // a namespace is only freed when nothing runs in it.
      for (let attempt = 0; attempt < 50; attempt++) {
        let pids: number[];
        try {
          pids = await ns.pids();
        } catch {
          break; // already deleted
        }
        if (pids.length === 0) break;
        for (const pid of pids) {
          try {
            process.kill(pid, 'SIGKILL');
          } catch {
            // exited meanwhile
          }
        }
        await new Promise((resolve) => setTimeout(resolve, 20));
      }
      try {
        await run(ip, ['netns', 'del', name]);
      } finally {
        live.delete(name);
      }
    },
  };
  live.set(name, ns);

  try {
    await exec(ip, ['link', 'set', 'lo', 'up']);
  } catch (err) {
    await ns.destroy();
    throw err;
  }
  return ns;
}

/** Destroys every namespace this process created and has not destroyed yet. For `afterAll`. */
export async function destroyAllNetns(): Promise<void> {
  const errors: unknown[] = [];
  for (const ns of [...live.values()]) {
    try {
      await ns.destroy();
    } catch (err) {
      errors.push(err);
    }
  }
  if (errors.length > 0) throw new AggregateError(errors, 'some network namespaces could not be removed');
}

/** Names of the namespaces this process currently holds (for tests of the helpers themselves). */
export function liveNetnsNames(): string[] {
  return [...live.keys()];
}

export interface TrackingOptions {
  /**
   * Raise the timeouts of LONG_TIMEOUTS first (default true). An entry gets its timeout when its
   * packets pass, and raising the sysctl later does not extend it: without this, UDP and ICMP
   * entries vanish 30 s after the flow, in the middle of a test comparing snapshots.
   */
  longTimeouts?: boolean;
  /** Set `net.netfilter.nf_conntrack_acct` to 1 first, so entries carry packet and byte counters. */
  accounting?: boolean;
  /** Set `net.netfilter.nf_conntrack_timestamp` to 1 first, so entries carry a start time. */
  timestamps?: boolean;
  /**
   * Put connections in a conntrack zone: all of them, or (with `port`) TCP/UDP to or from that
   * port. Set at priority -300 (raw), before conntrack's lookup at -200, in both directions:
   * a reply that missed the zone would be looked up in zone 0 and become a new entry there.
   */
  zone?: number | { id: number; port: number };
  /** Connections to this TCP/UDP port get `ct mark set` `mark` (after conntrack: fine for marks). */
  markPort?: number;
  /** Default 0x2a. */
  mark?: number;
  /** Connections to this TCP/UDP port get the conntrack label bit `label` (`ct label set N`). */
  labelPort?: number;
  /** Label bit number, 0-127. Default 3. */
  label?: number;
}

/**
 * Per-namespace timeouts enableTracking raises before any flow, in seconds: long enough for any
 * test file, on any machine (the defaults are 30 s for UDP and ICMP, 120 s for TIME_WAIT).
 */
export const LONG_TIMEOUTS: Readonly<Record<string, number>> = {
  'net.netfilter.nf_conntrack_udp_timeout': 600,
  'net.netfilter.nf_conntrack_udp_timeout_stream': 600,
  'net.netfilter.nf_conntrack_icmp_timeout': 600,
  'net.netfilter.nf_conntrack_icmpv6_timeout': 600,
  'net.netfilter.nf_conntrack_tcp_timeout_time_wait': 600,
};

/** The nft table enableTracking owns; reloading it replaces the previous rules. */
export const TRACKING_TABLE = 'conntrack_test';

/** The nft ruleset enableTracking loads (exported so a test can show what it used). */
export function trackingRuleset(options: TrackingOptions = {}): string {
  const l4 = 'meta l4proto { tcp, udp }';
  const zoneRules: string[] = [];
  if (options.zone !== undefined) {
    if (typeof options.zone === 'number') {
      zoneRules.push(`ct zone set ${options.zone}`);
    } else {
      zoneRules.push(`${l4} th dport ${options.zone.port} ct zone set ${options.zone.id}`);
      zoneRules.push(`${l4} th sport ${options.zone.port} ct zone set ${options.zone.id}`);
    }
  }
  const afterConntrack: string[] = [];
  if (options.markPort !== undefined) {
    afterConntrack.push(`${l4} th dport ${options.markPort} ct mark set ${options.mark ?? 0x2a}`);
  }
  if (options.labelPort !== undefined) {
    afterConntrack.push(`${l4} th dport ${options.labelPort} ct label set ${options.label ?? 3}`);
  }
  const chain = (name: string, hook: string, priority: number, rules: string[]): string =>
    `  chain ${name} {\n    type filter hook ${hook} priority ${priority}; policy accept;\n` +
    rules.map((rule) => `    ${rule}\n`).join('') + '  }\n';
  const chains = [
    // Locally generated packets (everything on loopback) pass output; packets from outside
    // (a veth peer) pass prerouting. Zones must be set on both paths.
    ...(zoneRules.length > 0
      ? [chain('zone_output', 'output', -300, zoneRules), chain('zone_prerouting', 'prerouting', -300, zoneRules)]
      : []),
    // Any rule using ct makes the kernel register conntrack's hooks in this namespace; without one,
    // nothing is tracked. The counters show how many new connections each path saw.
    chain('output', 'output', 0, ['ct state new counter', ...afterConntrack]),
    chain('input', 'input', 0, ['ct state new counter', ...afterConntrack]),
  ];
  // `add` then `delete` makes reloading idempotent on nft versions without `destroy table`.
  return `add table inet ${TRACKING_TABLE}\ndelete table inet ${TRACKING_TABLE}\n` +
    `table inet ${TRACKING_TABLE} {\n${chains.join('')}}\n`;
}

/**
 * Turns on connection tracking in `ns` (see TrackingOptions); sysctls first, then the rules. Call
 * it before the namespace carries any flow: timeouts, accounting and timestamps are fixed when an
 * entry is created.
 */
export async function enableTracking(ns: Netns, options: TrackingOptions = {}): Promise<void> {
  if (options.longTimeouts ?? true) {
    for (const [name, seconds] of Object.entries(LONG_TIMEOUTS)) await ns.sysctl(name, seconds);
  }
  if (options.accounting) await ns.sysctl('net.netfilter.nf_conntrack_acct', 1);
  if (options.timestamps) await ns.sysctl('net.netfilter.nf_conntrack_timestamp', 1);
  await ns.exec(requireTool('ip'), ['link', 'set', 'lo', 'up']);
  await ns.nft(trackingRuleset(options));
}
