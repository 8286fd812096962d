/**
 * The parts of the fleet exporter that need no kernel: the YAML subset (read back against the
 * `yaml` package), the web configuration's checks and its request gate, breakdowns from summary
 * groups, the time-to-full estimate, discovery over a made-up /proc, and the new families.
 */
import { mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import type { IncomingMessage } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { parse as parseWithYamlPackage } from 'yaml';
import { breakdownOf, parseBreakdownKey, OTHER_GROUP } from '../../../lib/metrics/breakdown.js';
import { containerIdOf, discoverNamespaces } from '../../../lib/metrics/discovery.js';
import { GrowthTracker, timeToFull } from '../../../lib/metrics/growth.js';
import { metricFamilies, renderMetrics, type NamespaceReading } from '../../../lib/metrics/metrics.js';
import { checkWebConfig, createRequestGate, loadWebConfig } from '../../../lib/metrics/web-config.js';
import { parseYamlSubset, YamlSubsetError } from '../../../lib/metrics/yaml.js';
import type { Summary } from '../../../lib/table/summary.js';
import { parseExposition } from '../../helpers/exposition.js';

/** htpasswd -nbB -C 4 u a */
const HASH_A = '$2y$04$3M1E85Q8f/4mJ0HPaX3mD.xjbN.1X0uLGAV74aAH5rlkKzY8leXhq';

const scratch = mkdtempSync(join(tmpdir(), 'ctt-fleet-unit-'));
afterAll(() => rmSync(scratch, { recursive: true, force: true }));

describe('parseYamlSubset', () => {
  const documents = [
    `tls_server_config:\n  cert_file: server.crt\n  key_file: "server.key"   # a comment\n  min_version: TLS12\n` +
      `  curve_preferences: [X25519, 'CurveP256']\n  client_allowed_sans:\n  - scraper.example\n  - "10.0.0.1"\n` +
      `basic_auth_users:\n  prometheus: ${HASH_A}\n  'quoted user': '$2y$04$x''y'\nhttp_server_config:\n  http2: false\n  headers: {}\n`,
    `---\n# only comments here\nkey: value with # inside? no: "a # b"\nn: 42\nneg: -7\nt: true\nnothing: ~\nempty:\nlist:\n  - a\n  -   b\n`,
    `nested:\n  deeper:\n    deepest: "tab\\there \\u00e9"\n  sibling: 'it''s'\n`,
    `pem: |\n  -----BEGIN X-----\n  abc\n\n  def\n  -----END X-----\nnext: 1\nstripped: |-\n  one\n  two\n`,
    `seq_at_key_indent:\n- 1\n- two\n- "3"\nflow: []\n`,
  ];
  it('reads what the yaml package reads, for the constructs it supports', () => {
    for (const doc of documents) expect(parseYamlSubset(doc), doc).toEqual(parseWithYamlPackage(doc));
  });
  it('refuses what it does not support, naming the line', () => {
    const refused: Array<[string, RegExp]> = [
      ['a: &anchor 1\nb: *anchor\n', /line 1/],
      ['a: !!str 1\n', /line 1/],
      ['a: 1\n---\nb: 2\n', /one document/],
      ['a:\n\tb: 1\n', /tabs/],
      ['a: 1\na: 2\n', /line 2: key "a" is given twice/],
      ['a: "open\n', /unterminated/],
      ['a: {b: 1}\n', /flow mappings/],
      ['list:\n  - k: v\n', /mappings inside sequences/],
      ['a: 1\n  b: 2\n', /indentation/],
      ['a: >\n  folded\n', /not supported/],
    ];
    for (const [doc, message] of refused) {
      expect(() => parseYamlSubset(doc), doc).toThrow(YamlSubsetError);
      expect(() => parseYamlSubset(doc), doc).toThrow(message);
    }
  });
});

describe('web configuration', () => {
  const file = join(scratch, 'web.yml');
  it('reads TLS, headers and users; file names are relative to the file', () => {
    const config = checkWebConfig(file, parseYamlSubset(
      `tls_server_config:\n  cert_file: tls/server.crt\n  key_file: /abs/server.key\n  client_auth_type: RequireAndVerifyClientCert\n` +
      `  client_ca_file: ca.crt\n  min_version: TLS13\n  curve_preferences: [X25519, CurveP384]\n` +
      `http_server_config:\n  headers:\n    X-Frame-Options: deny\nbasic_auth_users:\n  prometheus: ${HASH_A}\n`));
    expect(config.tls).toMatchObject({
      certFile: join(scratch, 'tls/server.crt'), keyFile: '/abs/server.key', clientCaFile: join(scratch, 'ca.crt'),
      clientAuthType: 'RequireAndVerifyClientCert', minVersion: 'TLSv1.3', curves: ['X25519', 'P-384'],
    });
    expect(config.headers).toEqual({ 'X-Frame-Options': 'deny' });
    expect([...config.basicAuthUsers]).toEqual([['prometheus', HASH_A]]);
  });
  it('an empty file is plain HTTP without authentication', () => {
    expect(checkWebConfig(file, parseYamlSubset(''))).toEqual({ file, tls: undefined, headers: {}, basicAuthUsers: new Map() });
  });
  it('refuses typos, half a TLS setup and hashes that are not bcrypt, with ERR_CONNTRACK_INVALID_ARGUMENT', () => {
    const refused: Array<[string, RegExp]> = [
      ['tls_server_config:\n  cert_fle: a\n', /unknown key "cert_fle"/],
      ['basic_auth_user:\n  a: b\n', /unknown key "basic_auth_user"/],
      ['tls_server_config:\n  cert_file: a\n', /both cert_file and key_file/],
      ['basic_auth_users:\n  u: plaintext\n', /basic_auth_users.u must be a bcrypt hash/],
      ['tls_server_config:\n  cert_file: a\n  key_file: b\n  min_version: SSL3\n', /min_version/],
      ['tls_server_config:\n  cert_file: a\n  key_file: b\n  client_auth_type: Sometimes\n', /client_auth_type/],
      ['tls_server_config:\n  cert_file: a\n  key_file: b\n  client_auth_type: RequireAndVerifyClientCert\n', /needs client_ca_file/],
      ['tls_server_config:\n  cert_file: a\n  key_file: b\n  cipher_suites: [TLS_AES_128_GCM_SHA256]\n', /cipher_suites is not supported/],
      ['tls_server_config:\n  client_ca_file: ca\n', /need TLS/],
      ['http_server_config:\n  headers:\n    Set-Cookie: x\n', /unknown key "Set-Cookie"/],
      ['- a\n', /must be a mapping/],
    ];
    for (const [doc, message] of refused) {
      let error: unknown;
      try {
        checkWebConfig(file, parseYamlSubset(doc));
      } catch (err) {
        error = err;
      }
      expect(error, doc).toMatchObject({ code: 'ERR_CONNTRACK_INVALID_ARGUMENT' });
      expect((error as Error).message, doc).toMatch(message);
    }
  });
  it('loadWebConfig names the file when it cannot be read or parsed', async () => {
    await expect(loadWebConfig(join(scratch, 'missing.yml'))).rejects.toMatchObject({ code: 'ERR_CONNTRACK_INVALID_ARGUMENT', message: /missing\.yml: cannot read it/ });
    writeFileSync(file, 'a: &x 1\n');
    await expect(loadWebConfig(file)).rejects.toThrow(/web\.yml: line 1/);
  });

  const request = (authorization?: string) => ({ headers: authorization === undefined ? {} : { authorization }, socket: {} }) as unknown as IncomingMessage;
  const basic = (user: string, password: string) => `Basic ${Buffer.from(`${user}:${password}`).toString('base64')}`;
  it('the gate: 401 with WWW-Authenticate without, or with wrong, credentials; the right ones pass', async () => {
    const gate = createRequestGate(checkWebConfig(file, { basic_auth_users: { u: HASH_A } }));
    for (const auth of [undefined, 'Bearer x', basic('u', 'b'), basic('v', 'a'), 'Basic !!!', `Basic ${Buffer.from('no-colon').toString('base64')}`]) {
      expect(await gate(request(auth)), String(auth)).toMatchObject({ status: 401, headers: { 'WWW-Authenticate': expect.stringMatching(/^Basic /) } });
    }
    expect(await gate(request(basic('u', 'a')))).toBeUndefined();
    expect(await gate(request(basic('u', 'a')))).toBeUndefined(); // from the cache
    expect(await gate(request(basic('u', 'a ')))).toMatchObject({ status: 401 });
  });
  it('the gate lets everything through when there are no users', async () => {
    expect(await createRequestGate(checkWebConfig(file, {}))(request())).toBeUndefined();
  });
});

describe('breakdowns', () => {
  it('parseBreakdownKey: ports, addresses, prefixes; refuses the rest', () => {
    expect(parseBreakdownKey('dport')).toEqual({ text: 'dport', field: 'dport' });
    expect(parseBreakdownKey('src/24')).toEqual({ text: 'src/24', field: 'src', prefix4: 24, prefix6: 64 });
    expect(parseBreakdownKey('dst/16/48')).toEqual({ text: 'dst/16/48', field: 'dst', prefix4: 16, prefix6: 48 });
    for (const bad of ['', 'port', 'dport/24', 'src/33', 'src/24/129', 'src/', 'SRC']) {
      expect(() => parseBreakdownKey(bad), bad).toThrow(expect.objectContaining({ code: 'ERR_CONNTRACK_INVALID_ARGUMENT' }));
    }
  });

  const summary: Summary = {
    total: 100,
    groups: [
      { key: { protocol: 'tcp', tcpState: 'ESTABLISHED', zone: undefined, src: '10.1.2.3' }, count: 40 },
      { key: { protocol: 'tcp', tcpState: 'TIME_WAIT', zone: 7, src: '10.1.2.200' }, count: 20 },
      { key: { protocol: 'udp', tcpState: undefined, zone: undefined, src: '10.1.3.1' }, count: 15 },
      { key: { protocol: 'udp', tcpState: undefined, zone: 7, src: '2001:db8:1:2:3::1' }, count: 10 },
      { key: { protocol: 'icmpv6', tcpState: undefined, zone: 9, src: '2001:db8:1:2:ffff::9' }, count: 9 },
      { key: { protocol: 'udp', tcpState: undefined, zone: undefined, src: '::ffff:192.0.2.7' }, count: 6 },
    ],
  };
  it('counts by protocol, TCP state and zone, and the top N prefixes with the rest in other', () => {
    const b = breakdownOf(summary, parseBreakdownKey('src/24'), 2);
    expect(b.total).toBe(100);
    expect(b.protocols).toEqual([['tcp', 60], ['udp', 31], ['icmpv6', 9]]);
    expect(b.tcpStates).toEqual([['ESTABLISHED', 40], ['TIME_WAIT', 20]]);
    expect(b.zones).toEqual([['0', 61], ['7', 30], [OTHER_GROUP, 9]]);
    expect(b.key).toBe('src/24');
    // 10.1.2.0/24 holds 60, 2001:db8:1:2::/64 holds 19, 10.1.3.0/24 15, and the mapped address 6.
    expect(b.top).toEqual([['10.1.2.0/24', 60], ['2001:db8:1:2::/64', 19], [OTHER_GROUP, 21]]);
    expect(b.top.reduce((sum, [, n]) => sum + n, 0)).toBe(100);
  });
  it('whole addresses and ports; other is there even when nothing is left', () => {
    expect(breakdownOf(summary, parseBreakdownKey('src'), 10).top.at(-1)).toEqual([OTHER_GROUP, 0]);
    expect(breakdownOf(summary, parseBreakdownKey('src/16/32'), 10).top).toEqual([
      ['10.1.0.0/16', 75], ['2001:db8::/32', 19], ['::/32', 6], [OTHER_GROUP, 0],
    ]);
    const ports: Summary = { total: 5, groups: [3, 1, 1].map((count, i) => ({ key: { protocol: 'tcp', dport: [443, 80, 22][i] }, count })) };
    // Ties are ordered by value, numerically, so the same table gives the same top N.
    expect(breakdownOf(ports, parseBreakdownKey('dport'), 2).top).toEqual([['443', 3], ['22', 1], [OTHER_GROUP, 1]]);
    expect(breakdownOf(ports, undefined, 2).top).toEqual([]);
  });
});

describe('time to full', () => {
  const at = (points: Array<[number, number]>) => points.map(([t, entries]) => ({ at: t, entries }));
  it('extends the least-squares line to the limit', () => {
    expect(timeToFull(at([[0, 100], [10, 200], [20, 300]]), 1300)).toBeCloseTo(100, 9);
    expect(timeToFull(at([[0, 100], [10, 220], [20, 280]]), 1280)).toBeCloseTo(1000 / 9, 9);
  });
  it('+Inf when flat or shrinking, 0 when full, undefined with too little history or no limit', () => {
    expect(timeToFull(at([[0, 100], [10, 100]]), 1000)).toBe(Infinity);
    expect(timeToFull(at([[0, 200], [10, 100]]), 1000)).toBe(Infinity);
    expect(timeToFull(at([[0, 900], [10, 1000]]), 1000)).toBe(0);
    expect(timeToFull(at([[0, 100], [1, 200]]), 1000)).toBeUndefined();
    expect(timeToFull(at([[0, 100]]), 1000)).toBeUndefined();
    expect(timeToFull(at([[0, 100], [10, 200]]), 0)).toBeUndefined();
  });
  it('the tracker forgets what is older than its window', () => {
    const tracker = new GrowthTracker(60);
    tracker.add(0, 0);
    tracker.add(10, 1_000_000); // a burst long ago
    for (let t = 100; t <= 160; t += 10) tracker.add(t, 1_000_000 + (t - 100));
    expect(tracker.samples[0]?.at).toBe(100);
    expect(tracker.timeToFull(1_000_100)).toBeCloseTo(40, 6);
    tracker.add(150, 5); // not after the last one: ignored
    expect(tracker.samples.at(-1)?.at).toBe(160);
  });
});

describe('discoverNamespaces over a made-up /proc', () => {
  const proc = join(scratch, 'proc');
  const netns = join(scratch, 'netns');
  const docker = join(scratch, 'docker-netns');
  const id = 'ab'.repeat(32);
  for (const [pid, inode, cgroup] of [[1, 111, '0::/init.scope'], [20, 222, `0::/system.slice/docker-${id}.scope`], [21, 222, '0::/'], [30, 111, '0::/user']] as const) {
    mkdirSync(join(proc, String(pid), 'ns'), { recursive: true });
    symlinkSync(`net:[${inode}]`, join(proc, String(pid), 'ns', 'net'));
    writeFileSync(join(proc, String(pid), 'cgroup'), `${cgroup}\n`);
  }
  mkdirSync(join(proc, 'self'), { recursive: true }); // no ns/net: any file counts as a namespace file here
  mkdirSync(join(proc, 'not-a-pid'));
  mkdirSync(netns);
  mkdirSync(docker);
  writeFileSync(join(netns, 'blue'), '');
  writeFileSync(join(docker, 'f00d'), '');

  it('groups processes and files by inode, names them, and finds container ids', () => {
    const { namespaces, unreadable } = discoverNamespaces({ procRoot: proc, directories: [netns, docker] });
    expect(unreadable).toBe(0);
    const byInode = new Map(namespaces.map((ns) => [ns.inode, ns]));
    expect(byInode.get(111)).toMatchObject({ pids: [1, 30], path: join(proc, '1', 'ns', 'net'), name: undefined });
    expect(byInode.get(222)).toMatchObject({ pids: [20, 21], name: undefined });
    // The made-up files are plain files: each has its own inode, named after the file.
    const named = namespaces.filter((ns) => ns.name !== undefined).map((ns) => [ns.name, ns.path]);
    expect(named).toEqual(expect.arrayContaining([['blue', join(netns, 'blue')], ['f00d', join(docker, 'f00d')]]));
    expect(namespaces.map((ns) => ns.inode)).toEqual([...namespaces.map((ns) => ns.inode)].sort((a, b) => a - b));
    expect(containerIdOf(byInode.get(222)?.pids ?? [], proc)).toBe(id);
    expect(containerIdOf(byInode.get(111)?.pids ?? [], proc)).toBeUndefined();
  });
});

describe('fleet families', () => {
  const reading = (netns: string, extra: Partial<NamespaceReading> = {}): NamespaceReading => ({
    netns, labels: { netns_name: `name-${netns}`, container_id: '' }, up: true, entries: 10, max: 100,
    counters: { drop: 0 }, unknownCounters: {}, ...extra,
  });
  const breakdown = { ...breakdownOf({ total: 10, groups: [{ key: { protocol: 'tcp', tcpState: 'ESTABLISHED', dport: 443 }, count: 10 }] }, parseBreakdownKey('dport'), 3), at: 5, seconds: 0.25 };
  const text = renderMetrics({
    buckets: 64,
    namespaces: [
      reading('1', { timeToFullSeconds: 120, breakdown, now: 12 }),
      reading('2', { timeToFullSeconds: Infinity }),
      { netns: '3', labels: { netns_name: '', container_id: 'c' }, up: false, errorCode: 'ERR_CONNTRACK_NETNS', errorMessage: 'gone' },
    ],
    discovery: { found: 5, exported: 3, limit: 3, unreadable: 1 },
    scrapeSeconds: 0.002,
  });
  const families = parseExposition(text);
  const sample = (name: string, labels: Record<string, string>) =>
    families.get(name)?.samples.find((s) => Object.entries(labels).every(([k, v]) => s.labels[k] === v))?.value;

  it('every per-namespace series carries the identity labels', () => {
    for (const family of families.values()) {
      for (const s of family.samples) {
        if ('netns' in s.labels) expect(Object.keys(s.labels).slice(0, 3), family.name).toEqual(['netns', 'netns_name', 'container_id']);
      }
    }
    expect(sample('conntrack_up', { netns: '3', container_id: 'c' })).toBe(0);
  });
  it('time to full, breakdowns and their age, discovery counts and the scrape duration', () => {
    expect(sample('conntrack_time_to_full_seconds', { netns: '1' })).toBe(120);
    expect(sample('conntrack_time_to_full_seconds', { netns: '2' })).toBe(Infinity);
    expect(sample('conntrack_entries_by_protocol', { netns: '1', protocol: 'tcp' })).toBe(10);
    expect(sample('conntrack_entries_by_tcp_state', { netns: '1', state: 'ESTABLISHED' })).toBe(10);
    expect(sample('conntrack_entries_by_zone', { netns: '1', zone: '0' })).toBe(10);
    expect(sample('conntrack_top_entries', { netns: '1', key: 'dport', group: '443' })).toBe(10);
    expect(sample('conntrack_top_entries', { netns: '1', key: 'dport', group: 'other' })).toBe(0);
    expect(sample('conntrack_breakdown_age_seconds', { netns: '1' })).toBe(7);
    expect(sample('conntrack_breakdown_duration_seconds', { netns: '1' })).toBe(0.25);
    expect(families.get('conntrack_breakdown_age_seconds')?.samples).toHaveLength(1); // namespace 2 has none yet
    expect(sample('conntrack_namespaces_found', {})).toBe(5);
    expect(sample('conntrack_namespaces_over_limit', {})).toBe(2);
    expect(sample('conntrack_discovery_unreadable_processes', {})).toBe(1);
    expect(sample('conntrack_scrape_duration_seconds', {})).toBe(0.002);
  });
  it('the catalog lists every family, also those without samples', () => {
    const catalog = metricFamilies({ namespaces: [], buckets: undefined, discovery: { found: 0, exported: 0, limit: 1, unreadable: 0 }, scrapeSeconds: 0 }, {}, true);
    const names = catalog.map((f) => f.name);
    for (const name of families.keys()) expect(names, name).toContain(name);
    expect(new Set(names).size).toBe(names.length);
  });
});

describe('collector options, checked before anything is opened', () => {
  it('refuses bad values with ERR_CONNTRACK_INVALID_ARGUMENT', async () => {
    const { checkCollectorOptions } = await import('../../../lib/metrics/collector.js');
    const bad: Array<[object, RegExp]> = [
      [{ netns: 'some' }, /netns must be an array/],
      [{ netns: ['/run/netns/a', '/run/netns/a'] }, /given twice/],
      [{ netns: 'all', maxNamespaces: 0 }, /maxNamespaces must be a positive integer/],
      [{ netns: 'all', maxNamespaces: 1.5 }, /maxNamespaces/],
      [{ netns: 'all', forgetAfterSeconds: -1 }, /forgetAfterSeconds/],
      [{ breakdownBy: 'port' }, /breakdown key must be/],
      [{ breakdownBy: true }, /breakdownBy must be/],
      [{ breakdownTop: 0 }, /breakdownTop/],
      [{ breakdownIntervalSeconds: Number.NaN }, /breakdownIntervalSeconds/],
      [{ growthWindowSeconds: Infinity }, /growthWindowSeconds/],
    ];
    for (const [options, message] of bad) {
      expect(() => checkCollectorOptions(options as never), JSON.stringify(options)).toThrow(expect.objectContaining({ code: 'ERR_CONNTRACK_INVALID_ARGUMENT', message: expect.stringMatching(message) }));
    }
    expect(checkCollectorOptions({ netns: 'all', breakdownBy: false })).toMatchObject({ paths: 'all', breakdown: undefined, maxNamespaces: 256, forgetAfterSeconds: 300 });
    expect(checkCollectorOptions({}).breakdown).toMatchObject({ key: { field: 'dport' }, top: 10, intervalSeconds: 30 });
  });

  it('the exporter command: a web config that cannot be read is exit 1 with the file named', async () => {
    const { exporterCommand } = await import('../../../lib/cli/exporter.js');
    const { runCommand } = await import('../../helpers/cli.js');
    const missing = join(scratch, 'no-such-web.yml');
    const result = await runCommand(exporterCommand, ['--listen', '127.0.0.1:0', '--web.config.file', missing]);
    expect(result.code).toBe(1);
    expect(result.err).toContain(`web config ${missing}: cannot read it`);
    expect(result.out).toBe('');
  });
});
