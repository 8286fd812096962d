/**
 * The command-line tool (`node dist/lib/cli/main.js`) against conntrack-tools, in a namespace with
 * real flows: count, list (ids, filters, output forms), stats, the summary, and exit codes.
 */
import { afterAll, beforeAll, expect, it } from 'vitest';
import { runCli } from '../../helpers/cli.js';
import { describeIntegration } from '../../helpers/gate.js';
import { holdGlobalLimits, type GlobalLimitsLock } from '../../helpers/global-lock.js';
import { createNetns, destroyAllNetns, enableTracking, type Netns } from '../../helpers/netns.js';
import { oracleCount, oracleEntries, oracleIds, oracleStats, type OracleEntry } from '../../helpers/oracle.js';
import { fillUdp, openFlows, type OpenFlows } from '../../helpers/traffic.js';

const TCP_PORT = 7500;
const UDP_PORT = 7501;
/** `ct mark set MARK` for connections to this port: `--mark 0` then selects some entries, not all. */
const MARK_PORT = 7502;
const MARK = 0x2a;
const FILL = 50;

const cli = (args: readonly string[]) => runCli(args);

function jsonLines(text: string): Array<Record<string, unknown> & { id: number }> {
  return text.split('\n').filter((line) => line.trim() !== '').map((line) => JSON.parse(line) as Record<string, unknown> & { id: number });
}

const sorted = (ids: readonly number[]) => [...ids].sort((a, b) => a - b);

