/**
 * conntrack-tools' command line as ct-syntax.ts parses it: values, prefixes of long options,
 * protocol options after -p only, and the messages of its option table.
 */
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { CtFailure, CtParameterError, isConntrackToolsSyntax, netmaskText, parseConntrackArgs, readLabelMap } from '../../../lib/cli/ct-syntax.js';
import { ctime, eventTimestamp, expectationTimestamp, formatCpuStats, formatExpectationXml, formatLine } from '../../../lib/cli/ct-format.js';
import type { ConntrackEntry, ConntrackExpectation } from '../../../lib/base/types.js';

const parse = (line: string) => parseConntrackArgs(line.split(' '));
function failure(line: string): { kind: string; message: string } {
  try {
    parse(line);
  } catch (err) {
    return { kind: err instanceof CtParameterError ? 'parameter' : err instanceof CtFailure ? 'other' : 'unexpected', message: (err as Error).message };
  }
  throw new Error(`${line} parsed`);
}

describe('conntrack-tools syntax', () => {
  it('is told apart from our subcommands by the leading command option', () => {
    expect(isConntrackToolsSyntax(['-L'])).toBe(true);
    expect(isConntrackToolsSyntax(['-Lo', 'id'])).toBe(true);
    expect(isConntrackToolsSyntax(['--dump'])).toBe(true);
    expect(isConntrackToolsSyntax(['-E', '-o', 'id'])).toBe(true);
    expect(isConntrackToolsSyntax(['list', '-p', 'tcp'])).toBe(false);
    expect(isConntrackToolsSyntax(['--netns', '/run/netns/x'])).toBe(false);
    expect(isConntrackToolsSyntax(['--json'])).toBe(false);
    expect(isConntrackToolsSyntax([])).toBe(false);
    expect(isConntrackToolsSyntax(['--netns', '/run/netns/x', '-L'])).toBe(true);
    expect(isConntrackToolsSyntax(['--netns=1234', '-C'])).toBe(true);
    expect(parseConntrackArgs(['--netns', '/run/netns/x', '-D', '-i', '0x10']).id).toBe(16);
  });

  it('parses a listing with filters, a table name and output flags', () => {
    const args = parse('-L conntrack -s 10.0.0.0/8 -p tcp --dport 22 --state LISTEN -m 0x10/0xf0 -u UNREPLIED,!ASSURED -o ext,id --zone 3');
    expect(args.command).toBe('list');
    expect(args.table).toBe('conntrack');
    expect(args.original).toEqual({ src: '10.0.0.0', srcPrefix: 8, dport: 22 });
    expect(args.family).toBe('ipv4');
    expect(args.protocol).toEqual({ name: 'tcp', number: 6 });
    expect(args.state).toBe('LISTEN');
    expect(args.mark).toEqual({ value: 16, mask: 240 });
    expect(args.status).toEqual({ set: [], unset: ['SEEN_REPLY', 'ASSURED'] });
    expect([...args.output]).toEqual(['extended', 'id']);
    expect(args.zone).toBe(3);
  });

  it('takes unique prefixes of long options, = values and an attached short value', () => {
    expect(parse('--dump --proto=udp --orig-port-dst 53').protocol?.number).toBe(17);
    expect(parse('--dump --proto=udp --dp 53').original.dport).toBe(53);
    expect(parse('-L -pudp').protocol?.number).toBe(17);
    expect(parse('-E -e NEW,DESTROY -b 212992').events).toEqual(['new', 'destroy']);
    expect(parse('-E -o jsonl').output.has('jsonl')).toBe(true);
    expect(parse('-L -p 132').protocol).toEqual({ name: 'sctp', number: 132 });
    expect(parse('-L -p ospf').protocol).toEqual({ name: 'unknown', number: 89 });
  });

  it('knows protocol options only after -p, as getopt in conntrack-tools does', () => {
    expect(failure('-L --state LISTEN -p tcp')).toEqual({ kind: 'parameter', message: "unknown option `--state'" });
    expect(failure('-L -p tcp --state BOGUS')).toEqual({ kind: 'parameter', message: "unknown TCP state `BOGUS'" });
  });

  it('gives conntrack-tools\' messages for the option table and pairs', () => {
    expect(failure('-I -s 1.1.1.1 -d 2.2.2.2 -p tcp --sport 1 --dport 2 -t 5').message).toBe("You need to supply the `--state' option for this command");
    expect(failure('-I -s 1.1.1.1 -d 2.2.2.2 -p tcp --sport 1 --dport 2 --state LISTEN').message).toBe("You need to supply the `--timeout' option for this command");
    expect(failure('-I -s 1.1.1.1 -p tcp --sport 1 --dport 2 --state LISTEN -t 5').message).toBe("you have to specify `--src' and `--dst'");
    expect(failure('-G -r 1.1.1.1 -p tcp --sport 1 --dport 2').message).toBe("you have to specify `--reply-src' and `--reply-dst'");
    expect(failure('-I -s 1.1.1.1 -d 2.2.2.2 -p udp --sport 1 -t 5').message).toBe("you have to specify `--sport' and `--dport'");
    expect(failure('-I -s 1.1.1.1 -d 2.2.2.2 -p icmp --icmp-type 8 -t 5').message).toBe("You need to supply the `--icmp-code' option for this command");
    expect(failure('-L -t 5').message).toBe("Illegal option `--timeout' with this command");
    expect(failure('-L -D')).toEqual({ kind: 'parameter', message: 'Invalid commands combination' });
    expect(failure('-L -r 1.2.3.0/24').message).toBe("CIDR notation unavailable for `--reply-src'");
    expect(failure('-L -s 1.2.3.4 -d ::1').message).toBe('mismatched address family');
    expect(failure('-L -o bogus').message).toBe("Bad parameter `bogus'");
    expect(failure('-L -m abc')).toEqual({ kind: 'other', message: "unexpected value 'abc' with -m option" });
    expect(failure('-L bogus').message).toBe("unknown type `bogus'");
    expect(failure('-D dying').message).toBe("Can't do that command with tables `dying' and `unconfirmed'");
    expect(failure('-L -n 1.1.1.1 -j').message).toBe("cannot specify `--src-nat' or `--dst-nat' with `--any-nat'");
  });

  it('creates from a reply tuple alone and takes NAT filters with a port', () => {
    const args = parse('-I -r 2.2.2.2 -q 1.1.1.1 -p tcp --reply-port-src 11 --reply-port-dst 21 --state LISTEN -u SEEN_REPLY -t 50');
    expect(args.reply).toEqual({ src: '2.2.2.2', dst: '1.1.1.1', sport: 11, dport: 21 });
    expect(args.original).toEqual({});
    expect(parse('-L --dst-nat 10.0.0.1:8080').dstNat).toEqual({ address: '10.0.0.1', port: 8080 });
    expect(parse('-L -j').anyNat).toEqual({});
  });
});

