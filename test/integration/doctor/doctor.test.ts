/**
 * diagnose() and `conntrack doctor` on namespaces that are not in trouble: one that tracks
 * nothing, one with NAT rules and live flows, and bad input. The full table is incident.test.ts.
 */
import { chmod, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';

import { doctorCommand } from '../../../lib/cli/doctor.js';
import { diagnose, type Diagnosis } from '../../../lib/doctor/diagnose.js';
import { Conntrack, type ConntrackEntry } from '../../../lib/index.js';
import { readKernelLog } from '../../../lib/doctor/kmsg.js';
import { runCommand } from '../../helpers/cli.js';
import { describeIntegration } from '../../helpers/gate.js';
import { holdGlobalLimits, type GlobalLimitsLock } from '../../helpers/global-lock.js';
import { createNetns, destroyAllNetns, enableTracking, type Netns } from '../../helpers/netns.js';
import { openFlows, type OpenFlows } from '../../helpers/traffic.js';
import { requireTool } from '../../helpers/tools.js';

const REPO = new URL('../../..', import.meta.url).pathname;
const VITE_NODE = join(REPO, 'node_modules/.bin/vite-node');

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
    // A NAT table: conntrack cannot be switched off where this exists.
    await nat.nft([
      'table ip doctor_nat {',
      '  chain post { type nat hook postrouting priority srcnat; oifname "dummy0" masquerade; }',
      '}',
    ].join('\n'));
    flows = await openFlows(nat, [{ kind: 'tcp-established', family: 4 }, { kind: 'udp-reply', family: 4 }]);
  });

  afterAll(async () => {
    await flows?.close();
    await destroyAllNetns();
    limits?.release();
  });

  it('a namespace without rules tracks nothing: info only, exit status 0', async () => {
    const diagnosis = await diagnose({ netns: idle.path, intervalMs: 100 });
    expect(finding(diagnosis, 'tracking')).toMatchObject({ severity: 'info', title: `conntrack tracks nothing in ${idle.path}` });
    expect(finding(diagnosis, 'table-usage').severity).toBe('ok');
    expect(finding(diagnosis, 'dependents').title).toBe('nothing found here that needs conntrack');
    expect(finding(diagnosis, 'dependents').fix).toBeUndefined();
    expect(diagnosis.facts.netnsInode).toBe(idle.inode);
    expect(diagnosis.facts.breakdown).toEqual({ entries: 0, byProtocol: {}, byTcpState: {}, nat: 0, assured: 0, unreplied: 0 });
    expect(diagnosis.severity).toBe('info');

    const cli = await runCommand(doctorCommand, ['--netns', idle.path, '--interval', '0']);
    expect(cli.code).toBe(0);
    expect(cli.out).toMatch(/^INFO +conntrack tracks nothing/m);
  });

  it('sees live flows by protocol and state, and the NAT rule that makes conntrack required', async () => {
    const diagnosis = await diagnose({ netns: nat.path, intervalMs: 100 });
    expect(finding(diagnosis, 'tracking').severity).toBe('ok');
    expect(diagnosis.facts.breakdown).toMatchObject({ entries: 2, byProtocol: { tcp: 1, udp: 1 }, byTcpState: { ESTABLISHED: 1 } });
    expect(diagnosis.facts.after.count.entries).toBe(2);
    // The breakdown is counted natively; the entries themselves say the same.
    {
      await using ct = await Conntrack.open({ netns: nat.path });
      const all: ConntrackEntry[] = [];
      for await (const e of ct.entries()) all.push(e);
      const count = (test: (e: ConntrackEntry) => boolean) => all.filter(test).length;
      expect(diagnosis.facts.breakdown).toEqual({
        entries: all.length,
        byProtocol: { tcp: count((e) => e.original.protocol === 'tcp'), udp: count((e) => e.original.protocol === 'udp') },
        byTcpState: { ESTABLISHED: count((e) => e.tcp?.state === 'ESTABLISHED') },
        nat: count((e) => e.flags.includes('SRC_NAT') || e.flags.includes('DST_NAT')),
        assured: count((e) => e.flags.includes('ASSURED')),
        unreplied: count((e) => !e.flags.includes('SEEN_REPLY')),
      });
    }
    const dependents = finding(diagnosis, 'dependents');
    expect(dependents.title).toMatch(/required here \(NAT\)/);
    expect(dependents.evidence.join('\n')).toContain('oifname "dummy0" masquerade');
    expect(diagnosis.facts.dependents.rules?.some((r) => r.kind === 'stateful' && r.rule === 'ct state new counter')).toBe(true);

    const cli = await runCommand(doctorCommand, ['--netns', nat.path, '--interval', '0.1', '--json']);
    const parsed = JSON.parse(cli.out) as { severity: string; findings: Array<{ id: string }>; facts: { netnsInode: number } };
    expect(parsed.facts.netnsInode).toBe(nat.inode);
    expect(parsed.findings.map((f) => f.id)).toEqual(diagnosis.findings.map((f) => f.id));
    expect(cli.code).toBe(parsed.severity === 'warning' ? 3 : parsed.severity === 'critical' ? 4 : 0);
  });

  it('--no-scan skips the walk and says so', async () => {
    const diagnosis = await diagnose({ netns: nat.path, intervalMs: 0, scan: false });
    expect(diagnosis.facts.breakdown).toBeUndefined();
    expect(diagnosis.facts.breakdownSkipped).toBe('scan switched off');
    const small = await diagnose({ netns: nat.path, intervalMs: 0, scanLimit: 1 });
    expect(small.facts.breakdownSkipped).toBe('2 entries, above the scan limit of 1');
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
      const asRoot = await diagnose({ netns: nat.path, intervalMs: 0, scan: false });
      expect(seen.source).toBe('procfs');
      expect(seen.count).toEqual(asRoot.facts.after.count);
      // The same per-namespace counters, through the other interface.
      for (const name of ['drop', 'early_drop', 'insert_failed', 'invalid', 'found', 'chaintoolong'] as const) {
        expect(seen.stats[name], name).toBe(asRoot.facts.after.stats[name] ?? 0);
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
