/**
 * The oracle's parsers, on real conntrack 1.4.7 output captured on this kind of machine
 * (test/fixtures/conntrack-tools/README.md says what each table held).
 */
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import {
  mergeOracleViews, parseConntrackCount, parseConntrackLine, parseConntrackStats, parseConntrackText,
  parseConntrackXml, parseIdFromLine, parseShownCount, type OracleEntry,
} from '../../helpers/oracle.js';

const fixture = (name: string): string =>
  readFileSync(new URL(`../../fixtures/conntrack-tools/${name}`, import.meta.url), 'utf8');

function only(entries: readonly OracleEntry[], what: string, match: (e: OracleEntry) => boolean): OracleEntry {
  const found = entries.filter(match);
  expect(found, what).toHaveLength(1);
  return found[0] as OracleEntry;
}

describe('parseConntrackXml on table A', () => {
  const entries = parseConntrackXml(fixture('list.xml'));

  it('parses as many entries as the tool reported', () => {
    expect(parseShownCount(fixture('list.xml.stderr'))).toBe(8);
    expect(entries).toHaveLength(8);
    expect(new Set(entries.map((e) => e.id)).size).toBe(8);
  });

  it('reads an ESTABLISHED TCP entry with mark, counters and a nanosecond start time', () => {
    const e = only(entries, 'tcp to 7100', (x) => x.original.dport === 7100);
    expect(e).toMatchObject({
      id: 1246402043,
      family: 'ipv4',
      original: { src: '127.0.0.1', dst: '127.0.0.1', protocol: 'tcp', protocolNumber: 6, sport: 59170, dport: 7100, zone: undefined },
      reply: { src: '127.0.0.1', dst: '127.0.0.1', sport: 7100, dport: 59170 },
      flags: ['SEEN_REPLY', 'ASSURED'],
      timeout: 431999,
      mark: 42,
      zone: undefined,
      use: 1,
      counters: { original: { packets: 4, bytes: 221 }, reply: { packets: 3, bytes: 169 } },
      tcp: { state: 'ESTABLISHED', stateNumber: 3 },
      helper: undefined,
      labels: undefined,
      status: undefined,
    });
    // Beyond 2^53: must come through as an exact bigint.
    expect(e.timestamp).toEqual({ start: 1795604380709218822n, stop: undefined });
  });

  it('reads TIME_WAIT, an UNREPLIED one-way UDP entry and a zone', () => {
    const timeWait = only(entries, 'time wait', (x) => x.tcp?.state === 'TIME_WAIT');
    expect(timeWait.tcp?.stateNumber).toBe(7);
    expect(timeWait.timeout).toBe(119);

    const oneWay = only(entries, 'udp one-way', (x) => x.original.protocol === 'udp' && !x.flags.includes('SEEN_REPLY'));
    expect(oneWay.flags).toEqual([]);
    expect(oneWay.counters?.reply).toEqual({ packets: 0, bytes: 0 });
    expect(oneWay.tcp).toBeUndefined();

    const zoned = only(entries, 'zone 7', (x) => x.zone !== undefined);
    expect(zoned).toMatchObject({ zone: 7, original: { dport: 7200 }, flags: ['SEEN_REPLY'] });
  });

  it('reads labels as bit numbers and IPv6 addresses as printed', () => {
    const labelled = only(entries, 'labelled', (x) => x.labels !== undefined);
    expect(labelled).toMatchObject({ family: 'ipv6', labels: [3], original: { src: '::1', dport: 7300 } });
  });

  it('leaves ICMP type/code/id undefined: the XML printer does not show them', () => {
    const icmp = entries.filter((x) => x.original.protocol === 'icmp' || x.original.protocol === 'icmpv6');
    expect(icmp.map((x) => x.original.protocolNumber).sort()).toEqual([1, 58]);
    for (const e of icmp) {
      expect(e.original.icmpType).toBeUndefined();
      expect(e.original.sport).toBeUndefined();
    }
  });
});

