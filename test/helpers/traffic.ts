/**
 * Real traffic on loopback inside a namespace, so conntrack has genuine entries to report.
 * TCP and UDP come from a child Node process (test/helpers/flows-child.mjs) that holds its sockets
 * open until released; ICMP echo comes from `ping`.
 */
import { once } from 'node:events';
import { fileURLToPath } from 'node:url';
import type { ChildProcess } from 'node:child_process';
import { expect } from 'vitest';
import type { Tuple } from '../../lib/base/types.js';
import { requireTool } from './tools.js';
import { LONG_TIMEOUTS, type Netns } from './netns.js';

const CHILD_SCRIPT = fileURLToPath(new URL('./flows-child.mjs', import.meta.url));

/**
 * - `tcp-established`: connected TCP pair, one echo exchanged, kept open (ESTABLISHED, ASSURED).
 * - `tcp-time-wait`: the same, then closed client-first (TIME_WAIT, 120 s by default).
 * - `udp-reply`: one datagram each way (SEEN_REPLY, not ASSURED: UDP needs more for that).
 * - `udp-oneway`: one datagram to a bound socket that never answers (UNREPLIED).
 * - `icmp-echo`: one `ping -c1` (echo request and reply; the entry lives nf_conntrack_icmp_timeout).
 */
export type FlowKind = 'tcp-established' | 'tcp-time-wait' | 'udp-reply' | 'udp-oneway' | 'icmp-echo';

export interface FlowRequest {
  kind: FlowKind;
  /** 4: 127.0.0.1, 6: ::1. */
  family: 4 | 6;
  /** Server (destination) port; default ephemeral. Not for icmp-echo. */
  port?: number;
}

export interface FlowInfo {
  kind: FlowKind;
  family: 4 | 6;
  protocol: 'tcp' | 'udp' | 'icmp' | 'icmpv6';
  /** The original direction, as conntrack will show it. */
  src: string;
  dst: string;
  /** TCP and UDP only. */
  sport: number | undefined;
  dport: number | undefined;
  /** ICMP only: echo request type (8, or 128 for ICMPv6). */
  icmpType: number | undefined;
}

export interface OpenFlows {
  /** One per request, in request order. */
  readonly info: readonly FlowInfo[];
  /**
   * One more round trip on every open TCP and UDP flow (one datagram on one-way flows), for tests
   * that watch counters or timeouts change. Resolves when all replies have arrived.
   */
  poke(): Promise<void>;
  /** Closes every socket (ESTABLISHED entries then go through FIN states) and waits for the child. */
  close(): Promise<void>;
}

interface ChildFlow {
  kind: FlowKind;
  family: 4 | 6;
  src: string;
  dst: string;
  sport: number;
  dport: number;
}

function protocolOf(kind: FlowKind, family: 4 | 6): FlowInfo['protocol'] {
  if (kind === 'icmp-echo') return family === 6 ? 'icmpv6' : 'icmp';
  return kind.startsWith('tcp') ? 'tcp' : 'udp';
}

/**
 * The child's stdout as lines. `next()` resolves with the next line, or rejects (with the child's
 * stderr) if the child ends or the time runs out first.
 */
class ChildLines {
  private buffered = '';
  private readonly lines: string[] = [];
  private waiter: { resolve: (line: string) => void; reject: (err: Error) => void } | undefined;
  private ended: string | undefined;
  stderr = '';

  constructor(private readonly child: ChildProcess, private readonly what: string) {
    child.stderr?.on('data', (chunk: Buffer) => {
      this.stderr += chunk.toString();
    });
    child.stdout?.on('data', (chunk: Buffer) => {
      this.buffered += chunk.toString();
      let newline: number;
      while ((newline = this.buffered.indexOf('\n')) >= 0) {
        this.lines.push(this.buffered.slice(0, newline));
        this.buffered = this.buffered.slice(newline + 1);
      }
      this.wake();
    });
    // 'close', not 'exit': 'exit' can come before the last stdout chunk has been read.
    child.once('close', (code: number | null, signal: NodeJS.Signals | null) => {
      this.ended = `${what}: child exited (${signal ?? `code ${code}`})`;
      this.wake();
    });
  }

  private wake(): void {
    if (this.waiter === undefined) return;
    const line = this.lines.shift();
    if (line !== undefined) {
      this.waiter.resolve(line);
      this.waiter = undefined;
    } else if (this.ended !== undefined) {
      this.waiter.reject(new Error(`${this.ended} before reporting; stderr: ${this.stderr.trim()}`));
      this.waiter = undefined;
    }
  }

  next(timeoutMs: number): Promise<string> {
    return new Promise<string>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiter = undefined;
        this.child.kill('SIGKILL');
        reject(new Error(`${this.what}: no answer within ${timeoutMs} ms; stderr: ${this.stderr.trim()}`));
      }, timeoutMs);
      this.waiter = {
        resolve: (line) => { clearTimeout(timer); resolve(line); },
        reject: (err) => { clearTimeout(timer); reject(err); },
      };
      this.wake();
    });
  }

  async nextJson<T>(timeoutMs: number): Promise<T> {
    const line = await this.next(timeoutMs);
    try {
      return JSON.parse(line) as T;
    } catch (err) {
      throw new Error(`${this.what}: bad report ${JSON.stringify(line)}`, { cause: err });
    }
  }
}

async function ping(ns: Netns, family: 4 | 6): Promise<void> {
  const pingPath = requireTool('ping');
  const target = family === 6 ? '::1' : '127.0.0.1';
  await ns.exec(pingPath, [family === 6 ? '-6' : '-4', '-c', '1', '-W', '2', target]);
}

