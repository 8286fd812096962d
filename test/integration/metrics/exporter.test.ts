/**
 * `conntrack exporter` run as users run it, inside a test namespace, and scraped over that
 * namespace's loopback (nothing leaves it); its numbers against conntrack-tools; a second namespace
 * deleted while it runs; shutdown on signals. Then the collector in this process: one scrape in
 * flight at a time, one socket per namespace reused, a replaced namespace reopened.
 */
import { mkdtemp, readdir, readlink, rm, writeFile } from 'node:fs/promises';
import { readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { DEFAULT_EXPORTER_PORT, createMetricsCollector } from '../../../lib/metrics/exporter.js';
import { startCli, runCli, type CliProcess } from '../../helpers/cli.js';
import { parseExposition, type ExpositionFamily } from '../../helpers/exposition.js';
import { describeIntegration } from '../../helpers/gate.js';
import { holdGlobalLimits, type GlobalLimitsLock } from '../../helpers/global-lock.js';
import { createNetns, destroyAllNetns, enableTracking, run, type Netns } from '../../helpers/netns.js';
import { oracleCount, oracleStats } from '../../helpers/oracle.js';
import { expectPromtoolAccepts } from '../../helpers/promtool.js';
import { sendRaw } from '../../helpers/rawnet.js';
import { fillUdp, openFlows, type OpenFlows } from '../../helpers/traffic.js';

const PORT = 9701;
const FILL = 40;
/**
 * A TCP ACK of no connection (4444 -> 5555, seq 1, ack 1, window 1000): INVALID once mid-stream
 * pickup is off, so the `invalid` counter compared below is not zero.
 */
const STRAY_ACK = '115c15b30000000100000001501003e800000000';

/** Scrapes from inside the namespace: prints [{ status, contentType, body }] for `times` parallel requests. */
const FETCH = `
const [url, method, times] = process.argv.slice(1);
Promise.all(Array.from({ length: Number(times) }, async () => {
  const response = await fetch(url, { method });
  return { status: response.status, contentType: response.headers.get('content-type'), body: await response.text() };
})).then((all) => process.stdout.write(JSON.stringify(all)), (err) => { console.error(err); process.exit(1); });
`;

interface Scrape {
  status: number;
  contentType: string | null;
  body: string;
}

async function scrape(ns: Netns, url: string, options: { method?: string; times?: number } = {}): Promise<Scrape[]> {
  const { stdout } = await ns.exec(process.execPath, ['-e', FETCH, url, options.method ?? 'GET', String(options.times ?? 1)]);
  return JSON.parse(stdout) as Scrape[];
}

async function scrapeOne(ns: Netns, url: string): Promise<Map<string, ExpositionFamily>> {
  const [response] = await scrape(ns, url);
  expect(response?.status, response?.body).toBe(200);
  await expectPromtoolAccepts(response?.body ?? '');
  return parseExposition(response?.body ?? '');
}

/** The value of `name` for namespace `netns` (and `extra` labels); undefined when there is no such sample. */
function sampleValue(families: Map<string, ExpositionFamily>, name: string, netns: string, extra: Record<string, string> = {}): number | undefined {
  const wanted = JSON.stringify({ netns, ...extra });
  return families.get(name)?.samples.find((s) => JSON.stringify(s.labels) === wanted)?.value;
}

function procNumber(name: string): number {
  return Number(readFileSync(`/proc/sys/net/netfilter/${name}`, 'utf8'));
}

/**
 * The scrapes themselves are loopback TCP in a tracked namespace: exempt them from tracking so they
 * neither add entries nor move counters between the exporter's reading and the oracle's.
 */
function untrackedPorts(ports: readonly number[]): string {
  const set = `{ ${ports.join(', ')} }`;
  return 'table inet exporter_scrapes {\n  chain output {\n    type filter hook output priority raw; policy accept;\n' +
    `    tcp dport ${set} notrack\n    tcp sport ${set} notrack\n  }\n}\n`;
}

/** Socket inodes this process holds that are NETLINK_NETFILTER sockets in `ns`. */
async function netfilterSocketsIn(ns: Netns): Promise<string[]> {
  const mine = new Set<string>();
  for (const fd of await readdir('/proc/self/fd')) {
    const target = await readlink(`/proc/self/fd/${fd}`).catch(() => '');
    const inode = /^socket:\[(\d+)\]$/.exec(target)?.[1];
    if (inode !== undefined) mine.add(inode);
  }
  // /proc/net/netlink lists the sockets of the reader's namespace: sk Eth Pid Groups ... Inode.
  const { stdout } = await ns.exec('cat', ['/proc/net/netlink']);
  return stdout.split('\n').slice(1).map((line) => line.trim().split(/\s+/))
    .filter((fields) => fields[1] === '12' && mine.has(fields.at(-1) ?? ''))
    .map((fields) => fields.at(-1) as string).sort();
}

describeIntegration('conntrack exporter', () => {
  let limits: GlobalLimitsLock | undefined;
  let main: Netns;
  let second: Netns;
  let flows: OpenFlows;
  let secondFlows: OpenFlows;
  let exporter: CliProcess;
  const url = `http://127.0.0.1:${PORT}/metrics`;

  beforeAll(async () => {
    // Compared with nf_conntrack_max below: nobody may change it meanwhile.
    limits = await holdGlobalLimits('shared');
    main = await createNetns('exporter');
    second = await createNetns('exporter second');
    for (const ns of [main, second]) await enableTracking(ns);
    await main.nft(untrackedPorts([PORT, DEFAULT_EXPORTER_PORT]));
    flows = await openFlows(main, [
      { kind: 'tcp-established', family: 4 },
      { kind: 'tcp-established', family: 6 },
      { kind: 'udp-reply', family: 4 },
      { kind: 'udp-oneway', family: 6 },
      { kind: 'icmp-echo', family: 4 },
    ]);
    await fillUdp(main, FILL);
    await main.sysctl('net.netfilter.nf_conntrack_tcp_loose', 0);
    await sendRaw(main, [{ family: 4, src: '127.0.0.1', dst: '127.0.0.1', proto: 6, payload: STRAY_ACK }]);
    secondFlows = await openFlows(second, [{ kind: 'udp-oneway', family: 4 }]);
    exporter = startCli(['exporter', '--listen', `127.0.0.1:${PORT}`, '--netns', main.path, '--netns', second.path, '--node-exporter-names'], main);
    await exporter.waitFor('stderr', /serving http:\/\/127\.0\.0\.1:\d+\/metrics/);
  }, 180_000);

  afterAll(async () => {
    exporter?.child.kill('SIGKILL');
    await flows?.close();
    await secondFlows?.close();
    await destroyAllNetns();
    limits?.release();
  });

  it('serves valid exposition text with the 0.0.4 content type, and 404/405 elsewhere', async () => {
    const [metrics] = await scrape(main, url);
    expect(metrics?.status).toBe(200);
    expect(metrics?.contentType).toBe('text/plain; version=0.0.4; charset=utf-8');
    const families = parseExposition(metrics?.body ?? '');
    const statNames = Object.keys((await oracleStats(main)).total);
    for (const name of [
      'conntrack_up', 'conntrack_entries', 'conntrack_entries_limit', 'conntrack_usage_ratio', 'conntrack_buckets',
      'node_nf_conntrack_entries', 'node_nf_conntrack_entries_limit', ...statNames.map((stat) => `conntrack_stat_${stat}_total`),
    ]) {
      // Every family the exporter must serve, with a sample for each namespace it watches.
      const labels = families.get(name)?.samples.map((sample) => sample.labels.netns);
      expect(labels, name).toEqual(expect.arrayContaining([main.path, second.path]));
    }
    const [other] = await scrape(main, `http://127.0.0.1:${PORT}/other`);
    expect(other?.status).toBe(404);
    const [post] = await scrape(main, url, { method: 'POST' });
    expect(post?.status).toBe(405);
    const [head] = await scrape(main, url, { method: 'HEAD' });
    expect(head).toMatchObject({ status: 200, body: '' });
  });

  it('conntrack_entries equals conntrack -C of each namespace, the limit nf_conntrack_max', async () => {
    const before = await oracleCount(main);
    const families = await scrapeOne(main, url);
    const after = await oracleCount(main);
    expect(after).toBe(before); // scraping left the table alone: the comparison is exact
    expect(after).toBe(flows.info.length + FILL);
    expect(sampleValue(families, 'conntrack_entries', main.path)).toBe(after);
    expect(sampleValue(families, 'conntrack_entries', second.path)).toBe(await oracleCount(second));
    expect(sampleValue(families, 'conntrack_entries', second.path)).toBe(1);

    const max = procNumber('nf_conntrack_max');
    for (const ns of [main, second]) {
      expect(sampleValue(families, 'conntrack_up', ns.path)).toBe(1);
      expect(sampleValue(families, 'conntrack_entries_limit', ns.path)).toBe(max);
      expect(sampleValue(families, 'conntrack_buckets', ns.path)).toBe(procNumber('nf_conntrack_buckets'));
      expect(sampleValue(families, 'conntrack_usage_ratio', ns.path)).toBeCloseTo((sampleValue(families, 'conntrack_entries', ns.path) ?? -1) / max, 12);
      // The node_exporter names carry the same numbers.
      expect(sampleValue(families, 'node_nf_conntrack_entries', ns.path)).toBe(sampleValue(families, 'conntrack_entries', ns.path));
      expect(sampleValue(families, 'node_nf_conntrack_entries_limit', ns.path)).toBe(max);
    }
    expect(families.has('conntrack_scrape_error')).toBe(false);
  });

  it('conntrack_stat_*_total equal the sums of conntrack -S, name for name', async () => {
    const families = await scrapeOne(main, url);
    for (const ns of [main, second]) {
      const oracle = await oracleStats(ns);
      const names = Object.keys(oracle.total);
      expect(names).toEqual(expect.arrayContaining(['drop', 'early_drop', 'insert_failed', 'invalid']));
      // The stray ACK, and the RST the kernel answers it with.
      if (ns === main) expect(oracle.total.invalid).toBeGreaterThan(0);
      else expect(oracle.total.invalid).toBe(0);
      const exported = [...families.keys()]
        .filter((name) => /^conntrack_stat_.+_total$/.test(name) && name !== 'conntrack_stat_unknown_total')
        .filter((name) => sampleValue(families, name, ns.path) !== undefined)
        .map((name) => name.slice('conntrack_stat_'.length, -'_total'.length));
      expect(exported.sort()).toEqual([...names].sort());
      for (const name of names) {
        expect(sampleValue(families, `conntrack_stat_${name}_total`, ns.path), `${ns.name} ${name}`).toBe(oracle.total[name]);
      }
      for (const name of ['drop', 'early_drop', 'insert_failed', 'invalid', 'found', 'insert', 'search_restart']) {
        if (oracle.total[name] !== undefined) expect(sampleValue(families, `node_nf_conntrack_stat_${name}`, ns.path)).toBe(oracle.total[name]);
      }
    }
  });

  it('answers parallel scrapes alike', async () => {
    const responses = await scrape(main, url, { times: 8 });
    expect(responses.map((r) => r.status)).toEqual(Array(8).fill(200));
    expect(new Set(responses.map((r) => r.body)).size).toBe(1);
  });

  it('a second port in use: exit 1 and the reason, while the first keeps serving', async () => {
    const result = await runCli(['exporter', '--listen', `127.0.0.1:${PORT}`], main);
    expect(result.status).toBe(1);
    expect(result.stderr).toContain(`cannot listen on 127.0.0.1:${PORT}: the address is in use`);
    expect(result.stdout).toBe('');
    expect((await scrape(main, url))[0]?.status).toBe(200);
  });

  it('a namespace deleted while it runs is up 0 with ERR_CONNTRACK_NETNS; the scrape still answers 200', async () => {
    await secondFlows.close();
    await second.destroy();
    const families = await scrapeOne(main, url);
    expect(sampleValue(families, 'conntrack_up', second.path)).toBe(0);
    expect(sampleValue(families, 'conntrack_scrape_error', second.path, { code: 'ERR_CONNTRACK_NETNS' })).toBe(1);
    expect(sampleValue(families, 'conntrack_entries', second.path)).toBeUndefined();
    expect(sampleValue(families, 'conntrack_up', main.path)).toBe(1);
    expect(sampleValue(families, 'conntrack_entries', main.path)).toBe(await oracleCount(main));
  });

  it('SIGTERM: the exporter closes and exits 0', async () => {
    exporter.child.kill('SIGTERM');
    expect(await exporter.exited).toEqual({ status: 0, signal: null });
  });

  it('with no options: this namespace (netns="") on 127.0.0.1:9659; SIGINT exits 0', async () => {
    const plain = startCli(['exporter'], main);
    try {
      await plain.waitFor('stderr', new RegExp(`serving http://127\\.0\\.0\\.1:${DEFAULT_EXPORTER_PORT}/metrics for this network namespace`));
      const families = await scrapeOne(main, `http://127.0.0.1:${DEFAULT_EXPORTER_PORT}/metrics`);
      expect(sampleValue(families, 'conntrack_up', '')).toBe(1);
      expect(sampleValue(families, 'conntrack_entries', '')).toBe(await oracleCount(main));
      expect([...families.keys()].some((name) => name.startsWith('node_'))).toBe(false);
      plain.child.kill('SIGINT');
      expect(await plain.exited).toEqual({ status: 0, signal: null });
    } finally {
      plain.child.kill('SIGKILL');
    }
  });

  it('the collector shares a running collection and reuses one socket per namespace', async () => {
    // No breakdowns: their dumps open sockets of their own, and this counts the scrape's.
    const collector = await createMetricsCollector({ netns: [main.path], breakdownBy: false });
    try {
      const sockets = await netfilterSocketsIn(main);
      expect(sockets).toHaveLength(1);
      const first = collector.collect();
      expect(collector.collect()).toBe(first);
      const text = await first;
      expect(sampleValue(parseExposition(text), 'conntrack_entries', main.path)).toBe(await oracleCount(main));
      const next = collector.collect();
      expect(next).not.toBe(first);
      await next;
      for (let i = 0; i < 10; i++) await collector.collect();
      expect(await netfilterSocketsIn(main)).toEqual(sockets);
    } finally {
      await collector.close();
    }
    expect(await netfilterSocketsIn(main)).toEqual([]);
    await expect(collector.collect()).rejects.toMatchObject({ code: 'ERR_CONNTRACK_CLOSED' });
  });

  it('a path that comes to name another namespace is reopened there; a file that is none is up 0', async () => {
    const other = await createNetns('exporter other');
    const dir = await mkdtemp(join(tmpdir(), 'ctt-exporter-'));
    const file = join(dir, 'ns');
    await writeFile(file, '');
    let mounted = false;
    const collector = await createMetricsCollector({ netns: [file], breakdownBy: false });
    try {
      // A plain file is no namespace.
      let families = parseExposition(await collector.collect());
      expect(sampleValue(families, 'conntrack_scrape_error', file, { code: 'ERR_CONNTRACK_NETNS' })).toBe(1);

      await run('mount', ['--bind', main.path, file]);
      mounted = true;
      families = parseExposition(await collector.collect());
      expect(sampleValue(families, 'conntrack_up', file)).toBe(1);
      expect(sampleValue(families, 'conntrack_entries', file)).toBe(await oracleCount(main));

      // Detached lazily, as `ip netns del` does: the open handle holds the old mount.
      await run('umount', ['-l', file]);
      await run('mount', ['--bind', other.path, file]);
      families = parseExposition(await collector.collect());
      expect(sampleValue(families, 'conntrack_entries', file)).toBe(0);
      expect(await oracleCount(other)).toBe(0);
      expect(await netfilterSocketsIn(main)).toEqual([]); // the handle in the first one was closed
      expect(await netfilterSocketsIn(other)).toHaveLength(1);
    } finally {
      await collector.close();
      if (mounted) await run('umount', ['-l', file]).catch(() => undefined);
      await rm(dir, { recursive: true, force: true });
    }
  });
}, { tools: ['python3', 'promtool'] });
