/**
 * The expectation table against conntrack-tools, made by the kernel's FTP helper on a real FTP
 * session in a throwaway namespace (PASV makes the helper expect the data connection):
 * expectations() equals `conntrack -L expect`; getExpectation(), createExpectation() (beside the
 * helper's own and `conntrack -I expect`), deleteExpectation() and flushExpectations() change what
 * the tool then shows; expectationEvents() reports them as `conntrack -E expect` does; the CLI lists them.
 */
import { afterAll, afterEach, beforeAll, expect, it } from 'vitest';
import { Conntrack, ConntrackError, type ConntrackExpectation, type ExpectationEvent, type OverflowEvent, type Tuple, type TupleSpec } from '../../../lib/index.js';
import { describeIntegration } from '../../helpers/gate.js';
import { createNetns, destroyAllNetns, type Netns } from '../../helpers/netns.js';
import { oracleExpectations, type OracleExpectation, type OracleTuplePart } from '../../helpers/expect-oracle.js';
import { FTP_HELPER_RULES, startFtp, splitEndpoint, type FtpSession } from '../../helpers/ftp.js';
import { requireTool } from '../../helpers/tools.js';
import { runCommand } from '../../helpers/cli.js';
import { listCommand } from '../../../lib/cli/core.js';

function part(t: Tuple): OracleTuplePart {
  return { src: t.src, dst: t.dst, protocolNumber: t.protocolNumber, sport: t.sport, dport: t.dport };
}

/** The library's expectation as far as the tool prints it. */
function asOracle(x: ConntrackExpectation): OracleExpectation {
  return { expected: part(x.tuple), mask: part(x.mask), master: part(x.master), helper: x.helper, timeout: x.timeout };
}

function withoutTimeout(o: OracleExpectation): Omit<OracleExpectation, 'timeout'> {
  const { timeout, ...rest } = o;
  void timeout;
  return rest;
}

async function expectCode(promise: Promise<unknown>, code: string): Promise<void> {
  const err = await promise.then(() => undefined, (e: unknown) => e);
  expect(err, `expected ${code}`).toBeInstanceOf(ConntrackError);
  expect((err as ConntrackError).code, (err as Error).message).toBe(code);
}

