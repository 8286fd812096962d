import { describe, expect, it } from 'vitest';
import { changesSpec, newEntrySpec, targetSpec, tupleSpec } from '../../../lib/table/entry-spec.js';
import type { ConntrackEntry, NewEntry, TupleSpec } from '../../../lib/base/types.js';

const TCP: TupleSpec = { protocol: 'tcp', src: '10.0.0.1', dst: '10.0.0.2', sport: 1000, dport: 1883 };

function expectInvalid(run: () => unknown, message: RegExp): void {
  expect(run).toThrow(expect.objectContaining({ code: 'ERR_CONNTRACK_INVALID_ARGUMENT', message: expect.stringMatching(message) }));
}

describe('entry specs for get/create/update/delete', () => {
  it('encodes addresses as bytes, with the family from them', () => {
    expect(tupleSpec(TCP, 't')).toEqual({ family: 2, native: { src: Uint8Array.of(10, 0, 0, 1), dst: Uint8Array.of(10, 0, 0, 2), proto: 6, sport: 1000, dport: 1883 } });
    const v6 = tupleSpec({ protocol: 'udp', src: '::1', dst: '2001:db8::2', sport: 1, dport: 2 }, 't');
    expect(v6.family).toBe(10);
    expect([...v6.native.dst]).toEqual([0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
  });

  it('mirrors the reply, and answers ICMP queries with their reply type', () => {
    const tcp = newEntrySpec({ original: TCP, timeout: 10 });
    expect(tcp.reply).toMatchObject({ src: Uint8Array.of(10, 0, 0, 2), dst: Uint8Array.of(10, 0, 0, 1), sport: 1883, dport: 1000 });
    expect(tcp.tcpState).toBe(3); // ESTABLISHED by default
    const ping = newEntrySpec({ original: { protocol: 'icmp', src: '10.0.0.1', dst: '10.0.0.2', icmpType: 8, icmpId: 9 }, timeout: 10 });
    expect(ping.reply).toMatchObject({ icmpType: 0, icmpCode: 0, icmpId: 9 });
    const ping6 = newEntrySpec({ original: { protocol: 'icmpv6', src: '::1', dst: '::2', icmpType: 128, icmpId: 9 }, timeout: 10 });
    expect(ping6.reply).toMatchObject({ icmpType: 129 });
    expectInvalid(() => newEntrySpec({ original: { protocol: 'icmp', src: '10.0.0.1', dst: '10.0.0.2', icmpType: 3, icmpId: 0 }, timeout: 10 }), /not a query/);
  });

  it('adds CONFIRMED to the flags of a new entry (the kernel refuses to change it)', () => {
    expect(newEntrySpec({ original: TCP, timeout: 10, flags: ['SEEN_REPLY', 'ASSURED'] }).status).toBe(0b1110);
    expect(newEntrySpec({ original: TCP, timeout: 10 }).status).toBeUndefined();
  });

  it('names an entry by its original tuple, zone and id', () => {
    const entry = {
      id: 77, zone: 3,
      original: { src: '10.0.0.1', dst: '10.0.0.2', protocolNumber: 17, protocol: 'udp', sport: 5, dport: 6, icmpType: undefined, icmpCode: undefined, icmpId: undefined, zone: undefined },
    } as unknown as ConntrackEntry;
    expect(targetSpec(entry)).toMatchObject({ family: 2, id: 77, zone: 3, orig: { proto: 17, sport: 5, dport: 6 } });
    expect(targetSpec({ ...TCP, zone: 4 })).toMatchObject({ zone: 4 });
    expect(targetSpec(TCP).id).toBeUndefined();
  });

  it('encodes label bits as four words, with a mask for add/remove and all bits for a list', () => {
    expect([...(newEntrySpec({ original: TCP, timeout: 10, labels: [0, 33, 127] }).labels ?? [])]).toEqual([1, 2, 0, 0x80000000]);
    const replace = changesSpec(TCP, { labels: [5] });
    expect([...(replace.labels ?? [])]).toEqual([32, 0, 0, 0]);
    expect([...(replace.labelsMask ?? [])]).toEqual([0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff]);
    const change = changesSpec(TCP, { labels: { add: [64], remove: [1] } });
    expect([...(change.labels ?? [])]).toEqual([0, 0, 1, 0]);
    expect([...(change.labelsMask ?? [])]).toEqual([2, 0, 1, 0]);
  });

  it('rejects what the kernel would refuse or misread', () => {
    const cases: Array<[() => unknown, RegExp]> = [
      [() => tupleSpec({ ...TCP, src: '10.0.0' }, 't'), /t\.src must be an IPv4 or IPv6 address/],
      [() => tupleSpec({ ...TCP, src: 'fe80::1%eth0' }, 't'), /t\.src/],
      [() => tupleSpec({ ...TCP, dst: '::2' }, 't'), /one family/],
      [() => tupleSpec({ ...TCP, dport: undefined }, 't'), /t\.dport/],
      [() => tupleSpec({ ...TCP, sport: 1.5 }, 't'), /t\.sport/],
      [() => tupleSpec({ ...TCP, protocol: 'tcp6' as never }, 't'), /protocol name/],
      [() => tupleSpec({ protocol: 47, src: '10.0.0.1', dst: '10.0.0.2', sport: 1, dport: 2 }, 't'), /no ports/],
      [() => tupleSpec({ protocol: 'icmpv6', src: '10.0.0.1', dst: '10.0.0.2', icmpType: 128, icmpId: 1 }, 't'), /icmpv6 with IPv6/],
      [() => newEntrySpec({ original: TCP } as NewEntry), /timeout/],
      [() => newEntrySpec({ original: TCP, timeout: 0 }), /at least 1 second/],
      [() => newEntrySpec({ original: TCP, timeout: 10, reply: { ...TCP, protocol: 'udp' } }), /family and protocol/],
      [() => newEntrySpec({ original: TCP, timeout: 10, mark: 2 ** 32 }), /mark/],
      [() => newEntrySpec({ original: TCP, timeout: 10, flags: ['NOPE' as never] }), /unknown status flag/],
      [() => changesSpec(TCP, {}), /mark, timeout or labels/],
      [() => changesSpec(TCP, { labels: [128] }), /label bit 128/],
      [() => changesSpec(TCP, { labels: { add: [1], remove: [1] } }), /both added and removed/],
      [() => changesSpec(TCP, { labels: {} }), /nothing to add or remove/],
      [() => newEntrySpec({ original: TCP, timeout: 10, labels: [-1] }), /label bit -1/],
      [() => changesSpec(TCP, { timeout: -1 }), /changes\.timeout/],
      [() => targetSpec(null as never), /tuple or an entry/],
    ];
    for (const [run, message] of cases) expectInvalid(run, message);
  });
});