describe('parseConntrackText on table A', () => {
  const xml = parseConntrackXml(fixture('list.xml'));
  const text = parseConntrackText(fixture('list-extended.txt'));

  it('reads ICMP and ICMPv6 echo tuples', () => {
    expect(only(text, 'icmp', (x) => x.original.protocol === 'icmp')).toMatchObject({
      original: { icmpType: 8, icmpCode: 0, icmpId: 7037, sport: undefined },
      reply: { icmpType: 0, icmpCode: 0, icmpId: 7037 },
      id: 817367054,
      timeout: 299,
    });
    expect(only(text, 'icmpv6', (x) => x.original.protocol === 'icmpv6')).toMatchObject({
      family: 'ipv6',
      original: { icmpType: 128, icmpCode: 0, icmpId: 7038 },
      reply: { icmpType: 129, icmpId: 7038 },
    });
  });

  it('agrees with the XML view on every field both show', () => {
    // Two dumps a moment apart: timeout and delta-time may have moved; timestamps only in XML.
    const comparable = (e: OracleEntry) => ({
      ...e, timeout: undefined, deltaTime: undefined, timestamp: undefined,
      original: { ...e.original, icmpType: undefined, icmpCode: undefined, icmpId: undefined },
      reply: { ...e.reply, icmpType: undefined, icmpCode: undefined, icmpId: undefined },
    });
    const byId = new Map(text.map((e) => [e.id, e]));
    expect(text).toHaveLength(xml.length);
    for (const e of xml) {
      const other = byId.get(e.id);
      expect(other, `id ${e.id} in text`).toBeDefined();
      expect(comparable(other as OracleEntry)).toEqual(comparable(e));
    }
  });

  it('takes delta-time but not the local-time [start=...] date', () => {
    for (const e of text) {
      expect(e.timestamp).toBeUndefined();
      expect(e.deltaTime).toBe(1);
    }
  });

  it('reads the default format, without the layer-3 prefix', () => {
    const plain = parseConntrackText(fixture('list-id.txt'));
    expect(plain.map((e) => e.id).sort()).toEqual(xml.map((e) => e.id).sort());
    const v6 = only(plain, 'ipv6 tcp', (x) => x.original.dport === 7300);
    expect(v6.family).toBe('ipv6');
  });
});

describe('mergeOracleViews', () => {
  it('adds ICMP fields from the text view to the XML view, by id', () => {
    const merged = mergeOracleViews(parseConntrackXml(fixture('list.xml')), parseConntrackText(fixture('list-extended-id.txt')));
    const icmp = only(merged, 'icmp', (x) => x.original.protocol === 'icmp');
    expect(icmp.original).toMatchObject({ icmpType: 8, icmpCode: 0, icmpId: 7037 });
    expect(icmp.timestamp?.start).toBeTypeOf('bigint');
    // Non-ICMP tuples stay as the XML had them.
    expect(only(merged, 'tcp 7100', (x) => x.original.dport === 7100).original.icmpType).toBeUndefined();
  });

  it('keeps an XML entry that vanished before the text dump unchanged', () => {
    const xml = parseConntrackXml(fixture('list.xml'));
    expect(mergeOracleViews(xml, [])).toEqual(xml);
  });

  it('takes SCTP state from the text view, OFFLOAD flags too', () => {
    const xml = parseConntrackXml(fixture('list-extras.xml'));
    const text = parseConntrackText(fixture('list-extras-extended.txt'));
    const sctpXml = only(xml, 'sctp', (x) => x.original.protocol === 'sctp');
    // The XML printer names SCTP ESTABLISHED (4) with the TCP table's FIN_WAIT: not used.
    expect(fixture('list-extras.xml')).toMatch(/protoname="sctp".*<state>FIN_WAIT<\/state>/);
    expect(sctpXml.sctp).toBeUndefined();
    const merged = mergeOracleViews(xml, text);
    expect(only(merged, 'sctp', (x) => x.original.protocol === 'sctp').sctp).toMatchObject({ state: 'ESTABLISHED', stateNumber: 4 });

    const offloadedLine = fixture('list-extended-id.txt').split('\n')
      .find((line) => line.includes('dport=7100'))
      ?.replace('[ASSURED]', '[OFFLOAD]') ?? '';
    const offloaded = parseConntrackLine(offloadedLine);
    expect(offloaded.flags).toEqual(['SEEN_REPLY', 'OFFLOAD']);
    const mergedOffload = mergeOracleViews(parseConntrackXml(fixture('list.xml')), [offloaded]);
    expect(only(mergedOffload, 'tcp 7100', (x) => x.original.dport === 7100).flags).toEqual(['SEEN_REPLY', 'ASSURED', 'OFFLOAD']);
  });
});

