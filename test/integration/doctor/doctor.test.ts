/**
 * diagnose() and `conntrack doctor` on namespaces that are not in trouble: one that tracks
 * nothing, one with NAT rules and live flows, and bad input. The full table is incident.test.ts.
 */
import { readFileSync } from 'node:fs';
import { chmod, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';

import { DOCTOR_EXIT, doctorCommand } from '../../../lib/cli/doctor.js';
import { diagnose, type Diagnosis } from '../../../lib/doctor/diagnose.js';
import { readKernelLog } from '../../../lib/doctor/kmsg.js';
import { runCommand } from '../../helpers/cli.js';
import { describeIntegration } from '../../helpers/gate.js';
import { holdGlobalLimits, type GlobalLimitsLock } from '../../helpers/global-lock.js';
import { createNetns, destroyAllNetns, enableTracking, type Netns } from '../../helpers/netns.js';
import { oracleCount, oracleEntries, oracleStats, oracleStatusIds } from '../../helpers/oracle.js';
import { openFlows, type OpenFlows } from '../../helpers/traffic.js';
import { requireTool } from '../../helpers/tools.js';

const REPO = new URL('../../..', import.meta.url).pathname;
const VITE_NODE = join(REPO, 'node_modules/.bin/vite-node');

/** How many times each value occurs. */
function tally(values: readonly string[]): Record<string, number> {
  const counts: Record<string, number> = {};
  for (const value of values) counts[value] = (counts[value] ?? 0) + 1;
  return counts;
}

/** A UDP datagram to 127.0.0.100:5000, which the nat namespace's output chain DNATs to 127.0.0.1. */
const NATED_DATAGRAM = "const s = require('dgram').createSocket('udp4'); s.send('x', 5000, '127.0.0.100', () => s.close())";

function finding(diagnosis: Diagnosis, id: string) {
  const found = diagnosis.findings.find((f) => f.id === id);
  if (found === undefined) throw new Error(`no finding '${id}'`);
  return found;
}

describeIntegration('diagnose() and conntrack doctor', () => {
  let limits: GlobalLimitsLock | undefined;
  let idle: Netns;
  let nat: Netns;
  let flows: OpenFlows;

  beforeAll(async () => {
    // Compared with nf_conntrack_max below: nobody may change it meanwhile.
    limits = await holdGlobalLimits('shared');
    idle = await createNetns('doctor-idle');
    nat = await createNetns('doctor-nat');
    await enableTracking(nat);
    // A NAT table: conntrack cannot be switched off where this exists. The output chain NATs one
    // flow for real, so the breakdown has a NATed entry to count.
    await nat.nft([
      'table ip doctor_nat {',
      '  chain post { type nat hook postrouting priority srcnat; oifname "dummy0" masquerade; }',
      '  chain out { type nat hook output priority -100; ip daddr 127.0.0.100 udp dport 5000 dnat to 127.0.0.1; }',
      '}',
    ].join('\n'));
    flows = await openFlows(nat, [{ kind: 'tcp-established', family: 4 }, { kind: 'udp-reply', family: 4 }]);
    await nat.exec(process.execPath, ['-e', NATED_DATAGRAM]);
  });

  afterAll(async () => {
    await flows?.close();
    await destroyAllNetns();
    limits?.release();
  });

  /**
   * The host's own bucket count is global and not this test's to change: with more than 8 hash
   * nodes per bucket when full (README, `buckets`), every namespace's diagnosis carries a warning.
   */
  function hostBucketsWarn(): boolean {
    const max = limits?.readMax() ?? Number.NaN;
    return (2 * max) / Number(readFileSync('/proc/sys/net/netfilter/nf_conntrack_buckets', 'utf8')) > 8;
  }

  it('a namespace without rules tracks nothing: info only, exit status 0', async () => {
    const diagnosis = await diagnose({ netns: idle.path, intervalMs: 100 });
    expect(finding(diagnosis, 'tracking')).toMatchObject({ severity: 'info', title: `conntrack tracks nothing in ${idle.path}` });
    expect(finding(diagnosis, 'table-usage').severity).toBe('ok');
    expect(finding(diagnosis, 'dependents').title).toBe('nothing found here that needs conntrack');
    expect(finding(diagnosis, 'dependents').fix).toBeUndefined();
    expect(diagnosis.facts.netnsInode).toBe(idle.inode);
    expect(diagnosis.facts.breakdown).toEqual({ entries: 0, byProtocol: {}, byTcpState: {}, nat: 0, assured: 0, unreplied: 0 });
    expect(diagnosis.severity).toBe(hostBucketsWarn() ? 'warning' : 'info');

    const cli = await runCommand(doctorCommand, ['--netns', idle.path, '--interval', '0']);
    expect(cli.code).toBe(hostBucketsWarn() ? DOCTOR_EXIT.warning : 0);
    expect(cli.out).toMatch(/^INFO +conntrack tracks nothing/m);
  });

  it('sees live flows by protocol, state and NAT as conntrack -L does, and the NAT rule that makes conntrack required', async () => {
    const diagnosis = await diagnose({ netns: nat.path, intervalMs: 100 });
    expect(finding(diagnosis, 'tracking').severity).toBe('ok');
    // The breakdown is counted natively; conntrack-tools counts the same.
    const oracle = await oracleEntries(nat, { labels: false });
    const selected = await oracleStatusIds(nat);
    expect(diagnosis.facts.breakdown).toEqual({
      entries: oracle.length,
      byProtocol: tally(oracle.map((e) => e.original.protocol)),
      byTcpState: tally(oracle.flatMap((e) => (e.tcp === undefined ? [] : [e.tcp.state]))),
      nat: selected.ANY_NAT.size,
      assured: selected.ASSURED.size,
      unreplied: oracle.length - selected.SEEN_REPLY.size,
    });
    // What the namespace was given: a TCP and a UDP exchange, and one NATed UDP datagram.
    expect(diagnosis.facts.breakdown).toMatchObject({ entries: 3, byProtocol: { tcp: 1, udp: 2 }, byTcpState: { ESTABLISHED: 1 }, nat: 1, unreplied: 1 });
    expect(diagnosis.facts.after.count.entries).toBe(3);
    const dependents = finding(diagnosis, 'dependents');
    expect(dependents.title).toMatch(/required here \(NAT\)/);
    expect(dependents.evidence.join('\n')).toContain('oifname "dummy0" masquerade');
    expect(dependents.evidence.join('\n')).toContain('1 of 3 entries are NATed');
    expect(diagnosis.facts.dependents.rules?.some((r) => r.kind === 'stateful' && r.rule === 'ct state new counter')).toBe(true);

    // The exit status the README promises for this namespace: nothing here is wrong (3 entries,
    // no drops: conntrack -S), unless the host's own buckets are too few for its limit (more than
    // 8 hash nodes per bucket when full, a warning).
    expect((await oracleStats(nat)).total.drop).toBe(0);
    const expectedExit = hostBucketsWarn() ? DOCTOR_EXIT.warning : 0;
    const cli = await runCommand(doctorCommand, ['--netns', nat.path, '--interval', '0.1', '--json']);
    expect(cli.code, cli.err).toBe(expectedExit);
    const parsed = JSON.parse(cli.out) as { findings: Array<{ id: string; severity: string }>; facts: { netnsInode: number } };
    expect(parsed.facts.netnsInode).toBe(nat.inode);
    expect(parsed.findings.map((f) => f.id)).toEqual(diagnosis.findings.map((f) => f.id));
    for (const id of ['tracking', 'table-usage', 'drops']) {
      expect(parsed.findings.find((f) => f.id === id)?.severity, id).toBe('ok');
    }
  });

  it('--no-scan skips the walk and says so', async () => {
    const diagnosis = await diagnose({ netns: nat.path, intervalMs: 0, scan: false });
    expect(diagnosis.facts.breakdown).toBeUndefined();
    expect(diagnosis.facts.breakdownSkipped).toBe('scan switched off');
    const small = await diagnose({ netns: nat.path, intervalMs: 0, scanLimit: 1 });
    expect(small.facts.breakdownSkipped).toBe('3 entries, above the scan limit of 1');
  });

  it('reads the kernel log as root', async () => {
    const log = await readKernelLog({ match: /./ });
    expect(log.readable).toBe(true);
    if (log.readable) {
      expect(log.records.length).toBeGreaterThan(0);
      // Sequence numbers rise, and times are not in the future.
      const last = log.records.at(-1)!;
      expect(last.time.getTime()).toBeLessThanOrEqual(Date.now() + 1000);
      expect(log.records.every((r, i) => i === 0 || r.sequence > log.records[i - 1]!.sequence)).toBe(true);
    }
  });

  it('without CAP_NET_ADMIN it falls back to procfs for its own namespace and says what it could not see', async () => {
    const scratch = await mkdtemp(join(tmpdir(), 'ctt-doctor-'));
    try {
      const script = join(scratch, 'unprivileged.ts');
      await writeFile(script, [
        `import { diagnose } from ${JSON.stringify(join(REPO, 'lib/doctor/diagnose.ts'))};`,
        'const d = await diagnose({ intervalMs: 100 });',
        'console.log(JSON.stringify({ source: d.facts.source, count: d.facts.after.count, stats: d.facts.after.stats,',
        '  ids: d.findings.map((f) => f.id), kernelLog: d.facts.kernelLog.readable, skipped: d.facts.breakdownSkipped }));',
      ].join('\n'));
      await chmod(scratch, 0o755);
      await chmod(script, 0o644);
      const setpriv = requireTool('setpriv');
      const { stdout } = await nat.exec(setpriv, ['--reuid=65534', '--regid=65534', '--clear-groups', '--inh-caps=-all', '--bounding-set=-all', VITE_NODE, script], { timeoutMs: 60_000 });
      const seen = JSON.parse(stdout.trim().split('\n').at(-1) as string) as {
        source: string; count: { entries: number; max: number }; stats: Record<string, number>; ids: string[]; kernelLog: boolean; skipped: string;
      };
      expect(seen.source).toBe('procfs');
      // What conntrack-tools says of the namespace, read through procfs instead of ctnetlink.
      expect(seen.count).toEqual({ entries: await oracleCount(nat), max: limits?.readMax() });
      const oracle = await oracleStats(nat);
      for (const name of ['drop', 'early_drop', 'insert_failed', 'invalid', 'found', 'chaintoolong'] as const) {
        expect(seen.stats[name], name).toBe(oracle.total[name] ?? 0);
      }
      expect(seen.ids).toContain('privileges');
      expect(seen.skipped).toBe('reading entries needs CAP_NET_ADMIN');
    } finally {
      await rm(scratch, { recursive: true, force: true });
    }
  });

  it('refuses bad options with typed errors, before touching the kernel', async () => {
    await expect(diagnose({ intervalMs: -1 })).rejects.toMatchObject({ code: 'ERR_CONNTRACK_INVALID_ARGUMENT' });
    await expect(diagnose({ intervalMs: 1.5 })).rejects.toMatchObject({ code: 'ERR_CONNTRACK_INVALID_ARGUMENT' });
    await expect(diagnose({ expectedConnections: 0 })).rejects.toMatchObject({ code: 'ERR_CONNTRACK_INVALID_ARGUMENT' });
    await expect(diagnose({ netns: 'relative/path' })).rejects.toMatchObject({ code: 'ERR_CONNTRACK_INVALID_ARGUMENT' });
    await expect(diagnose({ netns: '/run/netns/does-not-exist-ct' })).rejects.toMatchObject({ code: 'ERR_CONNTRACK_NETNS' });
    const controller = new AbortController();
    controller.abort();
    await expect(diagnose({ netns: nat.path, signal: controller.signal })).rejects.toMatchObject({ name: 'AbortError' });

    const usage = await runCommand(doctorCommand, ['--interval', 'soon']);
    expect(usage.code).toBe(2);
    expect(usage.err).toContain('--interval takes a number');
    const missing = await runCommand(doctorCommand, ['--netns', '/run/netns/does-not-exist-ct']);
    expect(missing.code).toBe(1);
    expect(missing.err).toContain('/run/netns/does-not-exist-ct');
  });
}, { tools: ['setpriv', 'nsenter'] });
