/**
 * The native decoder on real kernel messages (test/fixtures/kernel, recorded by
 * record-kernel-fixtures.ts with conntrack-tools' view beside them), and on damaged copies.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';

import { describe, expect, it } from 'vitest';

import { compileFilter } from '../../../lib/table/filter.js';
import { binding, type NativeError } from '../../../lib/binding/native.js';
import { decodeBatch, decodeEventBatch } from '../../../lib/table/records.js';
import { SUMMARY_KEYS, SummaryBuilder, summaryKeyNumbers, type SummaryKey } from '../../../lib/table/summary.js';
import type { ConntrackEntry, EntryFilter } from '../../../lib/base/types.js';
import { flagsOfStatus, parseEnum } from '../../helpers/kernel-uapi.js';
import { KERNEL_FIXTURES, readCapture } from '../../helpers/captures.js';


type OracleJson = Record<string, unknown> & { id: number };
const oracle: OracleJson[] = JSON.parse(readFileSync(join(KERNEL_FIXTURES, 'dump.oracle.json'), 'utf8'));
const datagrams = readCapture('dump.bin');

function decodeAll(filter?: EntryFilter): ConntrackEntry[] {
  const compiled = compileFilter(filter) ?? null;
  return datagrams.flatMap((d) => decodeBatch(binding().decode(d, compiled)));
}

/** Splits a datagram into its netlink messages. */
function messages(datagram: Buffer): Buffer[] {
  const out: Buffer[] = [];
  for (let offset = 0; offset + 16 <= datagram.length;) {
    const length = datagram.readUInt32LE(offset);
    out.push(datagram.subarray(offset, offset + length));
    offset += (length + 3) & ~3;
  }
  return out;
}

/** A copy of one netlink message with an attribute appended at its top level. */
function withAttribute(message: Buffer, type: number, payload: Buffer): Buffer {
  const attrLength = 4 + payload.length;
  const padded = (attrLength + 3) & ~3;
  const attr = Buffer.alloc(padded);
  attr.writeUInt16LE(attrLength, 0);
  attr.writeUInt16LE(type, 2);
  payload.copy(attr, 4);
  const out = Buffer.concat([message, attr]);
  out.writeUInt32LE(out.length, 0);
  return out;
}

function expectProtocolError(run: () => unknown, pattern?: RegExp): void {
  let caught: NativeError | undefined;
  try {
    run();
  } catch (err) {
    caught = err as NativeError;
  }
  expect(caught, 'expected a decoding error').toBeDefined();
  expect(caught?.protocol).toBe(true);
  if (pattern) expect(caught?.message).toMatch(pattern);
}

/**
 * CTA_PROTOINFO_TCP of each entry in the recorded datagrams, read straight from the bytes with the
 * attribute numbers of the kernel's uapi header: an account of the recording independent of the
 * native decoder. Keyed by CTA_ID.
 */
