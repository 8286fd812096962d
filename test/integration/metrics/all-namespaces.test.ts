/**
 * The all-namespaces collector in this process, against conntrack-tools in namespaces this test
 * makes: discovery with names, the cap and its count, namespaces that appear and vanish, the
 * breakdowns against conntrack -L, time to full, and the prom-client collector read through
 * prom-client's own register.metrics(). Every exposition also goes through promtool.
 */
import { Registry } from 'prom-client';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { createMetricsCollector, type MetricsCollector } from '../../../lib/metrics/collector.js';
import { registerConntrackMetrics } from '../../../lib/metrics/prom-client.js';
import { parseExposition, type ExpositionFamily } from '../../helpers/exposition.js';
import { describeIntegration } from '../../helpers/gate.js';
import { createNetns, destroyAllNetns, enableTracking, type Netns } from '../../helpers/netns.js';
import { oracleCount, oracleEntries } from '../../helpers/oracle.js';
import { expectPromtoolAccepts } from '../../helpers/promtool.js';
import { fillUdp, openFlows, type OpenFlows } from '../../helpers/traffic.js';

/** The sample of `name` whose labels include `labels`. */
function value(families: Map<string, ExpositionFamily>, name: string, labels: Record<string, string>): number | undefined {
  return families.get(name)?.samples.find((s) => Object.entries(labels).every(([k, v]) => s.labels[k] === v))?.value;
}

