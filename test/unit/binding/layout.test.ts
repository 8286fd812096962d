/**
 * The record layout has one source, native/record_layout.h, which the addon exports as `layout`:
 * every constant lib/table/records.ts, summary.ts, expectations.ts and spec-records.ts read must
 * come from there, and the layout itself must be one a record can hold (slots inside the record and apart, bits distinct, packed
 * fields inside their word). That decoding with it still matches conntrack-tools is checked field
 * by field on recorded kernel messages in test/unit/table/decode.test.ts.
 */
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';

import { checkLayout, layoutConstantsRead } from '../../../lib/binding/layout.js';
import { RECORD_LAYOUT } from '../../../lib/binding/layout.generated.js';
import { binding } from '../../../lib/binding/native.js';
import { EVENT_TYPES } from '../../../lib/table/records.js';
import { SUMMARY_KEYS, summaryKeyNumbers } from '../../../lib/table/summary.js';

const layout = binding().layout;
const groups = layout as unknown as Record<string, Record<string, number>>;

/** The group's values, which must all be numbers. */
function values(group: string): number[] {
  const g = groups[group];
  expect(g, group).toBeTypeOf('object');
  return Object.values(g as Record<string, number>);
}

/** Bits needed to hold every bit of a group of flags. */
function width(bits: number[]): number {
  return 32 - Math.clz32(bits.reduce((a, b) => a | b, 0));
}