describe('table B: zones per direction, helper, SCTP, DCCP, GRE', () => {
  const xml = parseConntrackXml(fixture('list-extras.xml'));
  const text = parseConntrackText(fixture('list-extras-extended.txt'));

  it('parses every entry', () => {
    expect(xml).toHaveLength(parseShownCount(fixture('list-extras.xml.stderr')) ?? -1);
    expect(text.map((e) => e.id).sort()).toEqual(xml.map((e) => e.id).sort());
  });

  it('reads a zone set for the original direction only (CTA_TUPLE_ZONE), in both views', () => {
    for (const view of [xml, text]) {
      const zoned = view.filter((x) => x.original.dport === 7400);
      expect(zoned).toHaveLength(2);
      for (const e of zoned) {
        expect(e.original.zone).toBe(5);
        expect(e.reply.zone).toBeUndefined();
        expect(e.zone).toBeUndefined();
      }
    }
  });

  it('reads the helper name in both views', () => {
    for (const view of [xml, text]) {
      const helped = view.filter((x) => x.original.dport === 21);
      expect(helped.map((e) => e.helper)).toEqual(['ftp', 'ftp']);
    }
  });

  it('reads an entry-wide zone on an IPv6 entry', () => {
    expect(only(xml, 'zone 9', (x) => x.zone === 9)).toMatchObject({ family: 'ipv6', original: { src: '2001:db8::1', sport: 53 } });
  });

  it('has no ports for GRE and no state at all for DCCP', () => {
    const gre = only(text, 'gre', (x) => x.original.protocol === 'gre');
    expect(gre.original).toMatchObject({ protocolNumber: 47, sport: undefined, dport: undefined });
    const dccp = only(text, 'dccp', (x) => x.original.protocol === 'dccp');
    expect(dccp.dccp).toBeUndefined();
    expect(dccp.tcp).toBeUndefined();
  });
});

describe('parseConntrackStats', () => {
  it('reads per-CPU counters by the names the tool prints', () => {
    const stats = parseConntrackStats(fixture('stats.txt'));
    expect(stats.perCpu.map((c) => c.cpu)).toEqual([0, 1]);
    expect(Object.keys(stats.perCpu[0]?.counters ?? {})).toEqual([
      'found', 'invalid', 'insert', 'insert_failed', 'drop', 'early_drop', 'error', 'search_restart', 'clash_resolve', 'chaintoolong',
    ]);
  });

  it('keeps non-zero values on their CPU and sums them', () => {
    const stats = parseConntrackStats(fixture('stats-invalid.txt'));
    expect(stats.perCpu[0]?.counters.invalid).toBe(0);
    expect(stats.perCpu[1]?.counters.invalid).toBe(10);
    expect(stats.total.invalid).toBe(10);
    expect(stats.total.drop).toBe(0);
  });

  it('reads expectation statistics', () => {
    const stats = parseConntrackStats(fixture('stats-exp.txt'));
    expect(stats.perCpu).toHaveLength(2);
    expect(stats.total).toEqual({ expect_new: 0, expect_create: 0, expect_delete: 0 });
  });

  it('rejects text without per-CPU lines', () => {
    expect(() => parseConntrackStats('conntrack v1.4.7 (conntrack-tools): error\n')).toThrow(/no per-CPU lines/);
  });
});

describe('count and ids', () => {
  it('parses conntrack -C', () => {
    expect(parseConntrackCount(fixture('count.txt'))).toBe(8);
    expect(() => parseConntrackCount('')).toThrow();
    expect(() => parseConntrackCount('conntrack v1.4.7: Operation not permitted')).toThrow();
  });

  it('takes the entry id, not the ICMP id, from the end of an -o id line', () => {
    const lines = fixture('list-id.txt').trim().split('\n');
    const icmpLine = lines.find((line) => line.startsWith('icmp ')) ?? '';
    expect(icmpLine).toContain('id=7037');
    expect(parseIdFromLine(icmpLine)).toBe(817367054);
    const ids = lines.map(parseIdFromLine);
    expect(ids.sort()).toEqual(parseConntrackXml(fixture('list.xml')).map((e) => e.id).sort());
    expect(parseIdFromLine('tcp 6 10 ESTABLISHED src=1.2.3.4')).toBeUndefined();
  });
});