function rawTcpInfo(recorded: readonly Buffer[]): Map<number, { wscaleOriginal: number; wscaleReply: number; flagsOriginal: number; flagsReply: number }> {
  const uapi = readFileSync('/usr/include/linux/netfilter/nfnetlink_conntrack.h', 'utf8');
  const cta = parseEnum(uapi, 'ctattr_type');
  const protoinfo = parseEnum(uapi, 'ctattr_protoinfo');
  const tcpAttr = parseEnum(uapi, 'ctattr_protoinfo_tcp');
  const attributes = (data: Buffer, start: number, end: number): Map<number, Buffer> => {
    const found = new Map<number, Buffer>();
    for (let offset = start; offset + 4 <= end;) {
      const length = data.readUInt16LE(offset);
      if (length < 4) break;
      found.set(data.readUInt16LE(offset + 2) & 0x3fff, data.subarray(offset + 4, offset + length));
      offset += (length + 3) & ~3;
    }
    return found;
  };
  const nested = (data: Buffer | undefined) => (data === undefined ? new Map<number, Buffer>() : attributes(data, 0, data.length));
  const out = new Map<number, { wscaleOriginal: number; wscaleReply: number; flagsOriginal: number; flagsReply: number }>();
  for (const datagram of recorded) {
    for (const message of messages(datagram)) {
      if ((message.readUInt16LE(4) & 0xff) !== 0) continue; // IPCTNL_MSG_CT_NEW only (no DONE, no errors)
      const top = attributes(message, 20, message.length);
      const info = nested(nested(top.get(cta.get('CTA_PROTOINFO') as number)).get(protoinfo.get('CTA_PROTOINFO_TCP') as number));
      if (info.size === 0) continue;
      const byte = (name: string) => info.get(tcpAttr.get(name) as number)?.[0] ?? -1;
      out.set((top.get(cta.get('CTA_ID') as number) as Buffer).readUInt32BE(0), {
        wscaleOriginal: byte('CTA_PROTOINFO_TCP_WSCALE_ORIGINAL'),
        wscaleReply: byte('CTA_PROTOINFO_TCP_WSCALE_REPLY'),
        flagsOriginal: byte('CTA_PROTOINFO_TCP_FLAGS_ORIGINAL'),
        flagsReply: byte('CTA_PROTOINFO_TCP_FLAGS_REPLY'),
      });
    }
  }
  return out;
}

describe('decoding recorded kernel messages', () => {
  const entries = decodeAll();
  const byId = new Map(entries.map((e) => [e.id, e]));

  it('finds the same entries conntrack-tools listed', () => {
    expect(entries.length).toBe(oracle.length);
    expect([...byId.keys()].sort()).toEqual(oracle.map((o) => o.id).sort());
  });

  it('decodes every field conntrack-tools shows, identically', () => {
    for (const o of oracle) {
      const e = byId.get(o.id) as ConntrackEntry;
      expect(e.family).toBe(o.family);
      expect(e.original).toMatchObject(o.original as object);
      expect(e.reply).toMatchObject(o.reply as object);
      expect(e.mark).toBe(o.mark);
      expect(e.zone).toBe(o.zone);
      expect(e.use).toBe(o.use);
      expect(e.labels).toEqual(o.labels);
      expect(e.counters).toEqual(o.counters);
      expect(e.timestamp?.start).toBe(BigInt(String((o.timestamp as { start: string }).start).replace(/n$/, '')));
      expect(e.tcp?.state).toBe((o.tcp as { state?: string } | undefined)?.state);
      // conntrack-tools prints only these flags; the rest are checked through `status` below.
      for (const flag of ['SEEN_REPLY', 'ASSURED'] as const) {
        expect(e.flags.includes(flag), `${flag} of ${o.id}`).toBe((o.flags as string[]).includes(flag));
      }
      // The oracle read the table a moment later: timeouts can only have gone down.
      expect(e.timeout).toBeGreaterThanOrEqual(o.timeout as number);
      expect(e.timeout).toBeLessThanOrEqual((o.timeout as number) + 5);
    }
  });

  it('keeps status bits and names consistent', () => {
    for (const e of entries) {
      expect(e.flags).toContain('CONFIRMED');
      // The names are the status bits as the kernel's header numbers them.
      expect(e.flags).toEqual(flagsOfStatus(e.status));
      expect(Object.isFrozen(e.flags)).toBe(true);
    }
  });

  it('gives TCP entries their window scales and flags as the recorded bytes carry them, ICMP entries type, code and id', () => {
    const tcp = entries.filter((e) => e.original.protocol === 'tcp');
    expect(tcp.length).toBeGreaterThan(0);
    const raw = rawTcpInfo(datagrams);
    expect([...raw.keys()].sort()).toEqual(tcp.map((e) => e.id).sort());
    for (const e of tcp) {
      expect(e.tcp, `entry ${e.id}`).toMatchObject(raw.get(e.id) as object);
      expect(e.original.icmpType).toBeUndefined();
    }
    // The recorded table has scaled connections: the comparison is not all zeros.
    expect(tcp.some((e) => (e.tcp?.wscaleOriginal ?? 0) > 0 && (e.tcp?.flagsOriginal ?? 0) > 0)).toBe(true);
    const icmp = entries.filter((e) => e.original.protocol === 'icmp');
    expect(icmp).toHaveLength(1);
    expect(icmp[0]?.original).toMatchObject({ icmpType: 8, icmpCode: 0, sport: undefined });
    expect(icmp[0]?.reply.icmpType).toBe(0);
    const icmpv6 = entries.filter((e) => e.original.protocol === 'icmpv6');
    expect(icmpv6[0]?.original.icmpType).toBe(128);
  });

  it('gives every entry the same shape, absent parts as undefined', () => {
    const keys = Object.keys(entries[0] as object);
    for (const e of entries) expect(Object.keys(e)).toEqual(keys);
    expect(keys).toContain('master');
    expect(keys).toContain('synproxy');
  });
});

