/**
 * The integration helpers themselves, against the real kernel: namespaces come and go, tracking
 * switches on, real flows appear in the table, and the oracle reads them back correctly.
 * Every other integration test builds on these, so a failure here explains failures there.
 */
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, expect, it } from 'vitest';
import { type ChildResult, runNode } from '../../helpers/child.js';
import { describeIntegration } from '../../helpers/gate.js';
import { LONG_TIMEOUTS, createNetns, destroyAllNetns, enableTracking, liveNetnsNames, run, sweepStaleNetns, type Netns } from '../../helpers/netns.js';
import { oracleCount, oracleEntries, oracleIds, oracleStats } from '../../helpers/oracle.js';
import { entryForFlow, fillUdp, flowOf, openFlows } from '../../helpers/traffic.js';
import { requireTool } from '../../helpers/tools.js';

const MARK_PORT = 7100;
const ZONE_PORT = 7200;
const LABEL_PORT = 7300;

/** CPUs the kernel keeps conntrack statistics for: the possible ones (e.g. "0-1", "0,2-3"). */
function possibleCpuCount(): number {
  return readFileSync('/sys/devices/system/cpu/possible', 'utf8').trim().split(',').reduce((sum, range) => {
    const [low, high] = range.split('-').map(Number);
    return sum + (high === undefined ? 1 : high - (low ?? 0) + 1);
  }, 0);
}

/** False once a pid is gone or a zombie (killed, but its new parent has not reaped it yet). */
function isRunning(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z';
  } catch {
    return false;
  }
}

function netnsExists(name: string): boolean {
  return existsSync(`/run/netns/${name}`);
}

/**
 * Runs a snippet that uses the helpers in a separate Node process (vite-node, which vitest
 * brings, loads the TypeScript), to watch what happens when that process ends abnormally.
 */