describe('the expectation table: -I, -G and -D expect', () => {
  const MASTER = '-s 10.0.0.1 -d 10.0.0.2 -p tcp --sport 40000 --dport 21';
  const EXPECTED = '--tuple-src 10.0.0.2 --tuple-dst 10.0.0.1 --tuple-port-src 0 --tuple-port-dst 1600 --mask-src 255.255.255.255 --mask-dst 255.255.255.255 --mask-port-src 0 --mask-port-dst 65535';

  it('-I expect: -s/-d/-p/--sport/--dport name the master, --tuple-* the expected connection, --mask-* its mask', () => {
    const args = parse(`-I expect ${MASTER} ${EXPECTED} -t 60`);
    expect(args.command).toBe('create');
    expect(args.table).toBe('expect');
    expect(args.original).toEqual({ src: '10.0.0.1', dst: '10.0.0.2', sport: 40000, dport: 21 });
    expect(args.expect).toEqual({
      tuple: { src: '10.0.0.2', dst: '10.0.0.1', sport: 0, dport: 1600 },
      mask: { src: '255.255.255.255', dst: '255.255.255.255', sport: 0, dport: 65535 },
    });
    expect(args.timeout).toBe(60);
  });

  it('a CIDR prefix on --tuple-src or -s sets the mask, as conntrack-tools does; the last write wins', () => {
    const fromTuple = parse(`-I expect ${MASTER} --tuple-src 10.1.0.0/16 --tuple-dst 10.0.0.1 --tuple-port-src 0 --tuple-port-dst 1600 --mask-dst 255.255.255.255 --mask-port-src 0 --mask-port-dst 65535 -t 60`);
    expect(fromTuple.expect.mask.src).toBe('255.255.0.0');
    expect(fromTuple.expect.tuple.src).toBe('10.1.0.0');
    const fromMaster = parse(`-I expect -s 10.0.0.0/8 -d 10.0.0.2 -p tcp --sport 1 --dport 21 ${EXPECTED.replace('--mask-src 255.255.255.255 ', '')} -t 60`);
    expect(fromMaster.expect.mask.src).toBe('255.0.0.0');
    expect(fromMaster.original.srcPrefix).toBeUndefined();
    const masked = parse(`-I expect -s 10.0.0.0/8 -d 10.0.0.2 -p tcp --sport 1 --dport 21 ${EXPECTED} -t 60`);
    expect(masked.expect.mask.src).toBe('255.255.255.255');
    expect(netmaskText(64, 6)).toBe('ffff:ffff:ffff:ffff:0:0:0:0');
    expect(netmaskText(0, 4)).toBe('0.0.0.0');
  });

  it('-G and -D expect take the expected connection as -s -d -p and all four ports', () => {
    const args = parse('-G expect -s 10.0.0.2 -d 10.0.0.1 -p udp --sport 5 --dport 69 --reply-port-src 69 --reply-port-dst 5');
    expect(args.command).toBe('get');
    expect(args.original).toEqual({ src: '10.0.0.2', dst: '10.0.0.1', sport: 5, dport: 69 });
    expect(parse('-D expect -s 10.0.0.2 -d 10.0.0.1 -p tcp --sport 5 --dport 1600 --reply-port-src 1 --reply-port-dst 2').command).toBe('delete');
  });

  it("gives conntrack-tools' messages for the expectation option table (checked against conntrack-tools 1.4.7)", () => {
    const need = (name: string) => `You need to supply the \`--${name}' option for this command`;
    const illegal = (name: string) => `Illegal option \`--${name}' with this command`;
    expect(failure(`-I expect ${MASTER} ${EXPECTED}`)).toEqual({ kind: 'parameter', message: need('timeout') });
    expect(failure(`-I expect ${MASTER} -t 5`).message).toBe(need('tuple-src'));
    expect(failure(`-I expect -p tcp --sport 1 --dport 2 ${EXPECTED} -t 5`).message).toBe(need('src'));
    expect(failure(`-I expect ${MASTER} ${EXPECTED} -t 5 --zone 3`).message).toBe(illegal('zone'));
    expect(failure(`-I expect ${MASTER} ${EXPECTED} -t 5 -f ipv4`).message).toBe(illegal('family'));
    expect(failure(`-I expect ${MASTER} ${EXPECTED} -t 5 --state ESTABLISHED`).message).toBe(illegal('state'));
    expect(failure(`-I expect ${MASTER} ${EXPECTED} -t 5 --reply-port-src 3`).message).toBe(illegal('reply-port-src'));
    expect(failure(`-I expect ${MASTER} ${EXPECTED} -t 5 --helper ftp`).message).toBe("unknown option `--helper'");
    expect(failure(`-I expect ${MASTER} ${EXPECTED.replace(/--tuple-port-src 0 /, '')} -t 5`).message).toBe(need('tuple-port-src'));
    expect(failure(`-I expect ${MASTER} ${EXPECTED.replace(/--mask-port-src 0 /, '')} -t 5`).message).toBe(need('mask-port-src'));
    // -u, -r and -q are taken (and, as in conntrack-tools, change nothing).
    expect(parse(`-I expect ${MASTER} ${EXPECTED} -t 5 -u ASSURED -r 1.1.1.1 -q 2.2.2.2`).command).toBe('create');
    expect(failure('-G expect -s 10.0.0.1 -d 10.0.0.2 -p udp').message).toBe(need('sport'));
    expect(failure('-G expect -s 10.0.0.1 -d 10.0.0.2 -p tcp --sport 5 --dport 1600').message).toBe(need('reply-port-src'));
    expect(failure('-G expect -s 10.0.0.0/24 -d 10.0.0.2 -p tcp --sport 5 --dport 1600 --reply-port-src 1 --reply-port-dst 2').message).toBe(illegal('mask-src'));
    expect(failure('-D expect -s 10.0.0.1 -d 10.0.0.2 -p tcp --sport 5 --dport 1 --reply-port-src 1 --reply-port-dst 2 -o xml').message).toBe(illegal('output'));
    expect(failure('-E expect -e NEW').message).toBe(illegal('event-mask'));
    expect(failure('-E expect -p tcp').message).toBe(illegal('protonum'));
    expect(failure('-I expect -s 10.0.0.1 -d 10.0.0.2 -p tcp --sport 1 --dport 21 --tuple-src ::1 -t 5').message).toBe('mismatched address family');
    // In the conntrack table the expectation options mean nothing.
    expect(failure('-L --tuple-src 1.2.3.4').message).toBe(illegal('tuple-src'));
    expect(failure('-L -p tcp --mask-port-src 1').message).toBe(illegal('mask-port-src'));
    expect(failure('-D -p udp --tuple-port-dst 1').message).toBe(illegal('tuple-port-dst'));
  });
});

