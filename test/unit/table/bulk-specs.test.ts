/**
 * What bulk changes and expectations hand the addon: NAT ranges on a new entry, spec records
 * (slot by slot, against the layout the addon exports), the fast IPv4 parser (against node:net),
 * and expectation specs.
 */
import { isIPv4 } from 'node:net';
import { describe, expect, it } from 'vitest';

import { RECORD_LAYOUT } from '../../../lib/binding/layout.generated.js';
import { newEntrySpec, changesSpec } from '../../../lib/table/entry-spec.js';
import { parseAddress } from '../../../lib/table/filter.js';
import { SPEC_SLOTS, SpecRecords } from '../../../lib/table/spec-records.js';
import { expectationDumpSpec, expectationTargetSpec, newExpectationSpec } from '../../../lib/table/expectations.js';
import type { NewEntry, TupleSpec } from '../../../lib/base/types.js';

const UDP: TupleSpec = { protocol: 'udp', src: '10.0.0.1', dst: '10.0.0.2', sport: 1000, dport: 53 };

function expectInvalid(run: () => unknown, message: RegExp): void {
  expect(run).toThrow(expect.objectContaining({ code: 'ERR_CONNTRACK_INVALID_ARGUMENT', message: expect.stringMatching(message) }));
}

describe('NAT ranges on a new entry', () => {
  it('encodes an address (or range) and a port (or range); the reply stays the mirrored original', () => {
    const spec = newEntrySpec({ original: UDP, timeout: 10, srcNat: { address: '192.168.1.1', port: 5000 }, dstNat: { address: ['10.9.9.1', '10.9.9.9'] } });
    expect(spec.natSrc).toEqual({ min: Uint8Array.of(192, 168, 1, 1), max: Uint8Array.of(192, 168, 1, 1), minPort: 5000, maxPort: 5000 });
    expect(spec.natDst).toEqual({ min: Uint8Array.of(10, 9, 9, 1), max: Uint8Array.of(10, 9, 9, 9) });
    expect(spec.reply).toMatchObject({ src: Uint8Array.of(10, 0, 0, 2), sport: 53, dport: 1000 });
    const v6 = newEntrySpec({ original: { ...UDP, src: 'fd00::1', dst: 'fd00::2' }, timeout: 10, dstNat: { address: 'fd00::9', port: [53, 60] } });
    expect(v6.natDst?.max[15]).toBe(9);
    expect([v6.natDst?.minPort, v6.natDst?.maxPort]).toEqual([53, 60]);
  });

  it('refuses another family, reversed ranges, ports out of range or on portless protocols', () => {
    const base: NewEntry = { original: UDP, timeout: 10 };
    expectInvalid(() => newEntrySpec({ ...base, srcNat: { address: 'fd00::1' } }), /family/);
    expectInvalid(() => newEntrySpec({ ...base, srcNat: { address: ['10.0.0.9', '10.0.0.1'] } }), /first address is after/);
    expectInvalid(() => newEntrySpec({ ...base, srcNat: { address: '10.0.0.1', port: 65536 } }), /port/);
    expectInvalid(() => newEntrySpec({ ...base, srcNat: { address: '10.0.0.1', port: [9, 8] } }), /first port is after/);
    expectInvalid(() => newEntrySpec({ original: { protocol: 'icmp', src: '10.0.0.1', dst: '10.0.0.2', icmpType: 8, icmpId: 1 }, timeout: 10, dstNat: { address: '10.0.0.3', port: 1 } }), /has no ports/);
    expectInvalid(() => newEntrySpec({ ...base, dstNat: '10.0.0.1' as never }), /address, port/);
  });
});

describe('spec records', () => {
  const L = RECORD_LAYOUT;

  it('write each part in the slots the addon reads, with the fields bits that say which are there', () => {
    const records = new SpecRecords(2);
    records.push(newEntrySpec({ original: UDP, timeout: 30, mark: 7, zone: 4, labels: [1, 40], srcNat: { address: '192.168.1.1', port: [5000, 5010] } }));
    records.push(changesSpec({ ...UDP, zone: 4 }, { mark: 9 }));
    expect(records.count).toBe(2);
    expect(SPEC_SLOTS).toBe(L.specSlot.count);
    const r = records.words;
    const f = L.specField;
    expect(r[L.specSlot.fields]).toBe(f.orig | f.reply | f.mark | f.timeout | f.zone | f.labels | f.natSrc);
    expect([r[L.specSlot.family], r[L.specSlot.mark], r[L.specSlot.timeout], r[L.specSlot.zone]]).toEqual([2, 7, 30, 4]);
    expect([...r.subarray(L.specSlot.labels, L.specSlot.labels + 4)]).toEqual([2, 1 << 8, 0, 0]);
    const orig = L.specSlot.orig;
    const has = L.tupleHas;
    expect(r[orig + L.specTuple.has]).toBe(has.proto | has.src | has.dst | has.ports);
    expect(r[orig + L.specTuple.proto]).toBe(17 << L.tupleWord.proto);
    expect(r[orig + L.specTuple.ports]).toBe(((1000 << L.tupleWord.sport) | (53 << L.tupleWord.dport)) >>> 0);
    const byte = (slot: number) => records.bytes.subarray(slot * 4, slot * 4 + 4);
    expect([...byte(orig + L.specTuple.src)]).toEqual([10, 0, 0, 1]);
    expect([...byte(L.specSlot.reply + L.specTuple.src)]).toEqual([10, 0, 0, 2]);
    const nat = L.specSlot.natSrc;
    expect([...byte(nat + L.specNat.min)]).toEqual([192, 168, 1, 1]);
    expect(r[nat + L.specNat.ports]).toBe((5000 | (5010 << 16)) >>> 0);
    expect(r[nat + L.specNat.hasPorts]).toBe(1);
    // The second record: an update names the entry (no reply) and carries only the mark.
    const second = SPEC_SLOTS;
    expect(r[second + L.specSlot.fields]).toBe(f.orig | f.zone | f.mark);
    expect(r[second + L.specSlot.mark]).toBe(9);
  });

  it('clear a reused record: nothing of the previous item leaks into the next', () => {
    const records = new SpecRecords(1);
    records.push(newEntrySpec({ original: UDP, timeout: 30, mark: 7, srcNat: { address: '192.168.1.1' } }));
    records.count = 0;
    records.push(newEntrySpec({ original: { ...UDP, protocol: 'icmp', sport: undefined, dport: undefined, icmpType: 8, icmpId: 3 }, timeout: 5 }));
    const L2 = RECORD_LAYOUT;
    expect(records.words[L2.specSlot.mark]).toBe(0);
    expect(records.words[L2.specSlot.natSrc + L2.specNat.min]).toBe(0);
    expect((records.words[L2.specSlot.fields] as number) & L2.specField.natSrc).toBe(0);
  });
});

