/**
 * What the native layer does that only shows from outside: an event subscription takes events
 * from the kernel alone (any process with CAP_NET_ADMIN in the namespace can send to the groups),
 * the decoder thread lowers its priority relative to the process's, and a dump's native buffers
 * are reported to V8 while it runs and given back when it ends.
 */
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { Conntrack, type ConntrackEvent, type OverflowEvent } from '../../../lib/index.js';
import { binding } from '../../../lib/binding/native.js';
import { decodeEventBatch } from '../../../lib/table/records.js';
import { runChild as runProcess } from '../../helpers/child.js';
import { BUILT_LIB } from '../../helpers/cli.js';
import { describeIntegration } from '../../helpers/gate.js';
import { createNetns, destroyAllNetns, type Netns } from '../../helpers/netns.js';
import { requireTool } from '../../helpers/tools.js';

const BINDING_MODULE = join(BUILT_LIB, 'binding', 'native.js');
const CHILD = fileURLToPath(new URL('../../helpers/hardening-child.mjs', import.meta.url));

const NLA_F_NESTED = 0x8000;

function attr(type: number, payload: Buffer): Buffer {
  const header = Buffer.alloc(4);
  header.writeUInt16LE(4 + payload.length, 0);
  header.writeUInt16LE(type, 2);
  const padding = Buffer.alloc((4 - (payload.length % 4)) % 4);
  return Buffer.concat([header, payload, padding]);
}

const u8 = (v: number) => Buffer.from([v]);
const be16 = (v: number) => { const b = Buffer.alloc(2); b.writeUInt16BE(v); return b; };
const be32 = (v: number) => { const b = Buffer.alloc(4); b.writeUInt32BE(v); return b; };
const ipv4 = (text: string) => Buffer.from(text.split('.').map(Number));

/** A ctnetlink NEW event (IPCTNL_MSG_CT_NEW, NLM_F_CREATE | NLM_F_EXCL) for a UDP flow, as the kernel words one. */
function newEvent(src: string, dst: string, sport: number, dport: number): Buffer {
  const tuple = (a: string, b: string, p: number, q: number) => Buffer.concat([
    attr(1 | NLA_F_NESTED, Buffer.concat([attr(1, ipv4(a)), attr(2, ipv4(b))])), // CTA_TUPLE_IP: V4_SRC, V4_DST
    attr(2 | NLA_F_NESTED, Buffer.concat([attr(1, u8(17)), attr(2, be16(p)), attr(3, be16(q))])), // CTA_TUPLE_PROTO
  ]);
  const attrs = Buffer.concat([
    attr(1 | NLA_F_NESTED, tuple(src, dst, sport, dport)), // CTA_TUPLE_ORIG
    attr(2 | NLA_F_NESTED, tuple(dst, src, dport, sport)), // CTA_TUPLE_REPLY
    attr(3, be32(0)), // CTA_STATUS
    attr(12, be32(0x5eed)), // CTA_ID
  ]);
  const header = Buffer.alloc(20);
  header.writeUInt32LE(20 + attrs.length, 0);
  header.writeUInt16LE((1 << 8) | 0, 4); // NFNL_SUBSYS_CTNETLINK, IPCTNL_MSG_CT_NEW
  header.writeUInt16LE(0x200 | 0x400, 6); // NLM_F_EXCL | NLM_F_CREATE
  header.writeUInt8(2, 16); // nfgen_family AF_INET; version 0, res_id 0
  return Buffer.concat([header, attrs]);
}

/** Sends `message` to NFNLGRP_CONNTRACK_NEW from a process inside the namespace (root: CAP_NET_ADMIN there). */
async function multicastFromUserspace(ns: Netns, message: Buffer): Promise<void> {
  const script = [
    'import socket, sys',
    's = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 12)',  // NETLINK_NETFILTER
    's.bind((0, 0))',
    's.sendto(bytes.fromhex(sys.argv[1]), (0, 1))',  // port 0, group mask 1: NFNLGRP_CONNTRACK_NEW
  ].join('\n');
  await ns.exec(requireTool('python3'), ['-c', script, message.toString('hex')]);
}

async function insertEntry(ns: Netns, src: string): Promise<void> {
  await ns.exec(requireTool('conntrack'), ['-I', '-p', 'udp', '-s', src, '-d', '10.9.8.1', '--sport', '3000', '--dport', '53', '-t', '600']);
}