describe('native filtering of recorded messages', () => {
  const all = decodeAll();
  const cases: Array<[string, EntryFilter, (e: ConntrackEntry) => boolean]> = [
    ['family', { family: 'ipv6' }, (e) => e.family === 'ipv6'],
    ['protocol', { protocol: 'udp' }, (e) => e.original.protocol === 'udp'],
    ['protocol number', { protocol: 58 }, (e) => e.original.protocolNumber === 58],
    ['TCP state', { tcpState: ['TIME_WAIT'] }, (e) => e.tcp?.state === 'TIME_WAIT'],
    ['port range', { dport: [7000, 7002] }, (e) => (e.original.dport ?? -1) >= 7000 && (e.original.dport ?? -1) <= 7002],
    ['reply sport', { reply: { sport: 7003 } }, (e) => e.reply.sport === 7003],
    ['CIDR', { dst: '127.0.0.0/8' }, (e) => e.family === 'ipv4'],
    ['IPv6 host', { src: '::1/128' }, (e) => e.family === 'ipv6'],
    ['mark', { mark: 42 }, (e) => e.mark === 42],
    ['mark with mask', { mark: { value: 0x2, mask: 0x2 } }, (e) => (e.mark & 2) === 2],
    ['zone', { zone: 7 }, (e) => e.zone === 7],
    ['status', { status: { set: ['ASSURED'], unset: [] } }, (e) => e.flags.includes('ASSURED')],
    ['status unset', { status: { unset: ['SEEN_REPLY'] } }, (e) => !e.flags.includes('SEEN_REPLY')],
  ];
  for (const [name, filter, predicate] of cases) {
    it(`selects by ${name}`, () => {
      const expected = all.filter(predicate).map((e) => e.id).sort();
      expect(expected.length, 'the fixture must hold a matching entry').toBeGreaterThan(0);
      expect(expected.length, 'and a non-matching one').toBeLessThan(all.length);
      expect(decodeAll(filter).map((e) => e.id).sort()).toEqual(expected);
    });
  }
});