describe('conntrack-tools text pieces', () => {
  it('ctime() is C\'s layout, day padded with a blank', () => {
    expect(ctime(Date.UTC(2026, 11, 2, 2, 33, 16) / 1000 + new Date(Date.UTC(2026, 11, 2)).getTimezoneOffset() * 60)).toBe('Wed Dec  2 02:33:16 2026');
  });

  it('event timestamps have six microsecond digits', () => {
    expect(eventTimestamp(1_700_000_000_000_042)).toBe('[1700000000.000042]\t');
  });

  it('expectation timestamps are printf\'s %-8ld.%-6ld: padded with blanks on the right', () => {
    expect(expectationTimestamp(1_700_000_000_000_042)).toBe('[1700000000.42    ]\t');
    expect(expectationTimestamp(1_700_000_000_123_456)).toBe('[1700000000.123456]\t');
  });

  it('an expectation in XML: layer3 and layer4 of the expected tuple, mask and master, then meta and flags', () => {
    const tuple = (src: string, dst: string, sport: number, dport: number) => ({
      src, dst, protocolNumber: 6, protocol: 'tcp' as const, sport, dport, icmpType: undefined, icmpCode: undefined, icmpId: undefined, zone: undefined,
    });
    const x = {
      id: 1, family: 'ipv4', tuple: tuple('10.0.0.2', '10.0.0.1', 0, 1600), mask: tuple('255.255.255.255', '255.255.255.255', 0, 65535),
      master: tuple('10.0.0.1', '10.0.0.2', 40000, 21), timeout: 299, helper: 'ftp', class: 0, flagBits: 5, flags: ['PERMANENT', 'USERSPACE'],
      zone: 3, nat: undefined, fn: undefined,
    } as ConntrackExpectation;
    expect(formatExpectationXml(x, 'new')).toBe(
      '<flow type="new"><layer3 protonum="2" protoname="ipv4"><expected><src>10.0.0.2</src><dst>10.0.0.1</dst></expected>'
      + '<mask><src>255.255.255.255</src><dst>255.255.255.255</dst></mask><master><src>10.0.0.1</src><dst>10.0.0.2</dst></master></layer3>'
      + '<layer4 protonum="6" protoname="tcp"><expected><sport>0</sport><dport>1600</dport></expected><mask><sport>0</sport><dport>65535</dport></mask>'
      + '<master><sport>40000</sport><dport>21</dport></master></layer4>'
      + '<meta><helper-name>ftp</helper-name><timeout>299</timeout><class>0</class><zone>3</zone><permanent/><userspace/></meta></flow>',
    );
  });

  it('-S lines: cpu padded to four, counters in attribute order, unknown ones numbered', () => {
    const text = formatCpuStats([{ cpu: 1, counters: { drop: 2, found: 1, chaintoolong: 3 }, unknown: { 16: 9 } }]);
    expect(text).toBe('cpu=1   \tfound=1 drop=2 chaintoolong=3 unknown1=9 \n');
  });
});

