import { describe, expect, it } from 'vitest';

import { ConntrackError } from '../../../lib/base/errors.js';
import { compileFilter, parseCidr } from '../../../lib/table/filter.js';
import type { EntryFilter } from '../../../lib/base/types.js';

function invalid(filter: unknown): ConntrackError {
  try {
    compileFilter(filter as EntryFilter);
  } catch (err) {
    expect(err).toBeInstanceOf(ConntrackError);
    expect((err as ConntrackError).code).toBe('ERR_CONNTRACK_INVALID_FILTER');
    return err as ConntrackError;
  }
  throw new Error(`accepted ${JSON.stringify(filter)}`);
}

describe('compileFilter', () => {
  it('selects everything without a filter', () => {
    expect(compileFilter(undefined)).toBeNull();
  });

  it('parses IPv4 and IPv6 prefixes into bytes', () => {
    expect(parseCidr('10.1.2.3/8', 'x')).toEqual({ family: 2, bytes: Uint8Array.from([10, 1, 2, 3]), prefix: 8 });
    const v6 = parseCidr('2001:db8::1/64', 'x');
    expect(v6.prefix).toBe(64);
    expect([...v6.bytes]).toEqual([0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
    expect([...parseCidr('::ffff:1.2.3.4', 'x').bytes.slice(10)]).toEqual([0xff, 0xff, 1, 2, 3, 4]);
    expect([...parseCidr('::', 'x').bytes]).toEqual(new Array(16).fill(0));
  });

  it('turns names into the numbers native code matches', () => {
    const f = compileFilter({
      protocol: 'tcp', tcpState: ['ESTABLISHED', 'TIME_WAIT'], mark: { value: 0x10, mask: 0xf0 }, zone: 7,
      status: { set: ['ASSURED'], unset: ['DYING'] }, sport: [1000, 2000], reply: { dst: '10.0.0.1' },
    });
    expect(f).toMatchObject({
      protocol: 6, tcpStates: (1 << 3) | (1 << 7), markValue: 0x10, markMask: 0xf0, zone: 7,
      statusSet: 1 << 2, statusUnset: 1 << 9, family: 2, kernel: true,
    });
    expect(f?.ports).toEqual([{ tuple: 0, end: 0, low: 1000, high: 2000 }]);
    expect(f?.addresses).toHaveLength(1);
    expect(f?.addresses[0]).toMatchObject({ tuple: 1, end: 1, prefix: 32 });
  });

  it('implies TCP from a TCP state, and the family from an address', () => {
    expect(compileFilter({ tcpState: 'ESTABLISHED' })?.protocol).toBe(6);
    expect(compileFilter({ dst: '::1' })?.family).toBe(10);
  });

  it('refuses what cannot be right, with a message saying why', () => {
    expect(invalid({ family: 'ipv5' }).message).toMatch(/family/);
    expect(invalid({ protocol: 'carrier-pigeon' }).message).toMatch(/protocol/);
    expect(invalid({ protocol: 256 }).message).toMatch(/0-255/);
    expect(invalid({ tcpState: 'OPEN' }).message).toMatch(/unknown TCP state/);
    expect(invalid({ tcpState: 'ESTABLISHED', protocol: 'udp' }).message).toMatch(/only matches TCP/);
    expect(invalid({ src: '10.0.0.300' }).message).toMatch(/not an IPv4 or IPv6/);
    expect(invalid({ src: '10.0.0.0/33' }).message).toMatch(/prefix length/);
    expect(invalid({ dst: 'fe80::1%eth0' }).message).toMatch(/not an IPv4/);
    expect(invalid({ family: 'ipv4', dst: '::1' }).message).toMatch(/family/);
    expect(invalid({ sport: 70000 }).message).toMatch(/port/);
    expect(invalid({ dport: [20, 10] }).message).toMatch(/low <= high/);
    expect(invalid({ mark: -1 }).message).toMatch(/mark/);
    expect(invalid({ mark: { value: 1, mask: 0 } }).message).toMatch(/non-zero mask/);
    expect(invalid({ zone: 65536 }).message).toMatch(/zone/);
    expect(invalid({ status: ['ASSURED', 'SHINY'] }).message).toMatch(/unknown status flag 'SHINY'/);
    expect(invalid({ status: { set: ['ASSURED'], unset: ['ASSURED'] } }).message).toMatch(/both set and unset/);
    expect(invalid({ sourceAddress: '1.2.3.4' }).message).toMatch(/unknown filter key 'sourceAddress'/);
    expect(invalid({ reply: { port: 1 } }).message).toMatch(/unknown reply key/);
    expect(invalid({ src: '1.1.1.1', original: { src: '2.2.2.2' } }).message).toMatch(/both/);
    expect(invalid([1, 2]).message).toMatch(/object/);
  });

  it('passes the kernel switch through', () => {
    expect(compileFilter({ protocol: 'udp' }, false)?.kernel).toBe(false);
  });
});