describe('damaged and unusual messages', () => {
  const first = datagrams[0] as Buffer;
  const firstMessage = messages(first)[0] as Buffer;

  it('fails cleanly, never crashes, on a datagram cut anywhere', () => {
    const boundaries = new Set<number>();
    let offset = 0;
    for (const m of messages(first)) {
      offset += (m.length + 3) & ~3;
      boundaries.add(offset);
    }
    for (let cut = 1; cut < first.length; cut++) {
      const truncated = first.subarray(0, cut);
      if (boundaries.has(cut)) {
        expect(() => binding().decode(truncated, null)).not.toThrow();
      } else if (cut < 16) {
        // Less than a netlink header: nothing to frame, and that is reported.
        expectProtocolError(() => binding().decode(truncated, null), /stray bytes/);
      } else {
        expectProtocolError(() => binding().decode(truncated, null));
      }
    }
  });

  it('skips attributes it does not know, at any depth', () => {
    const original = decodeBatch(binding().decode(firstMessage, null))[0];
    const extended = withAttribute(firstMessage, 200, Buffer.from([1, 2, 3, 4, 5]));
    const decoded = decodeBatch(binding().decode(extended, null));
    expect(decoded).toEqual([original]);
  });

  it('masks NLA_F_NESTED and NLA_F_NET_BYTEORDER off attribute types', () => {
    // CTA_MARK (8) sent with the byte-order flag set must still be read as the mark.
    const marked = withAttribute(firstMessage, 8 | 0x4000, Buffer.from([0, 0, 0, 9]));
    const [entry] = decodeBatch(binding().decode(marked, null));
    expect(entry?.mark).toBe(9);
  });

  it('rejects a known attribute of the wrong size', () => {
    const bad = withAttribute(firstMessage, 3 /* CTA_STATUS */, Buffer.from([0, 1]));
    expectProtocolError(() => binding().decode(bad, null), /CTA_STATUS has 2 bytes, expected 4/);
  });

  it('rejects an attribute whose length runs past its message', () => {
    const bad = Buffer.from(firstMessage);
    // The first attribute follows the 16-byte header and the 4-byte nfgenmsg.
    bad.writeUInt16LE(bad.length, 20);
    expectProtocolError(() => binding().decode(bad, null), /does not fit/);
  });

  it('rejects a message length beyond the datagram', () => {
    const bad = Buffer.from(firstMessage);
    bad.writeUInt32LE(bad.length + 64, 0);
    expectProtocolError(() => binding().decode(bad, null), /does not fit in the datagram/);
  });

  it('reads a message whose length is not a multiple of four', () => {
    // An unpadded final attribute: the message ends mid-word, which netlink allows.
    const odd = withAttribute(firstMessage, 201, Buffer.from([7]));
    const trimmed = odd.subarray(0, firstMessage.length + 5);
    trimmed.writeUInt32LE(trimmed.length, 0);
    expect(decodeBatch(binding().decode(Buffer.from(trimmed), null))).toHaveLength(1);
  });

  it('reports an NLMSG_ERROR with its errno', () => {
    const error = Buffer.alloc(36);
    error.writeUInt32LE(36, 0);
    error.writeUInt16LE(2, 4); // NLMSG_ERROR
    error.writeInt32LE(-1, 16); // -EPERM
    let caught: NativeError | undefined;
    try {
      binding().decode(error, null);
    } catch (err) {
      caught = err as NativeError;
    }
    expect(caught?.errno).toBe(1);
    expect(caught?.protocol).toBeUndefined();
  });

  it('treats an error code that is no errno as a malformed message (found by fuzzing)', () => {
    for (const code of [-2147483648, -5000]) {
      const error = Buffer.alloc(36);
      error.writeUInt32LE(36, 0);
      error.writeUInt16LE(2, 4); // NLMSG_ERROR
      error.writeInt32LE(code, 16);
      expectProtocolError(() => binding().decode(error, null), /error code/);
    }
  });

  it('drops a repeated entry within one decode', () => {
    const twice = Buffer.concat([firstMessage, firstMessage]);
    expect(binding().decode(twice, null).count).toBe(1);
  });
});

