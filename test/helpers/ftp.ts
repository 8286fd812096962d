/**
 * Drives ftp-child.mjs (a minimal FTP server and client in one process) inside a test namespace,
 * so conntrack's FTP helper sees a real control connection and creates expectations, and NAT
 * rewrites the PORT / 227 lines.
 */
import { once } from 'node:events';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import type { Netns } from './netns.js';
import { startSniffer, type Segment } from './rawnet.js';

const SCRIPT = fileURLToPath(new URL('./ftp-child.mjs', import.meta.url));

export interface FtpConfig {
  /** Where the server listens. */
  serverAddress: string;
  serverPort: number;
  /** Where the client connects (the server's address, or one DNAT sends there). */
  connectAddress: string;
  connectPort: number;
  /** The client's own address (bound). */
  clientAddress: string;
}

/** "ADDRESS:PORT" as each side of a connection sees it. */
export interface Endpoints {
  clientLocal: string;
  clientRemote: string;
  serverLocal: string;
  serverRemote: string;
}

/** A PORT or 227 line as the sender wrote it and as the receiver read it. */
export interface Rewritten {
  sent: string;
  received: string;
}

export interface FtpSession {
  readonly control: Endpoints;
  /** Client sends PASV, server answers 227 (the helper expects a data connection to the server). */
  pasv(): Promise<Rewritten>;
  /** Client opens the passive data connection; one line each way; it stays open. */
  pasvConnect(): Promise<Endpoints>;
  /** Client sends PORT (the helper expects a data connection to the client). */
  port(): Promise<Rewritten>;
  /** Server opens the active data connection; one line each way; it stays open. */
  portConnect(): Promise<Endpoints>;
  /** Ends the child and every socket. */
  close(): Promise<void>;
}

export async function startFtp(ns: Netns, config: FtpConfig, timeoutMs = 10_000): Promise<FtpSession> {
  const child = ns.spawn(process.execPath, [SCRIPT, JSON.stringify(config)], { stdio: ['pipe', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr?.on('data', (chunk: Buffer) => { stderr += chunk.toString(); });
  const exited = once(child, 'exit');
  const lines = createInterface({ input: child.stdout! })[Symbol.asyncIterator]();

  const next = async <T>(what: string): Promise<T> => {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`ftp-child: no answer to ${what} within ${timeoutMs} ms; stderr: ${stderr}`)), timeoutMs);
    });
    try {
      const line = await Promise.race([lines.next(), timeout]);
      if (line.done) throw new Error(`ftp-child ended before answering ${what}; stderr: ${stderr}`);
      const answer = JSON.parse(line.value) as T & { error?: string };
      if (answer.error !== undefined) throw new Error(`ftp-child: ${answer.error}`);
      return answer;
    } finally {
      clearTimeout(timer);
    }
  };
  const command = <T>(cmd: string): Promise<T> => {
    child.stdin?.write(`${cmd}\n`);
    return next<T>(cmd);
  };

  let control: Endpoints;
  try {
    control = (await next<{ control: Endpoints }>('login')).control;
  } catch (err) {
    child.kill('SIGKILL');
    throw err;
  }
  return {
    control,
    pasv: () => command<Rewritten>('pasv'),
    pasvConnect: async () => (await command<{ data: Endpoints }>('pasv-connect')).data,
    port: () => command<Rewritten>('port'),
    portConnect: async () => (await command<{ data: Endpoints }>('port-connect')).data,
    async close() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.stdin?.end();
      const timer = setTimeout(() => child.kill('SIGKILL'), 5_000);
      await exited;
      clearTimeout(timer);
    },
  };
}

/** "127.0.0.1:21" → ["127.0.0.1", 21]. IPv4 only (what the FTP tests use). */
export function splitEndpoint(text: string): [string, number] {
  const i = text.lastIndexOf(':');
  return [text.slice(0, i), Number(text.slice(i + 1))];
}

/** An nft `ct helper` object assigning the kernel's FTP helper to new connections to port 21. */
export const FTP_HELPER_RULES = `
table inet ftp_helper {
  ct helper ftp-std {
    type "ftp" protocol tcp;
    l3proto inet;
  }
  chain output {
    type filter hook output priority filter; policy accept;
    tcp dport 21 ct state new ct helper set "ftp-std"
  }
}
`;

