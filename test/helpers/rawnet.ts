/**
 * Raw packets and packet capture on loopback inside a test namespace, through rawnet.py (Python's
 * standard library has raw and AF_PACKET sockets; Node has neither). Used for SCTP, which this
 * kernel tracks but has no sockets for, for DCCP (no longer tracked: generic entries), and to see
 * the sequence numbers and TCP timestamps that NAT helpers and synproxy rewrite.
 */
import { fileURLToPath } from 'node:url';
import { requireTool } from './tools.js';
import type { Netns } from './netns.js';

const SCRIPT = fileURLToPath(new URL('./rawnet.py', import.meta.url));

export type SctpChunkType =
  | 'data' | 'init' | 'init_ack' | 'sack' | 'heartbeat' | 'heartbeat_ack' | 'abort' | 'shutdown'
  | 'shutdown_ack' | 'cookie_echo' | 'cookie_ack' | 'shutdown_complete';

export interface SctpChunk {
  type: SctpChunkType;
  /** INIT / INIT ACK: the Initiate Tag (the tag the sender wants to receive in its peer's packets). */
  initTag?: number;
  tsn?: number;
  flags?: number;
}

interface PacketBase {
  family: 4 | 6;
  src: string;
  dst: string;
}

export interface SctpPacket extends PacketBase {
  sport: number;
  dport: number;
  /** Verification tag of the common header. */
  vtag: number;
  chunks: SctpChunk[];
}

/** Any IP protocol with an opaque payload (hex). */
export interface RawIpPacket extends PacketBase {
  proto: number;
  payload: string;
}

/** Sends the packets in order, from raw sockets bound to each packet's source address. */
export async function sendRaw(ns: Netns, packets: ReadonlyArray<SctpPacket | RawIpPacket>): Promise<void> {
  const { stdout } = await ns.exec(requireTool('python3'), [SCRIPT, 'send', JSON.stringify({ packets })]);
  const report = JSON.parse(stdout) as { sent: number };
  if (report.sent !== packets.length) throw new Error(`rawnet: sent ${report.sent} of ${packets.length} packets`);
}

/** One TCP segment as it left `lo` (after every netfilter hook, NAT and sequence adjustment). */
export interface Segment {
  src: string;
  dst: string;
  sport: number;
  dport: number;
  /** Letters of the set flags among S, A, F, R, P, in that order. */
  flags: string;
  seq: number;
  ack: number;
  /** Payload length and its first 200 bytes as latin-1 text. */
  len: number;
  payload: string;
  mss?: number;
  /** The window scale option's shift count; absent when the segment has no such option. */
  wscale?: number;
  /** The SACK-permitted option is present (SYNs only). */
  sackPerm?: boolean;
  tsval?: number;
  tsecr?: number;
}

export interface Sniffer {
  /** Stops capturing and returns every TCP segment seen since start, in order. */
  stop(): Promise<Segment[]>;
}

/** Starts capturing TCP on the namespace's `lo`; resolves once the capture socket is bound. */
export async function startSniffer(ns: Netns, timeoutMs = 10_000): Promise<Sniffer> {
  const child = ns.spawn(requireTool('python3'), [SCRIPT, 'sniff'], { stdio: ['pipe', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stderr?.on('data', (chunk: Buffer) => { stderr += chunk.toString(); });
  const closed = new Promise<number | null>((resolve) => child.on('close', resolve));
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`rawnet sniff: not ready within ${timeoutMs} ms: ${stderr}`));
    }, timeoutMs);
    child.stdout?.on('data', (chunk: Buffer) => {
      stdout += chunk.toString();
      if (stdout.startsWith('ready\n')) {
        clearTimeout(timer);
        resolve();
      }
    });
    void closed.then((code) => {
      clearTimeout(timer);
      reject(new Error(`rawnet sniff exited (${code}) before capturing: ${stderr}`));
    });
  });
  return {
    async stop() {
      child.stdin?.end();
      const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
      const code = await closed;
      clearTimeout(timer);
      if (code !== 0) throw new Error(`rawnet sniff failed (${code}): ${stderr}`);
      return stdout.slice('ready\n'.length).split('\n').filter(Boolean).map((line) => JSON.parse(line) as Segment);
    },
  };
}
