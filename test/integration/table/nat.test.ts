/**
 * NAT on create(): `srcNat` and `dstNat` make the entry `conntrack -I --src-nat/--dst-nat` makes,
 * as `conntrack -L` shows it (the reply tuple the kernel derives), in a throwaway namespace.
 */
import { afterAll, afterEach, beforeAll, expect, it } from 'vitest';
import { Conntrack, ConntrackError, type NewEntry, type TupleSpec } from '../../../lib/index.js';
import { describeIntegration } from '../../helpers/gate.js';
import { createNetns, destroyAllNetns, enableTracking, type Netns } from '../../helpers/netns.js';
import { oracleEntries, type OracleEntry } from '../../helpers/oracle.js';
import { requireTool } from '../../helpers/tools.js';

interface Case {
  name: string;
  entry: NewEntry;
  /** The same entry as conntrack -I arguments. */
  tool: string[];
}

const TCP: TupleSpec = { protocol: 'tcp', src: '10.3.0.1', dst: '10.3.0.2', sport: 1000, dport: 80 };
const UDP: TupleSpec = { protocol: 'udp', src: '10.3.0.1', dst: '10.3.0.4', sport: 1002, dport: 53 };
const ICMP: TupleSpec = { protocol: 'icmp', src: '10.3.0.1', dst: '10.3.0.6', icmpType: 8, icmpCode: 0, icmpId: 77 };
const UDP6: TupleSpec = { protocol: 'udp', src: 'fd00::1', dst: 'fd00::2', sport: 1003, dport: 53 };

const CASES: Case[] = [
  {
    name: 'source NAT to an address',
    entry: { original: TCP, timeout: 100, tcpState: 'ESTABLISHED', srcNat: { address: '192.168.1.1' } },
    tool: ['-p', 'tcp', '-s', TCP.src, '-d', TCP.dst, '--sport', '1000', '--dport', '80', '--state', 'ESTABLISHED', '--src-nat', '192.168.1.1'],
  },
  {
    name: 'source NAT to an address and port',
    entry: { original: TCP, timeout: 100, tcpState: 'ESTABLISHED', srcNat: { address: '192.168.1.1', port: 5000 } },
    tool: ['-p', 'tcp', '-s', TCP.src, '-d', TCP.dst, '--sport', '1000', '--dport', '80', '--state', 'ESTABLISHED', '--src-nat', '192.168.1.1:5000'],
  },
  {
    name: 'destination NAT to an address and port',
    entry: { original: UDP, timeout: 100, dstNat: { address: '10.9.9.9', port: 5353 } },
    tool: ['-p', 'udp', '-s', UDP.src, '-d', UDP.dst, '--sport', '1002', '--dport', '53', '--dst-nat', '10.9.9.9:5353'],
  },
  {
    name: 'both at once',
    entry: { original: UDP, timeout: 100, dstNat: { address: '10.9.9.9' }, srcNat: { address: '192.168.1.2', port: 6000 } },
    tool: ['-p', 'udp', '-s', UDP.src, '-d', UDP.dst, '--sport', '1002', '--dport', '53', '--dst-nat', '10.9.9.9', '--src-nat', '192.168.1.2:6000'],
  },
  {
    name: 'ICMP source NAT',
    entry: { original: ICMP, timeout: 100, srcNat: { address: '192.168.1.3' } },
    tool: ['-p', 'icmp', '-s', ICMP.src, '-d', ICMP.dst, '--icmp-type', '8', '--icmp-code', '0', '--icmp-id', '77', '--src-nat', '192.168.1.3'],
  },
  {
    name: 'IPv6 destination NAT',
    entry: { original: UDP6, timeout: 100, dstNat: { address: 'fd00::9' } },
    tool: ['-p', 'udp', '-s', UDP6.src, '-d', UDP6.dst, '--sport', '1003', '--dport', '53', '--dst-nat', 'fd00::9'],
  },
];

/** What the tool shows of an entry, without what differs between two creations (id, timeout). */
function shown(e: OracleEntry | undefined) {
  expect(e).toBeDefined();
  const { id, timeout, deltaTime, use, ...rest } = e as OracleEntry;
  void id; void timeout; void deltaTime; void use;
  return rest;
}