describe('labels (-o labels, -l) through a connlabel.conf', () => {
  it('reads BIT NAME lines, and prints the named bits of an entry as conntrack-tools does', () => {
    const dir = mkdtempSync(join(tmpdir(), 'connlabel-'));
    const file = join(dir, 'connlabel.conf');
    writeFileSync(file, '# comment\n0 eth-in\n3\tblocked\n3 again\n');
    const map = readLabelMap(file);
    expect(map).toEqual(new Map([[0, 'eth-in'], [3, 'blocked']]));
    expect(readLabelMap(join(dir, 'missing'))).toBeUndefined();
    const tuple = { src: '10.0.0.1', dst: '10.0.0.2', protocolNumber: 17, protocol: 'udp' as const, sport: 1, dport: 2, icmpType: undefined, icmpCode: undefined, icmpId: undefined, zone: undefined };
    const entry = {
      id: 1, family: 'ipv4', original: tuple, reply: { ...tuple, src: '10.0.0.2', dst: '10.0.0.1', sport: 2, dport: 1 }, master: undefined,
      status: 2, flags: ['SEEN_REPLY'], timeout: 30, mark: 0, secmark: undefined, secctx: undefined, zone: undefined, use: 1,
      counters: undefined, timestamp: undefined, tcp: undefined, sctp: undefined, dccp: undefined, helper: undefined,
      labels: [0, 3, 5], seqAdjust: undefined, synproxy: undefined,
    } as ConntrackEntry;
    const flags = { layer3: false, id: false, ktimestamp: false, labelNames: map };
    expect(formatLine(entry, flags, 0)).toBe('udp      17 30 src=10.0.0.1 dst=10.0.0.2 sport=1 dport=2 src=10.0.0.2 dst=10.0.0.1 sport=2 dport=1 mark=0 use=1 labels=eth-in,blocked');
    // No named bit: libnetfilter_conntrack's "labels" without '='.
    expect(formatLine({ ...entry, labels: [5] }, flags, 0)).toMatch(/ use=1 labels$/);
    expect(formatLine(entry, { ...flags, labelNames: undefined }, 0)).toMatch(/ use=1$/);
  });
});
