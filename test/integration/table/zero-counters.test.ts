/**
 * Zeroed counters and the kernel's other lists, against conntrack-tools on real flows in a
 * throwaway namespace with accounting on: entries({ zeroCounters }) and get(…, { zeroCounters })
 * read and zero the counters as `conntrack -L -z` does (and see the tool's zeroing); the dying
 * and unconfirmed lists are what `conntrack -L dying` / `unconfirmed` show.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { Conntrack, type ConntrackEntry, type TupleSpec } from '../../../lib/index.js';
import { describeIntegration } from '../../helpers/gate.js';
import { createNetns, destroyAllNetns, enableTracking, type Netns } from '../../helpers/netns.js';
import { oracleEntries, parseConntrackText, parseShownCount, type OracleEntry } from '../../helpers/oracle.js';
import { entryForFlow, openFlows, type FlowInfo, type OpenFlows } from '../../helpers/traffic.js';
import { requireTool } from '../../helpers/tools.js';
import { runCommand } from '../../helpers/cli.js';
import { listCommand } from '../../../lib/cli/core.js';

async function collect(it: AsyncIterable<ConntrackEntry>): Promise<ConntrackEntry[]> {
  const out: ConntrackEntry[] = [];
  for await (const e of it) out.push(e);
  return out;
}

const countersOf = (e: { counters?: { original: { packets: number; bytes: number }; reply: { packets: number; bytes: number } } | undefined } | undefined) => e?.counters;

describeIntegration('zeroed counters (conntrack -L -z) and the dying and unconfirmed lists', () => {
  let ns: Netns;
  let ct: Conntrack;
  let flows: OpenFlows;
  let udp: FlowInfo;
  let tcp: FlowInfo;

  beforeAll(async () => {
    ns = await createNetns('zero counters');
    await enableTracking(ns, { accounting: true });
    flows = await openFlows(ns, [{ kind: 'udp-reply', family: 4, port: 8300 }, { kind: 'tcp-established', family: 4, port: 8301 }]);
    [udp, tcp] = flows.info as [FlowInfo, FlowInfo];
    await flows.poke();
    await flows.poke();
    ct = await Conntrack.open({ netns: ns.path });
  });

  afterAll(async () => {
    await ct?.close();
    await flows?.close();
    await destroyAllNetns();
  });

  /**
   * The tool's view once the flows are quiet: a TCP peer's delayed ACK (up to 200 ms) can still
   * arrive after the last poke and would count between the tool's read and the library's.
   */
  async function quietView(): Promise<OracleEntry[]> {
    let last = await oracleEntries(ns, { labels: false });
    for (let i = 0; i < 20; i++) {
      await sleep(300);
      const now = await oracleEntries(ns, { labels: false });
      const same = [udp, tcp].every((flow) => JSON.stringify(countersOf(entryForFlow(now, flow))) === JSON.stringify(countersOf(entryForFlow(last, flow))));
      if (same) return now;
      last = now;
    }
    throw new Error('the flows did not go quiet within 6 s');
  }

  it('entries({ zeroCounters }) returns the counts the tool showed, and the tool then shows zeros', async () => {
    const before = await quietView();
    const zeroed = await collect(ct.entries(undefined, { zeroCounters: true }));
    for (const flow of [udp, tcp]) {
      const tools = entryForFlow(before, flow);
      const mine = entryForFlow(zeroed, flow);
      expect(mine.id).toBe(tools.id);
      expect(countersOf(mine)?.original.packets).toBeGreaterThan(0);
      expect(countersOf(mine)).toEqual(countersOf(tools));
    }
    const after = await oracleEntries(ns, { labels: false });
    for (const flow of [udp, tcp]) {
      expect(countersOf(entryForFlow(after, flow))).toEqual({ original: { packets: 0, bytes: 0 }, reply: { packets: 0, bytes: 0 } });
    }
  });

  it('what conntrack -L -z zeroes, the library then reads as zero; get(…, { zeroCounters }) zeroes one entry only', async () => {
    await flows.poke();
    const tool = await ns.exec(requireTool('conntrack'), ['-L', '-z', '-o', 'extended,id']);
    const zeroedByTool = parseConntrackText(tool.stdout);
    expect(countersOf(entryForFlow(zeroedByTool, udp))?.original.packets).toBe(1);
    const now = await collect(ct.entries());
    for (const flow of [udp, tcp]) expect(countersOf(entryForFlow(now, flow))?.original.packets).toBe(0);

    await flows.poke();
    const tuple: TupleSpec = { protocol: 'udp', src: udp.src, dst: udp.dst, sport: udp.sport, dport: udp.dport };
    const read = await ct.get(tuple, { zeroCounters: true });
    expect(countersOf(read)).toEqual({ original: { packets: 1, bytes: expect.any(Number) }, reply: { packets: 1, bytes: expect.any(Number) } });
    expect(read?.counters?.original.bytes).toBeGreaterThan(28);
    const after = await oracleEntries(ns, { labels: false });
    expect(countersOf(entryForFlow(after, udp))?.original.packets, 'zeroed').toBe(0);
    expect(countersOf(entryForFlow(after, tcp))?.original.packets, 'the other entry keeps its counts').toBeGreaterThan(0);
  });

  it('conntrack list -z zeroes as it lists', async () => {
    await flows.poke();
    const listed = await runCommand(listCommand, ['--netns', ns.path, '-z', '-p', 'udp', '--jsonl']);
    expect(listed.code).toBe(0);
    const [entry] = listed.out.trim().split('\n').map((line) => JSON.parse(line) as ConntrackEntry);
    expect(entry?.counters?.original.packets).toBe(1);
    expect(countersOf(entryForFlow(await oracleEntries(ns, { labels: false }), udp))?.original.packets).toBe(0);
  });

  it('the dying and unconfirmed lists are what the tool shows (here: empty while the table is not)', async () => {
    for (const table of ['dying', 'unconfirmed'] as const) {
      const tool = await ns.exec(requireTool('conntrack'), ['-L', table, '-o', 'extended,id']);
      const mine = await collect(ct.entries(undefined, { table }));
      expect(mine.map((e) => e.id)).toEqual(parseConntrackText(tool.stdout).map((e) => e.id));
      expect(parseShownCount(tool.stderr)).toBe(mine.length);
      const cli = await runCommand(listCommand, [table, '--netns', ns.path]);
      expect(cli).toMatchObject({ code: 0, err: `conntrack: ${mine.length} flow entries listed\n` });
    }
    expect((await collect(ct.entries())).length).toBeGreaterThanOrEqual(2);
    expect(() => ct.entries(undefined, { table: 'dying', zeroCounters: true })).toThrow(expect.objectContaining({ code: 'ERR_CONNTRACK_INVALID_ARGUMENT' }));
    expect(() => ct.entries(undefined, { table: 'expect' as never })).toThrow(expect.objectContaining({ code: 'ERR_CONNTRACK_INVALID_ARGUMENT' }));
  });
}, { tools: ['conntrack'] });