describe('IPv4 parsing', () => {
  it('accepts exactly what node:net isIPv4 accepts, with the same bytes', () => {
    const samples = ['0.0.0.0', '255.255.255.255', '1.2.3.4', '01.2.3.4', '1.2.3.04', '256.1.1.1', '1.2.3', '1.2.3.4.5', ' 1.2.3.4',
      '1.2.3.4 ', '1..3.4', '1.2.3.', '.1.2.3', '1.2.3.-4', '1.2.3.1000', '12.34.56.78', '0.00.0.0', '::ffff:1.2.3.4', 'a.b.c.d', ''];
    for (const text of samples) {
      const parsed = parseAddress(text);
      expect(parsed?.family === 2, text).toBe(isIPv4(text));
      if (isIPv4(text)) expect([...(parsed?.bytes ?? [])], text).toEqual(text.split('.').map(Number));
    }
  });
});

describe('expectation specs', () => {
  const master: TupleSpec = { protocol: 'tcp', src: '10.0.0.1', dst: '10.0.0.2', sport: 40000, dport: 21 };
  const tuple: TupleSpec = { protocol: 'tcp', src: '10.0.0.1', dst: '10.0.0.2', sport: 0, dport: 50000 };

  it('default to a mask of the exact addresses and destination port, any source port', () => {
    const spec = newExpectationSpec({ master, tuple, timeout: 60 });
    expect(spec.mask).toEqual({ src: Uint8Array.of(255, 255, 255, 255), dst: Uint8Array.of(255, 255, 255, 255), proto: 6, sport: 0, dport: 0xffff });
    expect(spec).toMatchObject({ family: 2, timeout: 60, master: { sport: 40000, dport: 21 }, tuple: { dport: 50000 } });
    expect(newExpectationSpec({ master, tuple, timeout: 60, mask: { src: '255.255.255.0' } }).mask?.src).toEqual(Uint8Array.of(255, 255, 255, 0));
  });

  it('encode flags, class, helper, zone, function and a NAT target (a whole tuple, as the kernel parses it)', () => {
    const spec = newExpectationSpec({ master, tuple, timeout: 60, flags: ['PERMANENT', 'INACTIVE'], class: 1, helper: 'ftp', zone: 3, fn: 'nat-follow-master', nat: { dir: 'reply', address: '10.0.0.9', port: 2121 } });
    expect(spec).toMatchObject({ flags: 3, class: 1, helper: 'ftp', zone: 3, fn: 'nat-follow-master', natDir: 1 });
    expect(spec.natTuple).toEqual({ src: Uint8Array.of(10, 0, 0, 9), dst: Uint8Array.of(10, 0, 0, 9), proto: 6, sport: 2121, dport: 0 });
  });

  it('refuse what the kernel would refuse or misread', () => {
    expectInvalid(() => newExpectationSpec({ master, tuple, timeout: 0 }), /timeout/);
    expectInvalid(() => newExpectationSpec({ master: { ...master, src: '::1', dst: '::2' }, tuple, timeout: 1 }), /one family/);
    expectInvalid(() => newExpectationSpec({ master, tuple, timeout: 1, flags: ['USERSPACE', 'NOPE'] as never }), /unknown expectation flag/);
    expectInvalid(() => newExpectationSpec({ master, tuple, timeout: 1, mask: { dst: '::' } }), /mask.dst/);
    expectInvalid(() => newExpectationSpec({ master, tuple: { protocol: 'gre', src: '10.0.0.1', dst: '10.0.0.2' }, timeout: 1, mask: { sport: 1 } }), /no ports/);
    expectInvalid(() => newExpectationSpec({ master, tuple, timeout: 1, helper: 'x'.repeat(16) }), /helper/);
    expectInvalid(() => newExpectationSpec({ master, tuple, timeout: 1, nat: { dir: 'both' as never, address: '10.0.0.9' } }), /nat must be/);
    expectInvalid(() => expectationDumpSpec({ colour: 'red' } as never), /unknown expectation filter key/);
    expectInvalid(() => expectationTargetSpec(null as never), /tuple or an expectation/);
  });

  it('send the dump\'s family and master to the kernel', () => {
    expect(expectationDumpSpec(undefined)).toEqual({ family: 0 });
    expect(expectationDumpSpec({ family: 'ipv6' })).toEqual({ family: 10 });
    expect(expectationDumpSpec({ master: { ...master, zone: 2 } })).toMatchObject({ family: 2, zone: 2, master: { sport: 40000 } });
    expect(expectationDumpSpec({ protocol: 'tcp', helper: 'ftp' })).toEqual({ family: 0 });
  });
});
