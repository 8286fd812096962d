/**
 * From one host to a fleet, end to end: `conntrack exporter --all-namespaces` over TLS with basic
 * authentication, scraped by a real Prometheus server (Debian's `prometheus`), while this test
 * makes three sandbox namespaces with tables of different sizes. Prometheus's HTTP API must answer
 * what conntrack-tools says inside each namespace; a deleted namespace must go to conntrack_up 0
 * and then away; the top-N breakdown must never have more than N + 1 series. Both servers run in a
 * namespace of their own (its loopback only), with their own configuration and data directory.
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { ChildProcess } from 'node:child_process';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { startCli, type CliProcess } from '../../helpers/cli.js';
import { parseExposition } from '../../helpers/exposition.js';
import { describeIntegration } from '../../helpers/gate.js';
import { createNetns, destroyAllNetns, enableTracking, run, type Netns } from '../../helpers/netns.js';
import { oracleCount, oracleEntries } from '../../helpers/oracle.js';
import { expectPromtoolAccepts } from '../../helpers/promtool.js';
import { requireTool } from '../../helpers/tools.js';
import { fillUdp } from '../../helpers/traffic.js';

const EXPORTER_PORT = 9659;
const PROMETHEUS_PORT = 9090;
const TOP = 3;
const FORGET_AFTER_SECONDS = 4;
/** Per sandbox: UDP entries by destination port. Sizes 7, 40 and 120; the last has six ports. */
const TABLES: ReadonlyArray<Record<number, number>> = [
  { 9: 7 },
  { 7000: 25, 7001: 15 },
  { 5001: 50, 5002: 30, 5003: 20, 5004: 10, 5005: 5, 5006: 5 },
];

/** Fetches inside a namespace: prints {status, body} or {error}. https with the CA file, basic auth when given. */
const FETCH = `
const [url, caFile, auth] = process.argv.slice(1);
const lib = url.startsWith('https:') ? require('node:https') : require('node:http');
const headers = auth ? { authorization: 'Basic ' + Buffer.from(auth).toString('base64') } : {};
const options = caFile ? { ca: require('node:fs').readFileSync(caFile), headers } : { headers };
const req = lib.get(url, options, (res) => {
  let body = '';
  res.setEncoding('utf8').on('data', (d) => (body += d)).on('end', () => process.stdout.write(JSON.stringify({ status: res.statusCode, headers: res.headers, body })));
});
req.setTimeout(10000, () => req.destroy(new Error('timeout')));
req.on('error', (err) => process.stdout.write(JSON.stringify({ error: err.code ?? err.message })));
`;

interface Fetched {
  status?: number;
  headers?: Record<string, string>;
  body?: string;
  error?: string;
}

interface PromSample {
  metric: Record<string, string>;
  value?: [number, string];
  values?: Array<[number, string]>;
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

describeIntegration('fleet: conntrack exporter --all-namespaces scraped by Prometheus over TLS with basic auth', () => {
  let dir: string;
  let scraper: Netns;
  const sandboxes: Netns[] = [];
  let exporter: CliProcess | undefined;
  let prometheus: ChildProcess | undefined;
  let prometheusLog = '';
  const password = randomBytes(12).toString('hex');

  async function fetchIn(url: string, options: { ca?: boolean; auth?: string } = {}): Promise<Fetched> {
    const { stdout } = await scraper.exec(process.execPath, ['-e', FETCH, url, options.ca === false ? '' : join(dir, 'ca.crt'), options.auth ?? '']);
    return JSON.parse(stdout) as Fetched;
  }

  /** A PromQL instant query (or range query with `range`), through Prometheus's HTTP API. */
  async function query(promql: string, range?: { seconds: number; step: number }): Promise<PromSample[]> {
    const params = new URLSearchParams({ query: promql });
    let path = 'query';
    if (range !== undefined) {
      const end = Date.now() / 1000;
      path = 'query_range';
      params.set('start', String(end - range.seconds));
      params.set('end', String(end));
      params.set('step', String(range.step));
    }
    const response = await fetchIn(`http://127.0.0.1:${PROMETHEUS_PORT}/api/v1/${path}?${params}`, { ca: false });
    const parsed = JSON.parse(response.body ?? '{}') as { status: string; data?: { result: PromSample[] }; error?: string };
    if (parsed.status !== 'success') throw new Error(`query ${promql}: ${parsed.error ?? response.error ?? response.body}`);
    return parsed.data?.result ?? [];
  }

  /** Polls `check` until it returns a value other than undefined, for up to `seconds`. */
  async function eventually<T>(what: string, seconds: number, check: () => Promise<T | undefined>): Promise<T> {
    const deadline = Date.now() + seconds * 1000;
    let last: unknown;
    for (;;) {
      try {
        const value = await check();
        if (value !== undefined) return value;
      } catch (err) {
        last = err;
      }
      if (Date.now() > deadline) {
        throw new Error(`${what}: not within ${seconds} s (${String(last ?? 'no answer')}); exporter: ${exporter?.stderr().trim()}; prometheus: ${prometheusLog.slice(-2000)}`);
      }
      await sleep(500);
    }
  }

  const entriesOf = async (ns: Netns): Promise<number | undefined> => {
    const [sample] = await query(`conntrack_entries{netns="${ns.inode}"}`);
    return sample?.value === undefined ? undefined : Number(sample.value[1]);
  };

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'ctt-fleet-'));
    // A CA and a server certificate for 127.0.0.1, valid for a day.
    const openssl = requireTool('openssl');
    const key = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes'];
    await run(openssl, ['req', '-x509', ...key, '-keyout', join(dir, 'ca.key'), '-out', join(dir, 'ca.crt'), '-subj', '/CN=ctt fleet test CA', '-days', '1']);
    await run(openssl, ['req', ...key, '-keyout', join(dir, 'server.key'), '-out', join(dir, 'server.csr'), '-subj', '/CN=127.0.0.1']);
    await writeFile(join(dir, 'san.ext'), 'subjectAltName=IP:127.0.0.1,DNS:localhost\n');
    await run(openssl, ['x509', '-req', '-in', join(dir, 'server.csr'), '-CA', join(dir, 'ca.crt'), '-CAkey', join(dir, 'ca.key'),
      '-CAcreateserial', '-out', join(dir, 'server.crt'), '-days', '1', '-extfile', join(dir, 'san.ext')]);
    const { stdout: htpasswd } = await run(requireTool('htpasswd'), ['-nbB', '-C', '6', 'prometheus', password]);
    await writeFile(join(dir, 'web.yml'), `tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n` +
      `basic_auth_users:\n  prometheus: ${htpasswd.trim().split(':')[1]}\n`);
    await writeFile(join(dir, 'password'), password);
    await writeFile(join(dir, 'prometheus.yml'), [
      'global:',
      '  scrape_interval: 1s',
      '  scrape_timeout: 1s',
      'scrape_configs:',
      '  - job_name: conntrack',
      '    scheme: https',
      '    tls_config:',
      `      ca_file: ${join(dir, 'ca.crt')}`,
      '    basic_auth:',
      '      username: prometheus',
      `      password_file: ${join(dir, 'password')}`,
      '    static_configs:',
      `      - targets: ['127.0.0.1:${EXPORTER_PORT}']`,
      '',
    ].join('\n'));