/** Waits until a NETLINK_NETFILTER socket in the namespace listens to NFNLGRP_CONNTRACK_NEW (/proc/net/netlink). */
async function subscribed(ns: Netns): Promise<void> {
  for (let i = 0; i < 250; i++) {
    const lines = (await ns.exec('cat', ['/proc/net/netlink'])).stdout.split('\n').slice(1);
    // sk Eth Pid Groups ...: protocol 12, group bit 0.
    if (lines.some((line) => { const f = line.trim().split(/\s+/); return f[1] === '12' && (Number.parseInt(f[3] ?? '0', 16) & 1) !== 0; })) return;
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  throw new Error('the subscription never joined NFNLGRP_CONNTRACK_NEW');
}

/** Reads events until one from `src` arrives; returns every event read. */
async function eventsUntil(iterator: AsyncIterator<ConntrackEvent | OverflowEvent>, src: string): Promise<Array<ConntrackEvent | OverflowEvent>> {
  const seen: Array<ConntrackEvent | OverflowEvent> = [];
  for (;;) {
    const { value, done } = await iterator.next();
    if (done) throw new Error(`the subscription ended before an event from ${src}`);
    seen.push(value);
    if (value.type !== 'overflow' && value.entry.original.src === src) return seen;
  }
}

async function runChild(args: readonly string[], nodeOptions: readonly string[] = [], prefix: readonly string[] = []): Promise<string> {
  const command = prefix.length > 0 ? prefix[0] as string : process.execPath;
  const argv = [...prefix.slice(1), ...(prefix.length > 0 ? [process.execPath] : []), ...nodeOptions, CHILD, BINDING_MODULE, ...args];
  const result = await runProcess(command, argv, { timeoutMs: 60_000 });
  expect({ signal: result.signal, status: result.status }, result.stderr).toEqual({ signal: null, status: 0 });
  return result.stdout;
}

describeIntegration('native hardening seen from outside', () => {
  let ns: Netns;

  beforeAll(async () => {
    ns = await createNetns('hardening');
  });

  afterAll(destroyAllNetns);

  it('an event subscription drops messages sent to its groups by anyone but the kernel', async () => {
    const forged = newEvent('198.51.100.7', '198.51.100.8', 4242, 53);
    // The bytes are a well-formed event: only who sent them tells them apart.
    const decoded = decodeEventBatch(binding().decode(forged, null, true));
    expect(decoded).toMatchObject([{ type: 'new', entry: { original: { src: '198.51.100.7', sport: 4242 } } }]);

    await using ct = await Conntrack.open({ netns: ns.path });
    const iterator = ct.events(undefined, { types: ['new'] });
    try {
      await subscribed(ns);
      await multicastFromUserspace(ns, forged);
      // The kernel's own event after it: once that arrives, the forged one had its chance.
      await insertEntry(ns, '10.9.9.2');
      const seen = await eventsUntil(iterator, '10.9.9.2');
      expect(seen.filter((e) => e.type !== 'overflow' && e.entry.original.src === '198.51.100.7')).toEqual([]);
    } finally {
      await iterator.return?.();
    }
  });

  it('the decoder thread is 5 nicer than the process, not at nice 5: started at nice 10, it runs at 15', async () => {
    const plain = JSON.parse(await runChild([ns.path, 'nice'])) as { process: number; decoder: number | null };
    expect(plain.decoder).toBe(Math.min(plain.process + 5, 19));
    const niced = JSON.parse(await runChild([ns.path, 'nice'], [], [requireTool('nice'), '-n', '10'])) as { process: number; decoder: number | null };
    expect(niced.process).toBe(Math.min(plain.process + 10, 19));
    expect(niced.decoder).toBe(Math.min(niced.process + 5, 19));
  });

  it('a dump reports its native buffers (about 1.75 MiB at batchSize 1024) to V8 while it runs, and gives them back at close()', async () => {
    const output = await runChild([ns.path, 'external'], ['--expose-gc', '--trace-gc-verbose']);
    // V8 prints what was reported at every collection, in order; the child collects before, during and after.
    const reported = [...output.matchAll(/External memory reported:\s+(-?\d+) KB/g)].map((m) => Number(m[1]));
    expect(reported.length).toBeGreaterThanOrEqual(3);
    const first = reported[0] as number;
    const last = reported[reported.length - 1] as number;
    expect(Math.max(...reported) - first).toBeGreaterThanOrEqual(1024 + 512);
    expect(Math.abs(last - first)).toBeLessThan(256);
  });
});