/**
 * Opens the requested flows inside `ns` (tracking must already be on: see enableTracking) and keeps
 * them open until `close()`. Resolves once every flow has exchanged its packets, so the entries
 * exist when it returns.
 */
export async function openFlows(
  ns: Netns,
  requests: readonly FlowRequest[],
  options: { timeoutMs?: number } = {},
): Promise<OpenFlows> {
  const socketRequests = requests.filter((r) => r.kind !== 'icmp-echo');
  const child = ns.spawn(process.execPath, [CHILD_SCRIPT, 'flows', JSON.stringify({ flows: socketRequests })], {
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  const exited = once(child, 'exit');
  const lines = new ChildLines(child, 'flows-child');
  const timeoutMs = options.timeoutMs ?? 20_000;
  let report: { flows: ChildFlow[] };
  try {
    report = await lines.nextJson<{ flows: ChildFlow[] }>(timeoutMs);
  } catch (err) {
    child.kill('SIGKILL');
    throw err;
  }

  const info: FlowInfo[] = [];
  let next = 0;
  try {
    for (const request of requests) {
      if (request.kind === 'icmp-echo') {
        await ping(ns, request.family);
        const address = request.family === 6 ? '::1' : '127.0.0.1';
        info.push({
          kind: request.kind,
          family: request.family,
          protocol: protocolOf(request.kind, request.family),
          src: address,
          dst: address,
          sport: undefined,
          dport: undefined,
          icmpType: request.family === 6 ? 128 : 8,
        });
        continue;
      }
      const flow = report.flows[next++];
      if (flow === undefined) throw new Error('flows-child reported fewer flows than requested');
      info.push({
        kind: flow.kind,
        family: flow.family,
        protocol: protocolOf(flow.kind, flow.family),
        src: flow.src,
        dst: flow.dst,
        sport: flow.sport,
        dport: flow.dport,
        icmpType: undefined,
      });
    }
  } catch (err) {
    child.kill('SIGKILL');
    throw err;
  }

  let closed: Promise<void> | undefined;
  let pokes: Promise<void> = Promise.resolve();
  return {
    info,
    poke() {
      pokes = pokes.then(async () => {
        child.stdin?.write('poke\n');
        const answer = await lines.next(timeoutMs);
        if (answer !== 'poked') throw new Error(`flows-child: expected "poked", got ${JSON.stringify(answer)}`);
      });
      return pokes;
    },
    close() {
      closed ??= (async () => {
        if (child.exitCode !== null || child.signalCode !== null) return;
        child.stdin?.end();
        const timer = setTimeout(() => child.kill('SIGKILL'), 5_000);
        await exited;
        clearTimeout(timer);
      })();
      return closed;
    },
  };
}

export interface FillUdpOptions {
  /** Destination port, where nothing listens. Default 9. */
  port?: number;
  /**
   * `nf_conntrack_udp_timeout` (seconds) set just before sending, for these entries and later
   * ones: a test that wants entries to expire gives a short one. Default: enableTracking's long
   * timeout, so a short one set earlier does not carry over; `false` leaves it as it is.
   */
  udpTimeout?: number | false;
  timeoutMs?: number;
}

/**
 * Makes `count` UNREPLIED UDP entries in `ns` quickly (127.0.0.1 → 127.1.x.y:port, distinct tuples;
 * see flows-child.mjs for why they stay UDP entries despite the ICMP port-unreachable answers).
 * Tracking must already be on. Resolves when every datagram has been sent.
 */
export async function fillUdp(ns: Netns, count: number, options: FillUdpOptions = {}): Promise<{ sent: number }> {
  if (!Number.isInteger(count) || count < 0) throw new Error(`fillUdp: bad count ${count}`);
  const udpTimeout = options.udpTimeout ?? LONG_TIMEOUTS['net.netfilter.nf_conntrack_udp_timeout'];
  if (udpTimeout !== false && udpTimeout !== undefined) await ns.sysctl('net.netfilter.nf_conntrack_udp_timeout', udpTimeout);
  const child = ns.spawn(
    process.execPath,
    [CHILD_SCRIPT, 'fill-udp', JSON.stringify({ count, port: options.port ?? 9 })],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  const exited = once(child, 'exit');
  const report = await new ChildLines(child, 'fill-udp').nextJson<{ sent: number }>(options.timeoutMs ?? 120_000);
  await exited;
  return { sent: report.sent };
}

/** The entry whose original tuple is this flow's (by protocol, addresses, ports or ICMP type). */
export function entryForFlow<T extends { original: Pick<Tuple, 'protocol' | 'src' | 'dst' | 'sport' | 'dport' | 'icmpType'> }>(
  entries: readonly T[],
  flow: FlowInfo,
): T {
  const matches = entries.filter((e) =>
    e.original.protocol === flow.protocol &&
    e.original.src === flow.src &&
    e.original.dst === flow.dst &&
    (flow.sport === undefined || e.original.sport === flow.sport) &&
    (flow.dport === undefined || e.original.dport === flow.dport) &&
    (flow.icmpType === undefined || e.original.icmpType === flow.icmpType));
  expect(matches, `exactly one entry for ${JSON.stringify(flow)}`).toHaveLength(1);
  return matches[0] as T;
}

/** The flow of this kind and family (and destination port, if given); throws if there is none. */
export function flowOf(flows: readonly FlowInfo[], kind: FlowInfo['kind'], family: 4 | 6, port?: number): FlowInfo {
  const flow = flows.find((f) => f.kind === kind && f.family === family && (port === undefined || f.dport === port));
  if (flow === undefined) throw new Error(`no ${kind} IPv${family} flow${port === undefined ? '' : ` to ${port}`}`);
  return flow;
}