    // The scraper's namespace tracks nothing: its table stays empty.
    scraper = await createNetns('fleet scraper');
    for (const [i, table] of TABLES.entries()) {
      const ns = await createNetns(`fleet ${'abc'[i]}`);
      sandboxes.push(ns);
      await enableTracking(ns);
      for (const [port, count] of Object.entries(table)) await fillUdp(ns, count, { port: Number(port) });
    }

    exporter = startCli(['exporter', '--all-namespaces', '--listen', `127.0.0.1:${EXPORTER_PORT}`, '--web.config.file', join(dir, 'web.yml'),
      '--breakdown-by', 'dport', '--breakdown-top', String(TOP), '--breakdown-interval', '1', '--forget-after', String(FORGET_AFTER_SECONDS)], scraper);
    await exporter.waitFor('stderr', /serving https:\/\/127\.0\.0\.1:\d+\/metrics for every network namespace/);
    prometheus = scraper.spawn(requireTool('prometheus'), [
      `--config.file=${join(dir, 'prometheus.yml')}`, `--storage.tsdb.path=${join(dir, 'data')}`,
      `--web.listen-address=127.0.0.1:${PROMETHEUS_PORT}`, '--log.level=warn',
    ], { stdio: ['ignore', 'ignore', 'pipe'] });
    prometheus.stderr?.on('data', (chunk: Buffer) => (prometheusLog += chunk.toString()));
    await eventually('Prometheus ready', 30, async () => ((await fetchIn(`http://127.0.0.1:${PROMETHEUS_PORT}/-/ready`, { ca: false })).status === 200 ? true : undefined));
  }, 180_000);

  afterAll(async () => {
    for (const child of [prometheus, exporter?.child]) {
      if (child === undefined || child.exitCode !== null) continue;
      child.kill('SIGTERM');
      const exited = new Promise((resolve) => child.once('exit', resolve));
      if (await Promise.race([exited.then(() => true), sleep(5000).then(() => false)]) === false) child.kill('SIGKILL');
    }
    await destroyAllNetns();
    if (dir !== undefined) await rm(dir, { recursive: true, force: true });
  }, 60_000);

  it('Prometheus scrapes the exporter over TLS with basic authentication', async () => {
    await eventually('up{job="conntrack"} == 1', 30, async () => {
      const [up] = await query('up{job="conntrack"}');
      return up?.value?.[1] === '1' ? true : undefined;
    });
    const [samples] = await query('scrape_samples_scraped{job="conntrack"}');
    expect(Number(samples?.value?.[1])).toBeGreaterThan(20);
  });

  it('every namespace the test made is there, named, with the entries conntrack -C counts inside it', async () => {
    for (const ns of [scraper, ...sandboxes]) {
      const expected = await oracleCount(ns);
      const got = await eventually(`conntrack_entries of ${ns.name}`, 20, () => entriesOf(ns));
      expect(got, ns.name).toBe(expected);
      const [up] = await query(`conntrack_up{netns="${ns.inode}"}`);
      expect(up?.metric).toMatchObject({ netns: String(ns.inode), netns_name: ns.name, job: 'conntrack' });
      expect(up?.metric.container_id).toBeUndefined(); // empty: Prometheus stores no label
      expect(up?.value?.[1]).toBe('1');
    }
    expect(await oracleCount(scraper)).toBe(0);
    expect(sandboxes.map((ns, i) => Object.values(TABLES[i] ?? {}).reduce((a, b) => a + b, 0))).toEqual([7, 40, 120]);
    for (const [i, ns] of sandboxes.entries()) expect(await entriesOf(ns)).toBe(Object.values(TABLES[i] ?? {}).reduce((a, b) => a + b, 0));
  });

  it('breakdowns match conntrack -L; the top-N series never exceed N + 1', async () => {
    const largest = sandboxes[2] as Netns;
    const entries = await oracleEntries(largest);
    const byPort = new Map<number, number>();
    for (const e of entries) byPort.set(e.original.dport ?? -1, (byPort.get(e.original.dport ?? -1) ?? 0) + 1);
    const ranked = [...byPort].sort((a, b) => b[1] - a[1] || a[0] - b[0]);
    const expected = Object.fromEntries([...ranked.slice(0, TOP).map(([port, n]) => [String(port), n]),
      ['other', ranked.slice(TOP).reduce((sum, [, n]) => sum + n, 0)]]);
    const top = await eventually('conntrack_top_entries of the largest sandbox', 20, async () => {
      const result = await query(`conntrack_top_entries{netns="${largest.inode}"}`);
      return result.length > 0 ? result : undefined;
    });
    expect(Object.fromEntries(top.map((s) => [s.metric.group, Number(s.value?.[1])]))).toEqual(expected);
    expect(top.every((s) => s.metric.key === 'dport')).toBe(true);
    const [udp] = await query(`conntrack_entries_by_protocol{netns="${largest.inode}",protocol="udp"}`);
    expect(Number(udp?.value?.[1])).toBe(entries.filter((e) => e.original.protocol === 'udp').length);
    const [age] = await query(`conntrack_breakdown_age_seconds{netns="${largest.inode}"}`);
    expect(Number(age?.value?.[1])).toBeLessThan(10);

    // At every step of the last half minute, in every namespace of the host.
    const counts = await query('max_over_time((count by (netns) (conntrack_top_entries))[30s:1s])');
    expect(counts.length).toBeGreaterThanOrEqual(sandboxes.length + 1);
    for (const series of counts) expect(Number(series.value?.[1]), series.metric.netns).toBeLessThanOrEqual(TOP + 1);
  });

  it('the exporter refuses a wrong password (401) and plain HTTP; what it serves passes promtool check metrics', async () => {
    const url = `https://127.0.0.1:${EXPORTER_PORT}/metrics`;
    const wrong = await fetchIn(url, { auth: `prometheus:${password}x` });
    expect(wrong.status).toBe(401);
    expect(wrong.headers?.['www-authenticate']).toMatch(/^Basic /);
    expect((await fetchIn(url)).status).toBe(401);
    expect((await fetchIn(url, { auth: `nobody:${password}` })).status).toBe(401);
    const plain = await fetchIn(`http://127.0.0.1:${EXPORTER_PORT}/metrics`, { ca: false, auth: `prometheus:${password}` });
    expect(plain.status).toBeUndefined();
    expect(plain.error).toBeDefined();
    const right = await fetchIn(url, { auth: `prometheus:${password}` });
    expect(right.status).toBe(200);
    const families = parseExposition(right.body ?? '');
    expect(families.get('conntrack_namespaces_found')?.samples[0]?.value).toBeGreaterThanOrEqual(sandboxes.length + 1);
    expect(families.get('conntrack_scrape_duration_seconds')?.samples[0]?.value).toBeGreaterThan(0);
    await expectPromtoolAccepts(right.body ?? '');
  });

  it('a deleted namespace goes to conntrack_up 0, then away', async () => {
    const gone = sandboxes[0] as Netns;
    await gone.destroy();
    await eventually('conntrack_up 0 for the deleted namespace', 20, async () => {
      const [up] = await query(`conntrack_up{netns="${gone.inode}"}`);
      return up?.value?.[1] === '0' ? true : undefined;
    });
    const [error] = await query(`conntrack_scrape_error{netns="${gone.inode}"}`);
    expect(error?.metric.code).toBe('ERR_CONNTRACK_NETNS');
    expect(await entriesOf(gone)).toBeUndefined(); // no numbers while it is down
    await eventually('the deleted namespace\'s series gone', 30, async () => ((await query(`{netns="${gone.inode}"}`)).length === 0 ? true : undefined));
    // The others are unaffected.
    for (const ns of sandboxes.slice(1)) expect(await entriesOf(ns)).toBe(await oracleCount(ns));
  });
}, { tools: ['prometheus', 'promtool', 'htpasswd', 'openssl', 'python3'] });