/**
 * FTP through NAT on loopback: the client (bound to `client`) connects to `visibleServer`:21,
 * which is DNATed to `server`:21, and its source is SNATed to `snatTo`. The NAT helper then
 * rewrites the client's PORT (client → snatTo) and the server's 227 (server → visibleServer), so
 * the control connection's entry gets sequence adjustment whenever the lengths differ.
 */
export interface FtpNatScenario {
  client: string;
  visibleServer: string;
  server: string;
  snatTo: string;
}

/** The rewritten addresses are longer than the originals: PORT +1 byte, 227 +2 bytes. */
export const FTP_NAT_LONGER: FtpNatScenario = { client: '127.0.0.1', visibleServer: '127.0.0.100', server: '127.0.0.2', snatTo: '127.0.0.11' };
/** Shorter: PORT -2 bytes, 227 -1 byte (negative offsets). */
export const FTP_NAT_SHORTER: FtpNatScenario = { client: '127.0.0.101', visibleServer: '127.0.0.10', server: '127.0.0.200', snatTo: '127.0.0.3' };

export function ftpNatRules(s: FtpNatScenario): string {
  // Numeric priorities: nft 1.0.6 knows `dstnat` only in prerouting.
  return `${FTP_HELPER_RULES}
table ip ftp_nat {
  chain output {
    type nat hook output priority -100; policy accept;
    ip daddr ${s.visibleServer} tcp dport 21 dnat to ${s.server}
  }
  chain postrouting {
    type nat hook postrouting priority 100; policy accept;
    ip daddr ${s.server} tcp dport 21 snat to ${s.snatTo}
  }
}
`;
}

export interface FtpNatRun {
  ftp: FtpSession;
  /** PORT and 227 as written and as read. */
  port: Rewritten;
  pasv: Rewritten;
  /** Every TCP segment that left lo meanwhile (after NAT and sequence adjustment). */
  segments: Segment[];
}

/**
 * Loads ftpNatRules(s) into `ns` and runs one FTP session through it while capturing: login,
 * PORT + active data connection, PASV + passive data connection (all left open).
 */
export async function runFtpThroughNat(ns: Netns, s: FtpNatScenario): Promise<FtpNatRun> {
  await ns.nft(ftpNatRules(s));
  const sniffer = await startSniffer(ns);
  let ftp: FtpSession | undefined;
  try {
    ftp = await startFtp(ns, { serverAddress: s.server, serverPort: 21, connectAddress: s.visibleServer, connectPort: 21, clientAddress: s.client });
    const port = await ftp.port();
    await ftp.portConnect();
    const pasv = await ftp.pasv();
    await ftp.pasvConnect();
    return { ftp, port, pasv, segments: await sniffer.stop() };
  } catch (err) {
    await sniffer.stop().catch(() => []);
    await ftp?.close();
    throw err;
  }
}

/**
 * The control connection's expected CTA_SEQ_ADJ_* from the capture: nf_nat_mangle_tcp_packet()
 * -> nf_ct_seqadj_set() records the sequence number of the rewritten segment as correction_pos
 * and the change in length as offset_after (offset_before stays 0: nothing was rewritten before).
 * The rewritten segment's own sequence number is not adjusted (only later ones are), so its
 * captured copy carries correction_pos. Offsets are the kernel's s32 values.
 */
export function expectedSeqAdjust(run: FtpNatRun, s: FtpNatScenario) {
  const find = (src: string, text: string) => {
    const found = run.segments.filter((seg) => seg.src === src && seg.payload === `${text}\r\n`);
    if (found.length !== 1) throw new Error(`expected one segment from ${src} carrying ${JSON.stringify(text)}, saw ${found.length}`);
    return found[0] as Segment;
  };
  return {
    original: { correctionPos: find(s.snatTo, run.port.received).seq, offsetBefore: 0, offsetAfter: run.port.received.length - run.port.sent.length },
    reply: { correctionPos: find(s.visibleServer, run.pasv.received).seq, offsetBefore: 0, offsetAfter: run.pasv.received.length - run.pasv.sent.length },
  };
}
