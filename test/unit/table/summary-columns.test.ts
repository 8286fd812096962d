/**
 * A mirror's summary answers as native code hands them over (columns), read with the key objects
 * held from earlier answers of the same kept grouping.
 */
import { describe, expect, it } from 'vitest';

import { GroupKeys, summaryFromColumns, type NativeSummaryColumns, type SummaryKey } from '../../../lib/table/summary.js';

const BY: readonly SummaryKey[] = ['protocol', 'dport', 'dst'];

interface Group {
  count: number;
  id: number;
  generation: number;
  /** Omitted: native code left the key out (the caller holds it). */
  key?: { protocol: number; dport: number; dst: string | undefined };
}

/** The columns native/addon_mirror.cc Summarize would hand over for these groups. */
function answer(grouping: number, groups: Group[], total = groups.reduce((sum, g) => sum + g.count, 0)): NativeSummaryColumns {
  const n = groups.length;
  const values = new Float64Array(n * (3 + BY.length) + 7); // longer than needed, as when reused
  const dst: Array<string | undefined> = new Array(n);
  groups.forEach((g, i) => {
    values[i] = g.count;
    values[n + i] = g.id;
    values[2 * n + i] = g.generation;
    values[3 * n + i] = g.key?.protocol ?? -1;
    values[4 * n + i] = g.key?.dport ?? -1;
    if (g.key?.dst !== undefined) dst[i] = g.key.dst;
  });
  return { total, grouping, groups: n, values, addresses: [undefined, undefined, dst] };
}

const UDP = 17;
const TCP = 6;

describe('summaryFromColumns', () => {
  it('builds frozen keys, then reuses them for the groups native code left out', () => {
    const keys = new GroupKeys();
    const first = summaryFromColumns(BY, answer(3, [
      { count: 5, id: 0, generation: 1, key: { protocol: UDP, dport: 53, dst: '10.0.0.1' } },
      { count: 2, id: 1, generation: 1, key: { protocol: TCP, dport: 443, dst: undefined } },
    ]), keys);
    expect(first).toEqual({ total: 7, groups: [
      { key: { protocol: 'udp', dport: 53, dst: '10.0.0.1' }, count: 5 },
      { key: { protocol: 'tcp', dport: 443, dst: undefined }, count: 2 },
    ] });
    expect(Object.isFrozen(first.groups[0]?.key)).toBe(true);
    expect(keys.grouping).toBe(3);
    expect([...keys.generations.slice(0, 2)]).toEqual([1, 1]);
    // Asked again: counts changed, the order too, no key column.
    const second = summaryFromColumns(BY, answer(3, [
      { count: 9, id: 1, generation: 1 },
      { count: 5, id: 0, generation: 1 },
    ]), keys);
    expect(second.groups.map((g) => [g.key.dport, g.count])).toEqual([[443, 9], [53, 5]]);
    expect(second.groups[0]?.key).toBe(first.groups[1]?.key);
    expect(second.groups[1]?.key).toBe(first.groups[0]?.key);
    expect(second.groups[1]).not.toBe(first.groups[0]);
  });

  it('builds the key of an id another group took (a new generation) from its columns', () => {
    const keys = new GroupKeys();
    summaryFromColumns(BY, answer(3, [{ count: 5, id: 0, generation: 1, key: { protocol: UDP, dport: 53, dst: '10.0.0.1' } }]), keys);
    const next = summaryFromColumns(BY, answer(3, [{ count: 1, id: 0, generation: 2, key: { protocol: UDP, dport: 123, dst: '10.0.0.9' } }]), keys);
    expect(next.groups).toEqual([{ key: { protocol: 'udp', dport: 123, dst: '10.0.0.9' }, count: 1 }]);
    expect(keys.generations[0]).toBe(2);
  });

  it('holds nothing from before when another kept grouping answers (the old one was dropped and made again)', () => {
    const keys = new GroupKeys();
    summaryFromColumns(BY, answer(3, [{ count: 5, id: 0, generation: 1, key: { protocol: UDP, dport: 53, dst: '10.0.0.1' } }]), keys);
    const remade = summaryFromColumns(BY, answer(8, [{ count: 4, id: 0, generation: 1, key: { protocol: TCP, dport: 80, dst: '10.0.0.2' } }]), keys);
    expect(remade.groups).toEqual([{ key: { protocol: 'tcp', dport: 80, dst: '10.0.0.2' }, count: 4 }]);
    expect(keys.grouping).toBe(8);
  });

  it('keeps no key and no columns of a grouping that is not kept', () => {
    const keys = new GroupKeys();
    const result = answer(0, [{ count: 3, id: 0, generation: 1, key: { protocol: UDP, dport: 53, dst: '10.0.0.1' } }]);
    expect(summaryFromColumns(BY, result, keys).groups).toEqual([{ key: { protocol: 'udp', dport: 53, dst: '10.0.0.1' }, count: 3 }]);
    expect(keys.generations).toHaveLength(0);
    expect(keys.values).toBeUndefined();
    // A kept grouping's columns are handed back for the next answer to fill.
    const kept = answer(2, [{ count: 3, id: 0, generation: 1, key: { protocol: UDP, dport: 53, dst: '10.0.0.1' } }]);
    summaryFromColumns(BY, kept, keys);
    expect(keys.values).toBe(kept.values);
  });

  it('reads a total that counts groups `top` left out', () => {
    const result = summaryFromColumns(BY, answer(1, [{ count: 3, id: 4, generation: 1, key: { protocol: UDP, dport: 53, dst: undefined } }], 10), new GroupKeys());
    expect(result.total).toBe(10);
    expect(result.groups).toHaveLength(1);
  });
});
