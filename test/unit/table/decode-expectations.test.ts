/**
 * The native decoder on real expectation messages (test/fixtures/kernel/expect.bin, recorded by
 * record-expect-fixtures.ts with `conntrack -L expect -o xml`'s view beside it), and on damaged
 * copies: cut short at every byte, a decode either refuses with a coded error or yields fewer
 * expectations, never a wrong one.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';

import { describe, expect, it } from 'vitest';

import { binding, type NativeError } from '../../../lib/binding/native.js';
import { decodeExpectationBatch } from '../../../lib/table/expectations.js';
import type { ConntrackExpectation, Tuple } from '../../../lib/base/types.js';
import type { OracleExpectation, OracleTuplePart } from '../../helpers/expect-oracle.js';
import { KERNEL_FIXTURES, readCapture } from '../../helpers/captures.js';

const datagrams = readCapture('expect.bin');
const oracle: OracleExpectation[] = JSON.parse(readFileSync(join(KERNEL_FIXTURES, 'expect.oracle.json'), 'utf8'));

function decodeAll(list: readonly Buffer[]): ConntrackExpectation[] {
  return list.flatMap((d) => decodeExpectationBatch(binding().decode(d, null, false, null, true)));
}

function part(t: Tuple): OracleTuplePart {
  return { src: t.src, dst: t.dst, protocolNumber: t.protocolNumber, sport: t.sport, dport: t.dport };
}

describe('expectations decoded from recorded kernel messages', () => {
  it('equal conntrack -L expect: expected tuple, mask, master, helper and timeout', () => {
    const decoded = decodeAll(datagrams);
    expect(decoded.length).toBeGreaterThan(0);
    expect(decoded).toHaveLength(oracle.length);
    const shown = decoded.map((x) => ({ expected: part(x.tuple), mask: part(x.mask), master: part(x.master), helper: x.helper }));
    expect(shown).toEqual(oracle.map(({ expected, mask, master, helper }) => ({ expected, mask, master, helper })));
    // The tool read the table just after the recording: its timeout is the same or a second less.
    decoded.forEach((x, i) => {
      const told = oracle[i]?.timeout as number;
      expect(x.timeout).toBeGreaterThanOrEqual(told);
      expect(x.timeout).toBeLessThanOrEqual(told + 2);
    });
  });

  it('carry what conntrack -L expect does not print: flags, NAT direction and tuple, class, id', () => {
    // record-expect-fixtures.ts made this one: PERMANENT, NATed to 127.0.0.9:2121 in the reply direction.
    const made = decodeAll(datagrams).find((x) => x.tuple.dport === 47001);
    expect(made).toBeDefined();
    expect(made?.flags).toContain('PERMANENT');
    expect((made?.flagBits ?? 0) & 1).toBe(1); // NF_CT_EXPECT_PERMANENT
    expect(made?.nat?.dir).toBe('reply');
    // The kernel keeps the NAT target in the tuple's source part (exp->saved_addr, saved_proto).
    expect(made?.nat?.tuple).toMatchObject({ src: '127.0.0.9', sport: 2121 });
    expect(made?.family).toBe('ipv4');
    expect(made?.id).toBeGreaterThan(0);
    expect(made?.class).toBe(0);
  });

  it('a datagram cut at any byte is refused with a coded error or yields a prefix, never a wrong expectation', () => {
    const whole = decodeAll(datagrams);
    const datagram = datagrams.find((d) => decodeAll([d]).length > 0) as Buffer;
    let refused = 0;
    for (let cut = 0; cut < datagram.length; cut++) {
      try {
        const got = decodeAll([datagram.subarray(0, cut)]);
        for (const x of got) expect(whole).toContainEqual(x);
      } catch (err) {
        expect((err as NativeError).protocol, String(err)).toBe(true);
        refused++;
      }
    }
    expect(refused).toBeGreaterThan(0);
  });
});