describe('record layout', () => {
  it('is compiled into the TypeScript exactly as the addon exports it (else: npm run build:layout)', async () => {
    // @ts-expect-error: a plain .mjs script without types
    const { GENERATED, renderLayout } = (await import('../../../scripts/gen-layout.mjs')) as {
      GENERATED: string; renderLayout: (layout: unknown) => string;
    };
    expect(RECORD_LAYOUT).toEqual(layout);
    expect(readFileSync(GENERATED, 'utf8')).toBe(renderLayout(layout));
  });

  it('gives every constant that records.ts and summary.ts read', () => {
    expect(layoutConstantsRead.size).toBeGreaterThan(100);
    for (const name of layoutConstantsRead) {
      const [group, key] = name.split('.') as [string, string];
      expect(groups[group]?.[key], name).toBeTypeOf('number');
    }
    expect(() => checkLayout()).not.toThrow();
  });

  it('exports only groups this test checks', () => {
    expect(Object.keys(groups).sort()).toEqual([
      'counter', 'dccpHas', 'dccpWord', 'event', 'expectPresent', 'expectSlot', 'present', 'record', 'sctpHas', 'sctpWord',
      'seqAdj', 'slot', 'specField', 'specNat', 'specSlot', 'specTuple', 'status', 'stringRef', 'summaryKey', 'synproxy',
      'tcpFlagsWord', 'tcpHas', 'tcpWord', 'timestamp', 'tuple', 'tupleHas', 'tupleWord', 'u64',
    ]);
    for (const group of Object.keys(groups)) {
      for (const v of values(group)) expect(Number.isInteger(v) && v >= 0 && v <= 0xffffffff, group).toBe(true);
    }
  });

  it('keeps every slot inside the record, apart from the others', () => {
    const { slot, tuple, record, counter, timestamp, seqAdj, synproxy, u64 } = layout;
    const u64Slots = Math.max(u64.low, u64.high) + 1;
    const size: Partial<Record<keyof typeof slot, number>> = {
      orig: tuple.slots, reply: tuple.slots, master: tuple.slots,
      counters: Math.max(...Object.values(counter)) + u64Slots,
      timestamp: Math.max(...Object.values(timestamp)) + u64Slots,
      dccpSeq: u64Slots,
      labels: record.labelWords,
      seqAdjOrig: Math.max(...Object.values(seqAdj)) + 1,
      seqAdjReply: Math.max(...Object.values(seqAdj)) + 1,
      synproxy: Math.max(...Object.values(synproxy)) + 1,
    };
    const used = new Map<number, string>();
    for (const [name, at] of Object.entries(slot)) {
      for (let i = 0; i < (size[name as keyof typeof slot] ?? 1); i++) {
        expect(at + i, name).toBeLessThan(record.slots);
        expect(used.get(at + i), `${name} overlaps`).toBeUndefined();
        used.set(at + i, name);
      }
    }
    const inTuple = [tuple.proto, tuple.ports, tuple.icmp, tuple.zone, tuple.src, tuple.dst];
    expect(new Set(inTuple).size).toBe(inTuple.length);
    for (const at of inTuple) expect(at).toBeLessThan(tuple.slots);
    expect(new Set([u64.low, u64.high])).toEqual(new Set([0, 1]));
    for (const group of ['counter', 'timestamp']) {
      const offsets = values(group).sort((a, b) => a - b);
      offsets.forEach((at, i) => i > 0 && expect(at - (offsets[i - 1] as number), group).toBeGreaterThanOrEqual(u64Slots));
    }
    for (const group of ['seqAdj', 'synproxy']) expect(new Set(values(group)).size, group).toBe(values(group).length);
  });

  it('keeps an expectation record inside an entry record\'s size, and a spec record\'s parts apart', () => {
    const { expectSlot, specSlot, specTuple, specNat, tuple, record } = layout;
    /** Slots of `group` (each `size[name]` long, else one) inside [0, limit) and apart. */
    const apart = (group: Record<string, number>, limit: number, size: Record<string, number>, skip: string[] = []) => {
      const used = new Map<number, string>();
      for (const [name, at] of Object.entries(group)) {
        if (skip.includes(name)) continue;
        for (let i = 0; i < (size[name] ?? 1); i++) {
          expect(at + i, name).toBeLessThan(limit);
          expect(used.get(at + i), `${name} overlaps`).toBeUndefined();
          used.set(at + i, name);
        }
      }
    };
    apart(expectSlot, record.slots, { tuple: tuple.slots, mask: tuple.slots, master: tuple.slots, natTuple: tuple.slots });
    const tupleSize = Math.max(...Object.values(specTuple)) + 4;
    const natSize = Math.max(...Object.values(specNat)) + 1;
    apart(specSlot, specSlot.count, { orig: tupleSize, reply: tupleSize, labels: record.labelWords, labelsMask: record.labelWords, natSrc: natSize, natDst: natSize }, ['count']);
    apart(specTuple, tupleSize, { src: 4, dst: 4 });
    apart(specNat, natSize, { min: 4, max: 4 });
  });

  it('gives every flag its own bit', () => {
    for (const group of ['present', 'tupleHas', 'tcpHas', 'sctpHas', 'dccpHas', 'expectPresent', 'specField']) {
      const bits = values(group);
      for (const bit of bits) expect(bit !== 0 && (bit & (bit - 1)) === 0, `${group}: ${bit}`).toBe(true);
      expect(new Set(bits).size, group).toBe(bits.length);
    }
    for (const bit of values('status')) expect(bit).not.toBe(0);
  });

  it('keeps the fields packed into one slot inside it and apart', () => {
    const { tupleWord, tcpWord, tcpFlagsWord, sctpWord, dccpWord, stringRef } = layout;
    const words: Record<string, Array<[string, number, number]>> = {
      'tuple protocol': [['proto', tupleWord.proto, 8], ['has', tupleWord.has, width(values('tupleHas'))]],
      'tuple ports': [['sport', tupleWord.sport, 16], ['dport', tupleWord.dport, 16]],
      'tuple icmp': [['type', tupleWord.icmpType, 8], ['code', tupleWord.icmpCode, 8], ['id', tupleWord.icmpId, 16]],
      tcp: [
        ['state', tcpWord.state, 8], ['wscaleOrig', tcpWord.wscaleOrig, 8], ['wscaleReply', tcpWord.wscaleReply, 8],
        ['has', tcpWord.has, width(values('tcpHas'))],
      ],
      tcpFlags: [
        ['flagsOrig', tcpFlagsWord.flagsOrig, 8], ['maskOrig', tcpFlagsWord.maskOrig, 8],
        ['flagsReply', tcpFlagsWord.flagsReply, 8], ['maskReply', tcpFlagsWord.maskReply, 8],
      ],
      sctp: [['state', sctpWord.state, 8], ['has', sctpWord.has, width(values('sctpHas'))]],
      dccp: [['state', dccpWord.state, 8], ['role', dccpWord.role, 8], ['has', dccpWord.has, width(values('dccpHas'))]],
      'string ref': [['offset', 0, stringRef.lengthShift], ['length', stringRef.lengthShift, 8]],
    };
    for (const [word, fields] of Object.entries(words)) {
      let taken = 0;
      for (const [name, shift, bits] of fields) {
        expect(shift + bits, `${word}.${name}`).toBeLessThanOrEqual(32);
        const mask = bits === 32 ? 0xffffffff : ((2 ** bits - 1) * 2 ** shift) >>> 0;
        expect((taken & mask) >>> 0, `${word}.${name} overlaps`).toBe(0);
        taken = (taken | mask) >>> 0;
      }
    }
    expect(stringRef.offsetMask).toBe(2 ** stringRef.lengthShift - 1);
  });

  it('names every event type and summary key native code has', () => {
    const { event, summaryKey } = layout;
    expect(new Set(Object.values(event)).size).toBe(4);
    expect(EVENT_TYPES[event.none]).toBeUndefined();
    expect([EVENT_TYPES[event.new], EVENT_TYPES[event.update], EVENT_TYPES[event.destroy]]).toEqual(['new', 'update', 'destroy']);
    expect(Object.keys(summaryKey).sort()).toEqual([...SUMMARY_KEYS].sort());
    expect(summaryKeyNumbers(SUMMARY_KEYS).sort((a, b) => a - b)).toEqual(SUMMARY_KEYS.map((_, i) => i));
  });
});
