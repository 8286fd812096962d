/**
 * The decoder on real event datagrams (test/fixtures/kernel/events.bin, recorded by
 * record-event-fixtures.ts from a plain netlink socket): every one decodes as events, and together
 * they hold what the recording made: new, update and destroy events of TCP, UDP and ICMP over IPv4
 * and IPv6, with a mark, a zone and a label. The same datagrams seed the decoder's fuzzer.
 */

import { describe, expect, it } from 'vitest';

import { binding } from '../../../lib/binding/native.js';
import { decodeEventBatch } from '../../../lib/table/records.js';
import type { ConntrackEvent } from '../../../lib/base/types.js';
import { readCapture } from '../../helpers/captures.js';

const datagrams = (): Buffer[] => readCapture('events.bin');

describe('recorded event datagrams', () => {
  const events = datagrams().flatMap((d) => decodeEventBatch(binding().decode(d, null, true))) as ConntrackEvent[];

  it('decode one event per datagram, of every type', () => {
    expect(events).toHaveLength(datagrams().length);
    const types = new Set(events.map((e) => e.type));
    expect([...types].sort()).toEqual(['destroy', 'new', 'update']);
  });

  it('cover the protocols, both families, a mark, a zone and a label', () => {
    const entries = events.map((e) => e.entry);
    expect(new Set(entries.map((e) => e.original.protocol))).toEqual(new Set(['tcp', 'udp', 'icmp', 'icmpv6']));
    expect(new Set(entries.map((e) => e.family))).toEqual(new Set(['ipv4', 'ipv6']));
    expect(entries.some((e) => e.mark === 0x2a)).toBe(true);
    expect(entries.some((e) => e.zone === 7)).toBe(true);
    expect(entries.some((e) => e.labels?.includes(3))).toBe(true);
    // Destroy events carry the final counters (accounting is on).
    expect(events.some((e) => e.type === 'destroy' && (e.entry.counters?.original.packets ?? 0) > 0)).toBe(true);
  });
});