describeIntegration('conntrack CLI', () => {
  let ns: Netns;
  let flows: OpenFlows;
  let oracle: OracleEntry[];
  let limits: GlobalLimitsLock | undefined;
  let max: number;

  beforeAll(async () => {
    // Compared with nf_conntrack_max below: nobody may change it meanwhile.
    limits = await holdGlobalLimits('shared');
    max = limits.readMax();
    ns = await createNetns('cli');
    await enableTracking(ns, { markPort: MARK_PORT, mark: MARK });
    flows = await openFlows(ns, [
      { kind: 'tcp-established', family: 4, port: TCP_PORT },
      { kind: 'tcp-established', family: 4, port: MARK_PORT },
      { kind: 'tcp-established', family: 6, port: TCP_PORT },
      { kind: 'tcp-time-wait', family: 4 },
      { kind: 'udp-reply', family: 4, port: UDP_PORT },
      { kind: 'udp-oneway', family: 6 },
      { kind: 'icmp-echo', family: 4 },
    ]);
    await fillUdp(ns, FILL);
    oracle = await oracleEntries(ns, { labels: false });
  }, 180_000);

  afterAll(async () => {
    await flows?.close();
    await destroyAllNetns();
    limits?.release();
  });

  it('count --json equals conntrack -C, and max nf_conntrack_max', async () => {
    const result = await cli(['count', '--netns', ns.path, '--json']);
    expect(result.status, result.stderr).toBe(0);
    const count = JSON.parse(result.stdout) as { entries: number; max: number };
    expect(count.entries).toBe(await oracleCount(ns));
    expect(count.entries).toBe(flows.info.length + FILL);
    expect(count.max).toBe(max);

    const plain = await cli(['count', '--netns', ns.path]);
    expect(plain.status).toBe(0);
    expect(plain.stdout.trim()).toBe(String(count.entries));
  });

  it('count --netns PID reads the namespace of that process', async () => {
    const sleeper = ns.spawn('sleep', ['30'], { stdio: 'ignore' });
    await new Promise((resolve) => sleeper.once('spawn', resolve));
    try {
      // Wait for `ip netns exec` to have entered the namespace.
      for (let i = 0; i < 100 && (await ns.pids()).indexOf(sleeper.pid as number) < 0; i++) await new Promise((r) => setTimeout(r, 20));
      const result = await cli(['count', '--netns', String(sleeper.pid), '--json']);
      expect(result.status, result.stderr).toBe(0);
      expect((JSON.parse(result.stdout) as { entries: number }).entries).toBe(flows.info.length + FILL);
    } finally {
      sleeper.kill('SIGKILL');
    }
  });

  it('list --jsonl: one entry per line, the same ids as conntrack -L', async () => {
    const result = await cli(['list', '--netns', ns.path, '--jsonl']);
    expect(result.status, result.stderr).toBe(0);
    const entries = jsonLines(result.stdout);
    expect(sorted(entries.map((e) => e.id))).toEqual(sorted(await oracleIds(ns)));
    expect(entries).toHaveLength(flows.info.length + FILL);
    // Fields as the library names them.
    const tcp = entries.find((e) => (e.original as { dport?: number }).dport === TCP_PORT && e.family === 'ipv4');
    expect(tcp).toMatchObject({ family: 'ipv4', original: { protocol: 'tcp', src: '127.0.0.1', dst: '127.0.0.1', dport: TCP_PORT }, tcp: { state: 'ESTABLISHED' } });
  });

  it('list --json: one array with the same entries', async () => {
    const result = await cli(['list', '--netns', ns.path, '--json']);
    expect(result.status, result.stderr).toBe(0);
    const entries = JSON.parse(result.stdout) as Array<{ id: number }>;
    expect(sorted(entries.map((e) => e.id))).toEqual(sorted(oracle.map((e) => e.id)));
  });

  it('list (text) prints one line per entry in the extended layout, and the total on stderr', async () => {
    const result = await cli(['list', '--netns', ns.path]);
    expect(result.status, result.stderr).toBe(0);
    const lines = result.stdout.split('\n').filter(Boolean);
    expect(lines).toHaveLength(oracle.length);
    expect(result.stderr).toContain(`${oracle.length} flow entries`);
    const ids = lines.map((line) => Number(/\bid=(\d+)$/.exec(line)?.[1]));
    expect(sorted(ids)).toEqual(sorted(oracle.map((e) => e.id)));
    expect(lines.filter((line) => line.includes('ESTABLISHED'))).toHaveLength(oracle.filter((e) => e.tcp?.state === 'ESTABLISHED').length);
  });

  it('list -p tcp --state ESTABLISHED matches conntrack -L -p tcp --state ESTABLISHED', async () => {
    const result = await cli(['list', '--netns', ns.path, '-p', 'tcp', '--state', 'ESTABLISHED', '--jsonl']);
    expect(result.status, result.stderr).toBe(0);
    const ids = jsonLines(result.stdout).map((e) => e.id);
    const expected = oracle.filter((e) => e.original.protocol === 'tcp' && e.tcp?.state === 'ESTABLISHED').map((e) => e.id);
    expect(expected).toHaveLength(3);
    expect(sorted(ids)).toEqual(sorted(expected));
    expect(sorted(ids)).toEqual(sorted(await oracleIds(ns, { filter: ['-p', 'tcp', '--state', 'ESTABLISHED'] })));
  });

  it('list --dport, -f, --status and ranges match the oracle filtered the same way', async () => {
    // [arguments, the filter's meaning over the oracle's entries, how many it selects when that is
    // all or none; else it must select some, not all, or a library ignoring it would pass].
    const cases: Array<[string[], (e: OracleEntry) => boolean, number?]> = [
      [['--dport', String(UDP_PORT)], (e) => e.original.dport === UDP_PORT],
      [['--dport', `${TCP_PORT}-${UDP_PORT}`], (e) => e.original.dport === TCP_PORT || e.original.dport === UDP_PORT],
      [['-p', 'udp', '--dport', '9'], (e) => e.original.protocol === 'udp' && e.original.dport === 9],
      [['-f', 'ipv6'], (e) => e.family === 'ipv6'],
      [['-p', '1'], (e) => e.original.protocolNumber === 1],
      [['-d', '127.1.0.0/16'], (e) => e.original.dst.startsWith('127.1.')],
      [['--reply-sport', String(TCP_PORT)], (e) => e.reply.sport === TCP_PORT],
      [['--status', '!SEEN_REPLY'], (e) => !e.flags.includes('SEEN_REPLY')],
      [['--status', 'SEEN_REPLY,ASSURED'], (e) => e.flags.includes('SEEN_REPLY') && e.flags.includes('ASSURED')],
      [['--mark', '0'], (e) => e.mark === 0],
      [['--mark', String(MARK)], (e) => e.mark === MARK, 1],
      [['--zone', '3'], (e) => (e.zone ?? 0) === 3, 0],
    ];
    for (const [args, predicate, count] of cases) {
      const result = await cli(['list', '--netns', ns.path, ...args, '--jsonl']);
      expect(result.status, `${args.join(' ')}: ${result.stderr}`).toBe(0);
      const expected = oracle.filter(predicate).map((e) => e.id);
      if (count !== undefined) {
        expect(expected, `${args.join(' ')} selects ${count}`).toHaveLength(count);
      } else {
        expect(expected.length, `${args.join(' ')} selects some`).toBeGreaterThan(0);
        expect(expected.length, `${args.join(' ')} selects not all`).toBeLessThan(oracle.length);
      }
      expect(sorted(jsonLines(result.stdout).map((e) => e.id)), args.join(' ')).toEqual(sorted(expected));
    }
    // The oracle's own filter agrees on the one conntrack -L can express the same way.
    const viaTool = await oracleIds(ns, { filter: ['-p', 'udp', '--dport', String(UDP_PORT)] });
    expect(viaTool).toHaveLength(1);
  });

  it('stats --json per CPU equals conntrack -S', async () => {
    const result = await cli(['stats', '--netns', ns.path, '--json']);
    expect(result.status, result.stderr).toBe(0);
    const stats = JSON.parse(result.stdout) as { perCpu: Array<{ cpu: number; counters: Record<string, number> }> };
    const tool = await oracleStats(ns);
    expect(stats.perCpu.map((row) => ({ cpu: row.cpu, counters: row.counters }))).toEqual(tool.perCpu);
  });

  it('the summary mentions the entries and the limit', async () => {
    const entries = flows.info.length + FILL;
    const text = await cli(['--netns', ns.path]);
    expect(text.status, text.stderr).toBe(0);
    expect(text.stdout).toContain(ns.path);
    expect(text.stdout).toMatch(new RegExp(`entries\\s+${entries} of ${max}\\b`));
    expect(text.stdout).toMatch(/drops\s+drop=0 /);

    const json = await cli(['--netns', ns.path, '--json']);
    expect(json.status, json.stderr).toBe(0);
    expect(JSON.parse(json.stdout)).toMatchObject({ netns: ns.path, entries, max, usage: entries / max });
  });

  it('a bad filter exits 1 with a message on stderr and nothing on stdout', async () => {
    for (const args of [['-p', 'bogus'], ['--state', 'NOT_A_STATE'], ['-s', '300.1.1.1'], ['--dport', '70000'], ['--status', 'BOGUS'], ['--zone', '70000'], ['-f', 'ipv5']]) {
      const result = await cli(['list', '--netns', ns.path, ...args]);
      expect(result.status, args.join(' ')).toBe(1);
      expect(result.stderr, args.join(' ')).toMatch(/^conntrack: invalid filter: /);
      expect(result.stdout).toBe('');
    }
  });

  it('a malformed option value is a usage error: exit 2 and the usage text', async () => {
    const result = await cli(['list', '--netns', ns.path, '--dport', 'abc']);
    expect(result.status).toBe(2);
    expect(result.stderr).toContain('--dport');
    expect(result.stderr).toContain('usage: conntrack list');
    const unknownOption = await cli(['count', '--netns', ns.path, '--bogus']);
    expect(unknownOption.status).toBe(2);
    expect(unknownOption.stderr).toContain('usage: conntrack count');
  });

  it('an unknown command exits 2 and says so', async () => {
    const result = await cli(['frobnicate']);
    expect(result.status).toBe(2);
    expect(result.stderr).toContain("unknown command 'frobnicate'");
    expect(result.stdout).toBe('');
  });

  it('a namespace that does not exist exits 1 with the reason', async () => {
    const result = await cli(['count', '--netns', '/run/netns/ctt-cli-no-such-ns']);
    expect(result.status).toBe(1);
    expect(result.stderr).toContain('/run/netns/ctt-cli-no-such-ns does not exist');
  });
});