describe('event messages (recorded entries sent as the kernel sends events)', () => {
  // ctnetlink_conntrack_event(): IPCTNL_MSG_CT_NEW with NLM_F_CREATE | NLM_F_EXCL for a new
  // entry, without them for an update; IPCTNL_MSG_CT_DELETE for a destroy. Sequence number 0.
  const recorded = messages(datagrams[0] as Buffer)[0] as Buffer;
  const NLM_F_CREATE = 0x400;
  const NLM_F_EXCL = 0x200;
  const CT_NEW = (1 << 8) | 0; // NFNL_SUBSYS_CTNETLINK << 8 | IPCTNL_MSG_CT_NEW
  const CT_DELETE = (1 << 8) | 2;
  function asEvent(type: number, flags: number): Buffer {
    const m = Buffer.from(recorded);
    m.writeUInt16LE(type, 4);
    m.writeUInt16LE(flags, 6);
    m.writeUInt32LE(0, 8);
    return m;
  }

  it('classifies new, update and destroy, and decodes the entry as in a dump', () => {
    const [dumped] = decodeBatch(binding().decode(recorded, null));
    const datagram = Buffer.concat([asEvent(CT_NEW, NLM_F_CREATE | NLM_F_EXCL), asEvent(CT_NEW, 0), asEvent(CT_DELETE, 0)]);
    const events = decodeEventBatch(binding().decode(datagram, null, true));
    expect(events.map((e) => e.type)).toEqual(['new', 'update', 'destroy']);
    for (const event of events) expect(event.type !== 'overflow' && event.entry).toEqual(dumped);
  });

  it('keeps every event of the same entry (no de-duplication), and dumps carry no event type', () => {
    const twice = Buffer.concat([asEvent(CT_NEW, 0), asEvent(CT_NEW, 0)]);
    expect(decodeEventBatch(binding().decode(twice, null, true))).toHaveLength(2);
    expect(decodeBatch(binding().decode(twice, null))).toHaveLength(1);
    const records = new Uint32Array(binding().decode(recorded, null).records);
    expect(records[binding().layout.slot.event]).toBe(binding().layout.event.none);
  });

  it('filters events natively like dump entries', () => {
    const [dumped] = decodeBatch(binding().decode(recorded, null));
    const other = dumped?.original.protocol === 'tcp' ? 'udp' : 'tcp';
    const datagram = asEvent(CT_DELETE, 0);
    expect(decodeEventBatch(binding().decode(datagram, compileFilter({ protocol: other }) ?? null, true))).toEqual([]);
    expect(decodeEventBatch(binding().decode(datagram, compileFilter({ protocol: dumped?.original.protocol }) ?? null, true))).toHaveLength(1);
  });

  it('puts an overflow notice before the batch\'s events', () => {
    const batch = { ...binding().decode(asEvent(CT_NEW, 0), null, true), overflowsBefore: 2 };
    expect(decodeEventBatch(batch).map((e) => e.type)).toEqual(['overflow', 'update']);
    expect(decodeEventBatch({ ...batch, count: 0 })).toEqual([{ type: 'overflow', count: 2, receiveBufferBytes: 0 }]);
  });
});

describe('summaries counted natively', () => {
  it('count the same groups as the decoded entries, by every key and by all keys at once', () => {
    const entries = decodeAll();
    const whole = Buffer.concat(datagrams); // complete messages back to back: one walk
    const valueOf = (e: ConntrackEntry, key: SummaryKey): unknown => ({
      family: e.family, protocol: e.original.protocol, tcpState: e.tcp?.state, src: e.original.src, dst: e.original.dst,
      sport: e.original.sport, dport: e.original.dport, replySrc: e.reply.src, replyDst: e.reply.dst, mark: e.mark,
      zone: e.zone, assured: e.flags.includes('ASSURED'), nat: e.flags.includes('SRC_NAT') || e.flags.includes('DST_NAT'),
      seenReply: e.flags.includes('SEEN_REPLY'),
    } as Record<SummaryKey, unknown>)[key];
    for (const by of [...SUMMARY_KEYS.map((key) => [key]), [...SUMMARY_KEYS]]) {
      const builder = new SummaryBuilder(by);
      builder.add(binding().decode(whole, null, false, summaryKeyNumbers(by)));
      const summary = builder.finish();
      const expected = new Map<string, number>();
      for (const e of entries) {
        const key = JSON.stringify(by.map((k) => valueOf(e, k)));
        expected.set(key, (expected.get(key) ?? 0) + 1);
      }
      expect(summary.total, by.join(',')).toBe(entries.length);
      expect(new Map(summary.groups.map((g) => [JSON.stringify(by.map((k) => g.key[k])), g.count])), by.join(',')).toEqual(expected);
    }
  });

  it('refuses an unknown key number', () => {
    expect(() => binding().decode(datagrams[0] as Buffer, null, false, [99])).toThrow(/unknown summary key/);
  });
});