async function runHelperScript(source: string): Promise<ChildResult> {
  const repo = fileURLToPath(new URL('../../..', import.meta.url));
  const viteNode = join(repo, 'node_modules', 'vite-node', 'vite-node.mjs');
  const helpers = join(repo, 'test', 'helpers', 'netns.ts');
  const dir = mkdtempSync(join(tmpdir(), 'ctt-script-'));
  try {
    const file = join(dir, 'script.mts');
    writeFileSync(file, source.replaceAll('HELPERS', JSON.stringify(helpers)));
    return await runNode([viteNode, file], { cwd: repo, timeoutMs: 60_000 });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

describeIntegration('integration infrastructure', () => {
  afterAll(destroyAllNetns);

  it('creates a namespace with lo up, and destroy() kills what runs in it and removes it', async () => {
    const ns = await createNetns('infra life');
    expect(ns.name).toMatch(/^ctt-infra-life-\d+-[0-9a-f]{8}$/);
    expect(ns.path).toBe(`/run/netns/${ns.name}`);
    expect(netnsExists(ns.name)).toBe(true);
    expect(ns.inode).toBeGreaterThan(0);
    expect((await ns.exec(requireTool('ip'), ['-o', 'link', 'show', 'lo'])).stdout).toMatch(/state UNKNOWN|,UP/);

    const sleeper = ns.spawn('sleep', ['600'], { stdio: 'ignore' });
    await new Promise((resolve) => sleeper.once('spawn', resolve));
    expect(await ns.pids()).toContain(sleeper.pid);
    // A process started behind the helper's back must not keep the namespace alive either.
    const stray = await run(requireTool('ip'), ['netns', 'exec', ns.name, 'sh', '-c', 'sleep 600 >/dev/null 2>&1 & echo $!']);
    const strayPid = Number(stray.stdout.trim());
    expect(await ns.pids()).toContain(strayPid);

    const exited = new Promise((resolve) => sleeper.once('exit', resolve));
    await ns.destroy();
    await exited;
    expect(netnsExists(ns.name)).toBe(false);
    expect(liveNetnsNames()).not.toContain(ns.name);
    expect(isRunning(strayPid)).toBe(false);
    await ns.destroy(); // idempotent
  });

  it('names are unique and sysctls are per namespace', async () => {
    const a = await createNetns('infra unique');
    const b = await createNetns('infra unique');
    expect(a.name).not.toBe(b.name);
    expect(a.inode).not.toBe(b.inode);
    await a.sysctl('net.netfilter.nf_conntrack_udp_timeout', 77);
    expect(await a.sysctl('net.netfilter.nf_conntrack_udp_timeout')).toBe('77');
    expect(await b.sysctl('net.netfilter.nf_conntrack_udp_timeout')).toBe('30');
    await Promise.all([a.destroy(), b.destroy()]);
  });

  it('a test process that exits without cleaning up still leaves no namespace behind', async () => {
    const result = await runHelperScript(`
      const { createNetns } = await import(HELPERS);
      const ns = await createNetns('infra exit');
      console.log(ns.name);
      process.exit(3);
    `);
    expect(result.status, result.stderr).toBe(3);
    const name = result.stdout.trim().split('\n').pop() ?? '';
    expect(name).toMatch(/^ctt-infra-exit-/);
    expect(netnsExists(name)).toBe(false);
  });

  it('namespaces of a killed test process are swept by the next one', async () => {
    const result = await runHelperScript(`
      const { createNetns } = await import(HELPERS);
      const ns = await createNetns('infra killed');
      console.log(ns.name);
      process.kill(process.pid, 'SIGKILL');
    `);
    expect(result.signal).toBe('SIGKILL');
    const name = result.stdout.trim().split('\n').pop() ?? '';
    expect(name).toMatch(/^ctt-infra-killed-/);
    expect(netnsExists(name)).toBe(true); // SIGKILL: no exit hook ran
    sweepStaleNetns();
    expect(netnsExists(name)).toBe(false);
  });

  it('nothing is tracked until a rule uses conntrack; then flows appear', async () => {
    const ns = await createNetns('infra tracking');
    const untracked = await openFlows(ns, [{ kind: 'tcp-established', family: 4 }, { kind: 'udp-reply', family: 4 }]);
    expect(await oracleCount(ns)).toBe(0);
    await untracked.close();

    await enableTracking(ns);
    const tracked = await openFlows(ns, [{ kind: 'tcp-established', family: 4 }, { kind: 'udp-reply', family: 4 }]);
    expect(await oracleCount(ns)).toBeGreaterThanOrEqual(2);
    const entries = await oracleEntries(ns);
    for (const flow of tracked.info) {
      const entry = entryForFlow(entries, flow);
      // Accounting and timestamps are off by default in a new namespace.
      expect(entry.counters).toBeUndefined();
      expect(entry.timestamp).toBeUndefined();
    }
    await tracked.close();
    await ns.destroy();
  });

  it('the oracle reads back every kind of flow with mark, zone, label, counters and timestamps', async () => {
    const ns = await createNetns('infra flows');
    await enableTracking(ns, {
      accounting: true,
      timestamps: true,
      markPort: MARK_PORT,
      zone: { id: 7, port: ZONE_PORT },
      labelPort: LABEL_PORT,
    });

    const startedNs = BigInt(Date.now()) * 1_000_000n;
    const flows = await openFlows(ns, [
      { kind: 'tcp-established', family: 4, port: MARK_PORT },
      { kind: 'tcp-time-wait', family: 4 },
      { kind: 'udp-reply', family: 4, port: ZONE_PORT },
      { kind: 'udp-oneway', family: 4 },
      { kind: 'tcp-established', family: 6, port: LABEL_PORT },
      { kind: 'udp-reply', family: 6 },
      { kind: 'udp-oneway', family: 6 },
      { kind: 'icmp-echo', family: 4 },
      { kind: 'icmp-echo', family: 6 },
    ]);
    const entries = await oracleEntries(ns);
    const doneNs = BigInt(Date.now()) * 1_000_000n;

    // Nothing else runs in the namespace: one entry per flow, no more.
    expect(entries).toHaveLength(flows.info.length);
    expect(await oracleCount(ns)).toBe(entries.length);
    expect((await oracleIds(ns)).sort()).toEqual(entries.map((e) => e.id).sort());

    for (const flow of flows.info) {
      const e = entryForFlow(entries, flow);
      expect(e.family).toBe(flow.family === 6 ? 'ipv6' : 'ipv4');
      expect(e.id).toBeGreaterThan(0);
      expect(e.use).toBeGreaterThanOrEqual(1);
      expect(e.timeout).toBeGreaterThan(0);
      expect(e.counters?.original.packets).toBeGreaterThanOrEqual(1);
      expect(e.counters?.original.bytes).toBeGreaterThan(0);
      const start = e.timestamp?.start ?? -1n;
      // Wall clock of the kernel vs ours: allow a second of slack before.
      expect(start >= startedNs - 1_000_000_000n && start <= doneNs, `start ${start} of ${flow.kind}`).toBe(true);
      expect(e.timestamp?.stop).toBeUndefined();
      // The reply tuple is the original reversed (no NAT here).
      expect([e.reply.src, e.reply.dst, e.reply.sport, e.reply.dport]).toEqual([e.original.dst, e.original.src, e.original.dport, e.original.sport]);
      if (flow.dport !== MARK_PORT) expect(e.mark).toBe(0);
    }

    const established = entryForFlow(entries, flowOf(flows.info, 'tcp-established', 4, MARK_PORT));
    expect(established.tcp).toMatchObject({ state: 'ESTABLISHED', stateNumber: 3 });
    expect(established.flags).toEqual(['SEEN_REPLY', 'ASSURED']);
    expect(established.mark).toBe(0x2a);
    expect(established.counters?.reply.packets).toBeGreaterThanOrEqual(2);

    const timeWait = entryForFlow(entries, flowOf(flows.info, 'tcp-time-wait', 4));
    expect(timeWait.tcp?.state).toBe('TIME_WAIT');
    expect(timeWait.timeout).toBeLessThanOrEqual(LONG_TIMEOUTS['net.netfilter.nf_conntrack_tcp_timeout_time_wait'] ?? 0);

    const zoned = entryForFlow(entries, flowOf(flows.info, 'udp-reply', 4, ZONE_PORT));
    expect(zoned.zone).toBe(7);
    expect(zoned.flags).toEqual(['SEEN_REPLY']); // one exchange: replied, not yet ASSURED
    expect(entries.filter((e) => e.zone === 7)).toHaveLength(1);

    for (const family of [4, 6] as const) {
      const oneWay = entryForFlow(entries, flowOf(flows.info, 'udp-oneway', family));
      expect(oneWay.flags).toEqual([]); // [UNREPLIED]
      expect(oneWay.counters?.reply).toEqual({ packets: 0, bytes: 0 });
    }

    const labelled = entryForFlow(entries, flowOf(flows.info, 'tcp-established', 6, LABEL_PORT));
    expect(labelled.labels).toEqual([3]);
    expect(labelled.original.src).toBe('::1');
    expect(entries.filter((e) => e.labels !== undefined)).toHaveLength(1);

    const icmp = entryForFlow(entries, flowOf(flows.info, 'icmp-echo', 4));
    expect(icmp.original).toMatchObject({ protocolNumber: 1, icmpType: 8, icmpCode: 0, sport: undefined });
    expect(icmp.reply).toMatchObject({ icmpType: 0, icmpCode: 0, icmpId: icmp.original.icmpId });
    const icmp6 = entryForFlow(entries, flowOf(flows.info, 'icmp-echo', 6));
    expect(icmp6.original).toMatchObject({ protocolNumber: 58, icmpType: 128, icmpCode: 0 });
    expect(icmp6.reply).toMatchObject({ icmpType: 129, icmpId: icmp6.original.icmpId });
    // enableTracking raised the timeouts before the flows: the entries got the long ones, not 30 s.
    for (const e of [icmp, icmp6, entryForFlow(entries, flowOf(flows.info, 'udp-oneway', 4)), zoned]) {
      expect(e.timeout, `${e.original.protocol} entry ${e.id}`).toBeGreaterThan(30);
    }

    // poke() is one more round trip: the counters must move by it.
    await flows.poke();
    const after = entryForFlow(await oracleEntries(ns), flowOf(flows.info, 'tcp-established', 4, MARK_PORT));
    expect(after.id).toBe(established.id);
    expect(after.counters?.original.packets).toBeGreaterThan(established.counters?.original.packets ?? Infinity);

    const stats = await oracleStats(ns);
    expect(stats.perCpu).toHaveLength(possibleCpuCount());
    expect(stats.total.drop).toBe(0);

    // Released flows close: the TCP entry leaves ESTABLISHED.
    await flows.close();
    const closed = entryForFlow(await oracleEntries(ns), flowOf(flows.info, 'tcp-established', 4, MARK_PORT));
    expect(closed.tcp?.state).not.toBe('ESTABLISHED');
    await ns.destroy();
  });

  it("two namespaces do not see each other's flows, even on the same ports", async () => {
    const a = await createNetns('infra iso a');
    const b = await createNetns('infra iso b');
    await enableTracking(a);
    await enableTracking(b);
    const flowsA = await openFlows(a, [{ kind: 'tcp-established', family: 4, port: MARK_PORT }, { kind: 'udp-oneway', family: 6 }]);
    expect(await oracleCount(b)).toBe(0);
    const flowsB = await openFlows(b, [{ kind: 'tcp-established', family: 4, port: MARK_PORT }]);

    const entriesA = await oracleEntries(a);
    const entriesB = await oracleEntries(b);
    expect(entriesA).toHaveLength(2);
    expect(entriesB).toHaveLength(1);
    for (const flow of flowsA.info) entryForFlow(entriesA, flow);
    entryForFlow(entriesB, flowOf(flowsB.info, 'tcp-established', 4));
    const sportsA = new Set(flowsA.info.map((f) => f.sport));
    expect(entriesB.filter((e) => sportsA.has(e.original.sport))).toEqual([]);
    expect(entriesA.filter((e) => e.original.sport === flowsB.info[0]?.sport)).toEqual([]);

    await Promise.all([flowsA.close(), flowsB.close()]);
    await Promise.all([a.destroy(), b.destroy()]);
  });

  it('fillUdp makes N UNREPLIED UDP entries that stay, without ICMP entries', async () => {
    const ns: Netns = await createNetns('infra fill');
    await enableTracking(ns);
    const n = 5_000;
    expect(await fillUdp(ns, n)).toEqual({ sent: n });

    expect(await oracleCount(ns)).toBe(n);
    const ids = await oracleIds(ns);
    expect(new Set(ids).size).toBe(n);
    const entries = await oracleEntries(ns, { filter: ['-p', 'udp', '--dport', '9'], labels: false });
    expect(entries).toHaveLength(n);
    for (const e of entries) {
      expect(e.flags).toEqual([]);
      // enableTracking's raised nf_conntrack_udp_timeout, not the 30 s default.
      expect(e.timeout).toBeGreaterThan(30);
    }
    // The port unreachables are RELATED to the UDP entries: they neither make entries of their own
    // nor count as a reply.
    expect(await oracleEntries(ns, { filter: ['-p', 'icmp'], labels: false })).toEqual([]);
    await ns.destroy();
  });
}, { tools: ['ping', 'unshare'] });