describeIntegration('NAT on create(), against conntrack -I --src-nat / --dst-nat', () => {
  let ns: Netns;
  let ct: Conntrack;

  beforeAll(async () => {
    ns = await createNetns('nat');
    await enableTracking(ns);
    ct = await Conntrack.open({ netns: ns.path });
  });

  afterEach(async () => {
    await ct.flush();
  });

  afterAll(async () => {
    await ct?.close();
    await destroyAllNetns();
  });

  for (const c of CASES) {
    it(`${c.name}: the entry conntrack -L shows is the tool's`, async () => {
      await ns.exec(requireTool('conntrack'), ['-I', ...c.tool, '-t', '100']);
      const tools = await oracleEntries(ns, { labels: false });
      expect(tools).toHaveLength(1);
      await ct.flush();
      await ct.create(c.entry);
      const mine = await oracleEntries(ns, { labels: false });
      expect(mine).toHaveLength(1);
      expect(shown(mine[0])).toEqual(shown(tools[0]));
      // The kernel NATed the reply; the status bits (which the tool does not print) say which way.
      const entry = await ct.get(c.entry.original as TupleSpec);
      expect(entry?.reply).toEqual(mine[0]?.reply);
      if (c.entry.srcNat) expect(entry?.flags).toContain('SRC_NAT');
      if (c.entry.dstNat) expect(entry?.flags).toContain('DST_NAT');
    });
  }

  it('a range: the kernel picks an address and port inside it', async () => {
    await ct.create({ original: UDP, timeout: 100, srcNat: { address: ['192.168.5.1', '192.168.5.9'], port: [6000, 6009] } });
    const [entry] = await oracleEntries(ns, { labels: false });
    const last = Number(entry?.reply.dst.split('.')[3]);
    expect(entry?.reply.dst).toMatch(/^192\.168\.5\.\d$/);
    expect(last).toBeGreaterThanOrEqual(1);
    expect(last).toBeLessThanOrEqual(9);
    expect(entry?.reply.dport).toBeGreaterThanOrEqual(6000);
    expect(entry?.reply.dport).toBeLessThanOrEqual(6009);
  });

  it('bad NAT input is ERR_CONNTRACK_INVALID_ARGUMENT and creates nothing', async () => {
    const bad: NewEntry[] = [
      { original: UDP, timeout: 10, srcNat: { address: 'fd00::1' } },
      { original: UDP, timeout: 10, srcNat: { address: ['192.168.1.9', '192.168.1.1'] } },
      { original: UDP, timeout: 10, srcNat: { address: '192.168.1.1', port: 70000 } },
      { original: UDP, timeout: 10, srcNat: { address: '192.168.1.1', port: [10, 5] } },
      { original: ICMP, timeout: 10, srcNat: { address: '192.168.1.1', port: 10 } },
      { original: UDP, timeout: 10, dstNat: 'somewhere' as never },
    ];
    for (const entry of bad) {
      const err = await ct.create(entry).then(() => undefined, (e: unknown) => e);
      expect(err).toBeInstanceOf(ConntrackError);
      expect((err as ConntrackError).code).toBe('ERR_CONNTRACK_INVALID_ARGUMENT');
    }
    expect(await oracleEntries(ns, { labels: false })).toEqual([]);
  });

  it('createMany() sends NAT too', async () => {
    const result = await ct.createMany(CASES.slice(0, 1).concat(CASES.slice(2, 3)).map((c) => c.entry));
    expect(result).toMatchObject({ total: 2, succeeded: 2, failed: 0 });
    const listed = await oracleEntries(ns, { labels: false });
    expect(listed.map((e) => e.reply.dst).sort()).toEqual(['10.3.0.1', '192.168.1.1']);
    expect(listed.find((e) => e.original.protocol === 'udp')?.reply).toMatchObject({ src: '10.9.9.9', sport: 5353 });
  });
}, { tools: ['conntrack'] });