async function scrape(collector: MetricsCollector): Promise<Map<string, ExpositionFamily>> {
  const text = await collector.collect();
  await expectPromtoolAccepts(text);
  return parseExposition(text);
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

describeIntegration('all-namespaces collector', () => {
  let a: Netns;
  let b: Netns;
  let flows: OpenFlows;
  const closeLater: MetricsCollector[] = [];

  beforeAll(async () => {
    a = await createNetns('all-ns a');
    b = await createNetns('all-ns b');
    for (const ns of [a, b]) await enableTracking(ns);
    flows = await openFlows(a, [{ kind: 'tcp-established', family: 4 }, { kind: 'tcp-established', family: 6 }, { kind: 'udp-reply', family: 4 }]);
    // 127.0.0.1 -> 127.1.x.y: /24 groups of destinations, several ports.
    await fillUdp(a, 300, { port: 4000 });
    await fillUdp(a, 20, { port: 4001 });
    await fillUdp(b, 5, { port: 53 });
  }, 120_000);

  afterAll(async () => {
    await Promise.all(closeLater.map((c) => c.close()));
    await flows?.close();
    await destroyAllNetns();
  });

  it('finds every namespace made here by inode and name, with the count conntrack -C gives', async () => {
    const collector = await createMetricsCollector({ netns: 'all', breakdownBy: false });
    closeLater.push(collector);
    const families = await scrape(collector);
    for (const ns of [a, b]) {
      const labels = { netns: String(ns.inode), netns_name: ns.name, container_id: '' };
      expect(value(families, 'conntrack_up', labels), ns.name).toBe(1);
      expect(value(families, 'conntrack_entries', labels), ns.name).toBe(await oracleCount(ns));
    }
    const found = value(families, 'conntrack_namespaces_found', {}) ?? 0;
    expect(found).toBeGreaterThanOrEqual(3); // these two and this process's own
    expect(value(families, 'conntrack_namespaces_exported', {})).toBe(found);
    expect(value(families, 'conntrack_namespaces_over_limit', {})).toBe(0);
    // breakdownBy false: no breakdown series at all.
    expect([...families.keys()].filter((name) => /by_|top_|breakdown/.test(name))).toEqual([]);
  });

  it('--max-namespaces: exports that many and counts the rest', async () => {
    const collector = await createMetricsCollector({ netns: 'all', maxNamespaces: 1, breakdownBy: false });
    closeLater.push(collector);
    const families = await scrape(collector);
    const found = value(families, 'conntrack_namespaces_found', {}) ?? 0;
    expect(families.get('conntrack_up')?.samples).toHaveLength(1);
    expect(value(families, 'conntrack_namespaces_exported', {})).toBe(1);
    expect(value(families, 'conntrack_namespaces_over_limit', {})).toBe(found - 1);
    expect(value(families, 'conntrack_namespaces_limit', {})).toBe(1);
  });

  it('a namespace made later is picked up; one deleted is up 0, then forgotten', async () => {
    const collector = await createMetricsCollector({ netns: 'all', forgetAfterSeconds: 1, breakdownBy: false });
    closeLater.push(collector);
    const late = await createNetns('all-ns late');
    await enableTracking(late);
    await fillUdp(late, 3);
    let families = await scrape(collector);
    expect(value(families, 'conntrack_entries', { netns: String(late.inode), netns_name: late.name })).toBe(3);
    await late.destroy();
    families = await scrape(collector);
    expect(value(families, 'conntrack_up', { netns: String(late.inode) })).toBe(0);
    expect(value(families, 'conntrack_scrape_error', { netns: String(late.inode), code: 'ERR_CONNTRACK_NETNS' })).toBe(1);
    await sleep(1100);
    families = await scrape(collector);
    expect(families.get('conntrack_up')?.samples.some((s) => s.labels.netns === String(late.inode))).toBe(false);
    expect(value(families, 'conntrack_up', { netns: String(a.inode) })).toBe(1);
  });

  /** The breakdown series of `ns` in one scrape equal what conntrack -L shows there (top 2 + other by dst/24). */
  async function expectBreakdownsEqualOracle(collector: MetricsCollector, ns: Netns): Promise<void> {
    const families = await scrape(collector);
    const entries = await oracleEntries(ns);
    const count = (key: (e: (typeof entries)[number]) => string | undefined) => {
      const counts = new Map<string, number>();
      for (const e of entries) {
        const k = key(e);
        if (k !== undefined) counts.set(k, (counts.get(k) ?? 0) + 1);
      }
      return counts;
    };
    const labels = { netns: ns.path };
    for (const [protocol, n] of count((e) => e.original.protocol)) expect(value(families, 'conntrack_entries_by_protocol', { ...labels, protocol }), protocol).toBe(n);
    for (const [state, n] of count((e) => e.tcp?.state)) expect(value(families, 'conntrack_entries_by_tcp_state', { ...labels, state }), state).toBe(n);
    expect(value(families, 'conntrack_entries_by_zone', { ...labels, zone: '0' })).toBe(entries.length);
    // /24 of IPv4 destinations, worked out here from the tool's text; the one IPv6 flow goes to ::1.
    const prefix = (dst: string) => (dst === '::1' ? '::/64' : `${dst.split('.').slice(0, 3).join('.')}.0/24`);
    // Ties in label order, as the collector breaks them (for these labels the same as numeric).
    const ranked = [...count((e) => prefix(e.original.dst))].sort((x, y) => y[1] - x[1] || (x[0] < y[0] ? -1 : x[0] > y[0] ? 1 : 0));
    const top = families.get('conntrack_top_entries')?.samples ?? [];
    expect(top).toHaveLength(3);
    expect(top.map((s) => [s.labels.group, s.value])).toEqual([...ranked.slice(0, 2), ['other', ranked.slice(2).reduce((sum, [, n]) => sum + n, 0)]]);
    expect(top.every((s) => s.labels.key === 'dst/24')).toBe(true);
    expect(value(families, 'conntrack_breakdown_age_seconds', labels)).toBeLessThan(60);
  }

  it('breakdowns by protocol, TCP state and destination /24 equal conntrack -L, top N + other', async () => {
    const collector = await createMetricsCollector({ netns: [a.path], breakdownBy: 'dst/24', breakdownTop: 2, breakdownIntervalSeconds: 3600 });
    closeLater.push(collector);
    await collector.refreshBreakdowns();
    await expectBreakdownsEqualOracle(collector, a);
  });

  it('breakdowns from a live mirror (breakdownSource mirror) equal conntrack -L, and follow the table as it changes', async () => {
    const c = await createNetns('all-ns mirror');
    await enableTracking(c);
    const cFlows = await openFlows(c, [{ kind: 'tcp-established', family: 4 }, { kind: 'udp-reply', family: 6 }]);
    try {
      await fillUdp(c, 40, { port: 5000 });
      const collector = await createMetricsCollector({ netns: [c.path], breakdownBy: 'dst/24', breakdownTop: 2, breakdownIntervalSeconds: 3600, breakdownSource: 'mirror' });
      closeLater.push(collector);
      await collector.collect(); // opens the handle the mirror is made on
      await collector.refreshBreakdowns();
      await expectBreakdownsEqualOracle(collector, c);
      // More entries, to other /24s (fillUdp walks 127.1.x.y upward): a new top group. Events
      // reach the mirror a moment after the kernel made the entries.
      await fillUdp(c, 600, { port: 5001 });
      const total = await oracleCount(c);
      for (let i = 0; i < 50; i++) {
        await collector.refreshBreakdowns();
        const families = await scrape(collector);
        if (value(families, 'conntrack_entries_by_zone', { netns: c.path, zone: '0' }) === total) break;
        await sleep(100);
      }
      await expectBreakdownsEqualOracle(collector, c);
      await collector.close();
    } finally {
      await cFlows.close();
    }
  });

  it('time to full: finite while the table grows, +Inf while it does not', async () => {
    const grow = await createNetns('all-ns grow');
    await enableTracking(grow);
    const collector = await createMetricsCollector({ netns: [grow.path], breakdownBy: false });
    closeLater.push(collector);
    const ttf = async () => value(await scrape(collector), 'conntrack_time_to_full_seconds', { netns: grow.path });
    for (let step = 0; step < 3; step++) {
      await fillUdp(grow, 200, { port: 6000 + step });
      await sleep(2600);
      await collector.collect();
    }
    const growing = await ttf();
    expect(growing).toBeGreaterThan(0);
    expect(growing).toBeLessThan(Infinity);
    const still = await createMetricsCollector({ netns: [b.path], breakdownBy: false });
    closeLater.push(still);
    await sleep(5200);
    expect(value(await scrape(still), 'conntrack_time_to_full_seconds', { netns: b.path })).toBe(Infinity);
  });

  it('prom-client: the families appear in register.metrics() with the numbers conntrack -C gives; close() removes them', async () => {
    const registry = new Registry();
    const collector = await registerConntrackMetrics(registry, { netns: [a.path, b.path], nodeExporterNames: true, breakdownBy: false });
    try {
      const text = await registry.metrics();
      await expectPromtoolAccepts(text);
      const families = parseExposition(text);
      for (const ns of [a, b]) {
        expect(value(families, 'conntrack_entries', { netns: ns.path })).toBe(await oracleCount(ns));
        expect(value(families, 'node_nf_conntrack_entries', { netns: ns.path })).toBe(await oracleCount(ns));
      }
      expect(families.get('conntrack_stat_drop_total')?.type).toBe('counter');
      const json = await registry.getMetricsAsJSON();
      expect(json.find((m) => m.name === 'conntrack_up')?.values).toHaveLength(2);
      await expect(registerConntrackMetrics(registry, { netns: [a.path] })).rejects.toMatchObject({ code: 'ERR_CONNTRACK_INVALID_ARGUMENT', message: /already has a metric named conntrack_up/ });
    } finally {
      await collector.close();
    }
    expect(registry.getSingleMetric('conntrack_up')).toBeUndefined();
    expect(await registry.metrics()).toBe('\n');
  });
}, { tools: ['promtool'] });