describeIntegration('expectations: the FTP helper\'s, against conntrack -L expect', () => {
  let ns: Netns;
  let ftp: FtpSession;
  let ct: Conntrack;
  let master: TupleSpec;

  beforeAll(async () => {
    ns = await createNetns('expectations');
    // With the default 2 ("auto") a connection made while nobody listens to events gets no event
    // cache, and its expectations then have no events either: the FTP control connection is
    // made before any listener here.
    await ns.sysctl('net.netfilter.nf_conntrack_events', 1);
    await ns.nft(FTP_HELPER_RULES);
    ftp = await startFtp(ns, { serverAddress: '127.0.0.2', serverPort: 21, connectAddress: '127.0.0.2', connectPort: 21, clientAddress: '127.0.0.1' });
    const [clientAddress, clientPort] = splitEndpoint(ftp.control.clientLocal);
    master = { protocol: 'tcp', src: clientAddress, dst: '127.0.0.2', sport: clientPort, dport: 21 };
    ct = await Conntrack.open({ netns: ns.path });
  });

  afterEach(async () => {
    await ct.flushExpectations();
  });

  afterAll(async () => {
    await ct?.close();
    await ftp?.close();
    await destroyAllNetns();
  });

  it('expectations() lists what conntrack -L expect shows: tuple, mask, master, helper, timeout, and the rest decoded', async () => {
    await ftp.pasv();
    const oracle = await oracleExpectations(ns);
    const mine = await ct.expectations();
    expect(oracle).toHaveLength(1);
    expect(mine.map(asOracle).map(withoutTimeout)).toEqual(oracle.map(withoutTimeout));
    const [x] = mine as [ConntrackExpectation];
    expect(Math.abs((x.timeout ?? 0) - (oracle[0]?.timeout ?? 0))).toBeLessThanOrEqual(1);
    // What the tool prints too, checked against what FTP made: the helper expects the client to
    // connect to the server's announced port, from any source port (mask sport 0).
    expect(x.master).toMatchObject({ protocol: 'tcp', src: master.src, dst: master.dst, sport: master.sport, dport: 21 });
    expect(x.tuple).toMatchObject({ protocol: 'tcp', src: '127.0.0.1', dst: '127.0.0.2', sport: 0 });
    expect(x.mask).toMatchObject({ src: '255.255.255.255', dst: '255.255.255.255', sport: 0, dport: 65535 });
    expect(x.helper).toBe('ftp');
    expect(x.family).toBe('ipv4');
    expect(x.class).toBe(0);
    expect(x.flags).toEqual([]);
    expect(x.nat).toBeUndefined();
    expect(x.id).toBeGreaterThan(0);
    // Filters: the kernel's (master, family) and the library's (protocol, helper).
    expect(await ct.expectations({ master })).toHaveLength(1);
    expect(await ct.expectations({ master: { ...master, sport: (master.sport as number) + 1 } }), 'no such master').toEqual([]);
    expect(await ct.expectations({ family: 'ipv6' })).toEqual([]);
    expect(await ct.expectations({ protocol: 'udp' })).toEqual([]);
    expect(await ct.expectations({ helper: 'ftp', protocol: 'tcp' })).toHaveLength(1);
  });

  it('getExpectation() finds one by a tuple it matches (any source port), and by its id; deleteExpectation() removes it as the tool then shows', async () => {
    await ftp.pasv();
    const [listed] = await ct.expectations() as [ConntrackExpectation];
    const wanted: TupleSpec = { protocol: 'tcp', src: listed.tuple.src, dst: listed.tuple.dst, sport: 40999, dport: listed.tuple.dport as number };
    expect((await ct.getExpectation(wanted))?.id).toBe(listed.id);
    expect((await ct.getExpectation(listed))?.id).toBe(listed.id);
    expect(await ct.getExpectation({ ...listed, id: (listed.id + 1) >>> 0 })).toBeUndefined();
    expect(await ct.getExpectation({ ...wanted, dport: (wanted.dport as number) + 1 })).toBeUndefined();
    expect(await ct.deleteExpectation(listed)).toBe(true);
    expect(await oracleExpectations(ns)).toEqual([]);
    expect(await ct.deleteExpectation(wanted)).toBe(false);
  });

  it('createExpectation() makes what the FTP helper makes, and what conntrack -I expect makes', async () => {
    // The helper's own expectation, then one made by the library from its parts: the tool shows the same.
    await ftp.pasv();
    const [helpers] = await ct.expectations() as [ConntrackExpectation];
    const helpersView = await oracleExpectations(ns);
    await ct.flushExpectations();
    const tuple: TupleSpec = { protocol: 'tcp', src: helpers.tuple.src, dst: helpers.tuple.dst, sport: 0, dport: helpers.tuple.dport as number };
    await ct.createExpectation({ master, tuple, timeout: 300, mask: { src: helpers.mask.src, dst: helpers.mask.dst, sport: helpers.mask.sport, dport: helpers.mask.dport } });
    expect((await oracleExpectations(ns)).map(withoutTimeout)).toEqual(helpersView.map(withoutTimeout));
    await ct.flushExpectations();

    // conntrack -I expect (1.4.7) sends the expected tuple with protocol 183 and no ports (its
    // bug: the mask and master are right), so only the parts it gets right can be compared.
    const other: TupleSpec = { protocol: 'tcp', src: '127.0.0.1', dst: '127.0.0.2', sport: 0, dport: 47001 };
    await ct.createExpectation({ master, tuple: other, timeout: 200 });
    const [mine] = await oracleExpectations(ns) as [OracleExpectation];
    await ct.flushExpectations();
    await ns.exec(requireTool('conntrack'), [
      '-I', 'expect', '-s', master.src, '-d', master.dst, '-p', 'tcp', '--sport', String(master.sport), '--dport', '21',
      '--tuple-src', other.src, '--tuple-dst', other.dst, '--tuple-port-src', '0', '--tuple-port-dst', '47001',
      '--mask-src', '255.255.255.255', '--mask-dst', '255.255.255.255', '--mask-port-src', '0', '--mask-port-dst', '65535',
      '-t', '200',
    ]);
    const [tools] = await oracleExpectations(ns) as [OracleExpectation];
    expect(mine.expected).toEqual({ src: '127.0.0.1', dst: '127.0.0.2', protocolNumber: 6, sport: 0, dport: 47001 });
    expect(tools.expected).toMatchObject({ src: mine.expected.src, dst: mine.expected.dst });
    // The tool's XML has one protocol per expectation: its view of master and mask carries 183 too.
    const l3 = (p: OracleTuplePart) => [p.src, p.dst];
    expect([l3(mine.master), mine.master.sport, mine.master.dport, l3(mine.mask), mine.helper])
      .toEqual([l3(tools.master), tools.master.sport, tools.master.dport, l3(tools.mask), tools.helper]);
    expect(Math.abs((mine.timeout ?? 0) - (tools.timeout ?? 0))).toBeLessThanOrEqual(2);
    await ct.flushExpectations();

    // Flags and a NAT target travel too, as the library reads them back.
    await ct.createExpectation({ master, tuple: other, timeout: 100, helper: 'ftp', flags: ['PERMANENT'], nat: { dir: 'reply', address: '127.0.0.9', port: 2121 } });
    const [x] = await ct.expectations() as [ConntrackExpectation];
    expect(x.flags).toEqual(['PERMANENT']);
    expect(x.nat?.dir).toBe('reply');
    expect(x.nat?.tuple).toMatchObject({ src: '127.0.0.9', sport: 2121 });
  });

  it('refusals are typed: a taken tuple, a missing master, bad input (nothing created)', async () => {
    const tuple: TupleSpec = { protocol: 'tcp', src: '127.0.0.1', dst: '127.0.0.2', sport: 0, dport: 47002 };
    await ct.createExpectation({ master, tuple, timeout: 200, helper: 'ftp' });
    await expectCode(ct.createExpectation({ master, tuple, timeout: 200, helper: 'ftp' }), 'ERR_CONNTRACK_EXISTS');
    await expectCode(ct.createExpectation({ master: { ...master, sport: 1 }, tuple: { ...tuple, dport: 47003 }, timeout: 200, helper: 'ftp' }), 'ERR_CONNTRACK_NOT_FOUND');
    for (const bad of [
      { master, tuple, timeout: 0 },
      { master, tuple: { ...tuple, src: '::1' }, timeout: 10 },
      { master, tuple, timeout: 10, flags: ['FOREVER'] },
      { master, tuple, timeout: 10, helper: 'a helper name that is far too long' },
      { master, tuple, timeout: 10, mask: { src: 'nope' } },
      { master, tuple, timeout: 10, nat: { dir: 'sideways', address: '127.0.0.9' } },
    ]) await expectCode(ct.createExpectation(bad as never), 'ERR_CONNTRACK_INVALID_ARGUMENT');
    expect(await oracleExpectations(ns)).toHaveLength(1);
  });

  it('flushExpectations() of another helper keeps them; of ftp, or of all, empties the table', async () => {
    await ftp.pasv();
    await ct.flushExpectations({ helper: 'sip' });
    expect(await oracleExpectations(ns)).toHaveLength(1);
    await ct.flushExpectations({ helper: 'ftp' });
    expect(await oracleExpectations(ns)).toEqual([]);
  });

  it('expectationEvents() reports new and destroy events, as conntrack -E expect does', async () => {
    const tool = ns.spawn(requireTool('conntrack'), ['-E', 'expect'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let toolOut = '';
    tool.stdout?.on('data', (chunk: Buffer) => { toolOut += chunk.toString(); });
    const stop = new AbortController();
    const seen: Array<ExpectationEvent | OverflowEvent> = [];
    const listening = (async () => {
      try {
        for await (const event of ct.expectationEvents({ signal: stop.signal })) seen.push(event);
      } catch (err) {
        if ((err as Error).name !== 'AbortError') throw err;
      }
    })();
    const ours = () => seen.filter((e): e is ExpectationEvent => e.type !== 'overflow');
    // Both listeners subscribe on their own: make and remove expectations until both saw one come
    // and go (a listener that subscribed between the two sees only the destroy).
    const sawBoth = (dport: number) =>
      new RegExp(`\\[NEW\\].*dport=${dport}\\b`).test(toolOut) && new RegExp(`\\[DESTROY\\].*dport=${dport}\\b`).test(toolOut) &&
      ours().filter((e) => e.expectation.tuple.dport === dport).length === 2;
    const deadline = Date.now() + 10_000;
    const tried: number[] = [];
    while (!tried.some(sawBoth) && Date.now() < deadline) {
      const port = 47100 + tried.length;
      tried.push(port);
      const tuple: TupleSpec = { protocol: 'tcp', src: '127.0.0.1', dst: '127.0.0.2', sport: 0, dport: port };
      await ct.createExpectation({ master, tuple, timeout: 100, helper: 'ftp' });
      await ct.deleteExpectation(tuple);
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    await new Promise((resolve) => setTimeout(resolve, 200));
    stop.abort();
    await listening;
    tool.kill('SIGINT');
    const port = tried.find(sawBoth) ?? -1;
    const last = ours().filter((e) => e.expectation.tuple.dport === port);
    expect(last.map((e) => e.type)).toEqual(['new', 'destroy']);
    expect(last[0]?.expectation).toMatchObject({ helper: 'ftp', master: { sport: master.sport, dport: 21 } });
    // The tool saw the same expectation come and go.
    expect(toolOut).toMatch(new RegExp(`\\[NEW\\].*dport=${port}\\b`));
    expect(toolOut).toMatch(new RegExp(`\\[DESTROY\\].*dport=${port}\\b`));
  });

  it('conntrack list expect prints the table as conntrack -L expect does (and --json)', async () => {
    await ftp.pasv();
    const [x] = await ct.expectations() as [ConntrackExpectation];
    const text = await runCommand(listCommand, ['expect', '--netns', ns.path]);
    expect(text.code).toBe(0);
    expect(text.err).toBe('conntrack: 1 expectations listed\n');
    const tool = (await ns.exec(requireTool('conntrack'), ['-L', 'expect'])).stdout.trim();
    // The tool's line, field by field, is in ours (ours adds the id).
    for (const field of tool.split(/\s+/).slice(1)) expect(text.out).toContain(field);
    const listed = JSON.parse((await runCommand(listCommand, ['expect', '--netns', ns.path, '--json'])).out) as ConntrackExpectation[];
    expect(listed.map((e) => e.id)).toEqual([x.id]);
    expect(await runCommand(listCommand, ['expect', '--netns', ns.path, '--sport', '1'])).toMatchObject({ code: 2 });
  });
}, { tools: ['conntrack'] });
