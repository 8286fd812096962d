/**
 * The incident end to end: a real MQTT broker (mosquitto) and real MQTT clients (the `mqtt`
 * package) in a sandbox namespace, the global nf_conntrack_max lowered to a few hundred. Clients
 * beyond the limit fail; stats(), diagnose() and `conntrack doctor` must say why, with the
 * kernel log's evidence; raising the limit as recommended lets the rest connect.
 *
 * Changes a global setting: holds the machine-wide lock exclusive, which restores the limit.
 */
import { readFileSync } from 'node:fs';
import { expect, it } from 'vitest';

import { doctorCommand, DOCTOR_EXIT } from '../../../lib/cli/doctor.js';
import { Conntrack } from '../../../lib/table/conntrack.js';
import { diagnose, type Diagnosis } from '../../../lib/doctor/diagnose.js';
import { runCommand } from '../../helpers/cli.js';
import { describeIntegration } from '../../helpers/gate.js';
import { withGlobalLimits } from '../../helpers/global-lock.js';
import { MqttIncident } from '../../helpers/incident.js';
import { oracleCount, oracleStats } from '../../helpers/oracle.js';

/** The lowest limit asked for; higher when another namespace holds more than half of it. */
const MINIMUM_LIMIT = 200;
/** Clients beyond the limit. */
const BEYOND = 100;
/**
 * How long a client waits for its CONNACK. Clients within the limit need a fraction of a second;
 * those beyond it never get one (every SYN is dropped while the table is full), whatever the wait,
 * so a generous one cannot turn a slow machine's late client into a "failed" one.
 */
const CONNECT_TIMEOUT_MS = 10_000;

function finding(diagnosis: Diagnosis, id: string) {
  const found = diagnosis.findings.find((f) => f.id === id);
  if (found === undefined) throw new Error(`no finding '${id}' in ${diagnosis.findings.map((f) => f.id).join(', ')}`);
  return found;
}

describeIntegration('the incident: an MQTT broker behind a full conntrack table', () => {
  it('clients beyond nf_conntrack_max fail, the library says why, and the recommended limit fixes it', async () => {
    let originalMax = 0;
    await withGlobalLimits('exclusive', async (lock) => {
      originalMax = lock.readMax();
      const incident = await MqttIncident.start(lock);
      try {
        const ct = await Conntrack.open({ netns: incident.ns.path });
        try {
          const startedAt = Date.now();
          const before = await ct.stats();
          const LIMIT = await incident.lowerLimit(MINIMUM_LIMIT);
          const CLIENTS = LIMIT + BEYOND;

          // 1. The symptom: connections beyond the limit time out; the ones in keep working.
          const first = await incident.connect(CLIENTS, CONNECT_TIMEOUT_MS);
          expect(first.connected).toBe(LIMIT);
          expect(first.failed).toBe(CLIENTS - LIMIT);
          expect(await incident.publish()).toEqual({ published: LIMIT, failed: 0 });

          // 2. The library's view equals conntrack-tools', and shows the drops.
          const count = await ct.count();
          expect(count).toEqual({ entries: LIMIT, max: LIMIT });
          expect(await oracleCount(incident.ns)).toBe(LIMIT);
          const stats = await ct.stats();
          const oracle = await oracleStats(incident.ns);
          const oracleDrops = oracle.perCpu.reduce((sum, row) => sum + (row.counters.drop ?? 0), 0);
          expect(stats.total.drop).toBe(oracleDrops);
          // Each failed client lost at least its first SYN.
          expect((stats.total.drop ?? 0) - (before.total.drop ?? 0)).toBeGreaterThanOrEqual(CLIENTS - LIMIT);
          // Established, assured entries are never evicted for new ones.
          expect(stats.total.early_drop ?? 0).toBe(before.total.early_drop ?? 0);

          // 3. diagnose() names the problem, with the kernel log's line for this namespace, and a fix.
          const diagnosis = await diagnose({ netns: incident.ns.path, intervalMs: 500 });
          expect(diagnosis.severity).toBe('critical');
          const usage = finding(diagnosis, 'table-usage');
          expect(usage.severity).toBe('critical');
          expect(usage.title).toContain(`${LIMIT} of ${LIMIT} entries`);
          // The failed clients gave up before the diagnosis: drops happened, none during its interval.
          expect(finding(diagnosis, 'drops').severity).toBe('warning');
          const log = finding(diagnosis, 'kernel-log');
          expect(log.severity).toBe('critical');
          expect(diagnosis.facts.kernelLog.readable).toBe(true);
          const events = diagnosis.facts.kernelLog.readable ? diagnosis.facts.kernelLog.events : [];
          const ours = events.filter((e) => e.netnsInode === incident.ns.inode && e.time.getTime() >= startedAt - 5000);
          expect(ours.length).toBeGreaterThan(0);
          expect(ours[0]?.message).toContain(`table full in netns ${incident.ns.inode}, dropping packet`);
          expect(diagnosis.facts.breakdown?.byTcpState).toEqual({ ESTABLISHED: LIMIT });
          expect(finding(diagnosis, 'dependents').title).toMatch(/stateful firewall rules use conntrack/);

          const recommendation = diagnosis.recommendation;
          if (recommendation === undefined) throw new Error('a full table must come with a sizing recommendation');
          expect(recommendation.max).toBeGreaterThanOrEqual(CLIENTS);
          expect(usage.fix?.commands).toContain(`sysctl -w net.netfilter.nf_conntrack_max=${recommendation.max}`);

          // 4. The CLI reports the same, and its exit status says critical.
          const doctor = await runCommand(doctorCommand, ['--netns', incident.ns.path, '--interval', '0.2']);
          expect(doctor.code).toBe(DOCTOR_EXIT.critical);
          expect(doctor.out).toMatch(new RegExp(`^CRITICAL +conntrack table full: ${LIMIT} of ${LIMIT} entries`, 'm'));
          expect(doctor.out).toContain(`table full in netns ${incident.ns.inode}, dropping packet`);
          expect(doctor.out).toContain(`sysctl -w net.netfilter.nf_conntrack_max=${recommendation.max}`);

          // 5. The fix: the recommended limit lets the remaining clients in.
          incident.raiseLimit(recommendation.max);
          const second = await incident.connect(CLIENTS - LIMIT, CONNECT_TIMEOUT_MS);
          expect(second).toMatchObject({ connected: CLIENTS - LIMIT, failed: 0, open: CLIENTS });
          expect(await incident.publish()).toEqual({ published: CLIENTS, failed: 0 });
          expect(await ct.count()).toEqual({ entries: CLIENTS, max: recommendation.max });
          const healthy = await diagnose({ netns: incident.ns.path, intervalMs: 300 });
          expect(finding(healthy, 'table-usage').severity).toBe('ok');
        } finally {
          await ct.close();
        }
      } finally {
        await incident.close();
      }
    });
    // Released: the lock put the limit back.
    expect(Number(readFileSync('/proc/sys/net/netfilter/nf_conntrack_max', 'utf8'))).toBe(originalMax);
  }, 180_000);
}, { tools: ['mosquitto', 'nsenter'] });
