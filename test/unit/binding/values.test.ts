/**
 * The binding checks every value lib hands it, as if lib did not: a wrong type or a value out of
 * range is a TypeError or RangeError, never a cast that indexes past a fixed array or reads a
 * typed array past its end. (The ASan build, `npm run test:asan`, turns any such read or write
 * into a failure, not a silent corruption.) Nothing here reaches the kernel: every call is refused
 * before a request is built.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { binding, type NativeFilter, type NativeHandle } from '../../../lib/binding/native.js';
import { toConntrackError } from '../../../lib/table/conntrack.js';

const AF_INET = 2;
const AF_INET6 = 10;

function filter(overrides: Record<string, unknown> = {}): NativeFilter {
  return {
    family: AF_INET, protocol: 6, tcpStates: 0, markValue: 0, markMask: 0, zone: -1, statusSet: 0, statusUnset: 0,
    addresses: [], ports: [], kernel: true, ...overrides,
  } as NativeFilter;
}

const address = { tuple: 0, end: 0, family: AF_INET, bytes: new Uint8Array([192, 0, 2, 1]), prefix: 32 };
const port = { tuple: 0, end: 1, low: 80, high: 80 };
// TEST-NET addresses: even if a check were missing, no such entry exists to be changed.
const tuple = { src: new Uint8Array([192, 0, 2, 1]), dst: new Uint8Array([192, 0, 2, 2]), proto: 17, sport: 1, dport: 2 };

describe('the binding refuses values it cannot use safely', () => {
  let handle: NativeHandle;

  beforeAll(async () => {
    handle = await binding().open(null);
  });

  afterAll(() => handle.close());

  it('filter tuple and end indices out of 0..1, and prefixes longer than the address', () => {
    const bad: Array<[Record<string, unknown>, ErrorConstructor]> = [
      [{ addresses: [{ ...address, end: 2 }] }, RangeError],
      [{ addresses: [{ ...address, end: 255 }] }, RangeError],
      [{ addresses: [{ ...address, tuple: 2 }] }, RangeError],
      [{ addresses: [{ ...address, prefix: 33 }] }, RangeError],
      [{ addresses: [{ ...address, family: AF_INET6 }] }, RangeError], // 4 bytes for a 16-byte family
      [{ addresses: [{ ...address, family: 7 }] }, RangeError],
      [{ addresses: [{ ...address, bytes: new Uint16Array(2) }] }, TypeError],
      [{ addresses: [{ ...address, bytes: [192, 0, 2, 1] }] }, TypeError],
      [{ addresses: [{ ...address, end: -1 }] }, RangeError],
      [{ addresses: [{ ...address, end: 0.5 }] }, RangeError],
      [{ addresses: [{ ...address, end: '1' }] }, TypeError],
      [{ addresses: [7] }, TypeError],
      [{ addresses: 'all' }, TypeError],
      [{ ports: [{ ...port, end: 2 }] }, RangeError],
      [{ ports: [{ ...port, tuple: 3 }] }, RangeError],
      [{ ports: [{ ...port, low: 70_000, high: 70_000 }] }, RangeError],
      [{ ports: [{ ...port, low: 90, high: 80 }] }, RangeError],
      [{ protocol: 256 }, RangeError],
      [{ protocol: -2 }, RangeError],
      [{ zone: 65_536 }, RangeError],
      [{ family: 3 }, RangeError],
      [{ markMask: 2 ** 32 }, RangeError],
      [{ statusSet: Number.NaN }, RangeError],
    ];
    for (const [overrides, type] of bad) {
      expect(() => handle.startDump(filter(overrides), 16), JSON.stringify(overrides)).toThrow(type);
      expect(() => handle.startEvents(filter(overrides), 16, 1, 1 << 20), JSON.stringify(overrides)).toThrow(type);
      expect(() => binding().decode(new Uint8Array(0), filter(overrides)), JSON.stringify(overrides)).toThrow(type);
    }
    expect(() => handle.startDump(5 as unknown as NativeFilter, 16)).toThrow(TypeError);
  });

  it('labels must be a Uint32Array of four words; addresses Uint8Arrays of the family\'s length', () => {
    const spec = { family: AF_INET, orig: tuple };
    const bad: Array<[Record<string, unknown>, ErrorConstructor]> = [
      // A 4-byte view read as 16 bytes before.
      [{ labels: new Uint8Array(4) }, TypeError],
      [{ labels: new Uint32Array(2) }, RangeError],
      [{ labels: new Uint32Array(5) }, RangeError],
      [{ labels: new Float64Array(4) }, TypeError],
      [{ labels: new Int32Array(4) }, TypeError],
      [{ labels: [1, 2, 3, 4] }, TypeError],
      [{ labels: new Uint32Array(4), labelsMask: new Uint16Array(8) }, TypeError],
      [{ orig: { ...tuple, src: new Uint8Array(3) } }, RangeError],
      [{ orig: { ...tuple, dst: new Uint8Array(16) } }, RangeError],
      [{ orig: { ...tuple, src: new Uint32Array(1) } }, TypeError],
      [{ orig: { ...tuple, sport: 65_536 } }, RangeError],
      [{ orig: { ...tuple, proto: 256 } }, RangeError],
      [{ orig: 'tuple' }, TypeError],
      [{ family: 0 }, RangeError],
      [{ mark: -1 }, RangeError],
      [{ zone: 65_536 }, RangeError],
      [{ tcpState: 256 }, RangeError],
      [{ timeout: 'long' }, TypeError],
      // NAT ranges: addresses of the entry's family, ports of 16 bits.
      [{ natSrc: 'nat' }, TypeError],
      [{ natSrc: { min: new Uint8Array(16), max: new Uint8Array(16) } }, RangeError],
      [{ natSrc: { min: new Uint8Array(4), max: new Uint16Array(2) } }, TypeError],
      [{ natDst: { min: new Uint8Array(4), max: new Uint8Array(4), minPort: 70_000, maxPort: 70_000 } }, RangeError],
    ];
    for (const [overrides, type] of bad) {
      expect(() => handle.entryRequest(0, { ...spec, ...overrides } as never), JSON.stringify(Object.keys(overrides))).toThrow(type);
    }
    expect(() => handle.entryRequest(0, null as never)).toThrow(TypeError);
    // Operations are 0 (get) to 4 (get and zero counters); anything else was an update before.
    for (const op of [5, 99, -1, 1.5]) expect(() => handle.entryRequest(op, spec as never)).toThrow(RangeError);
  });

  it('receiveBufferBytes of 0 or 2^31 and more, batch sizes and event groups out of range', () => {
    expect(() => handle.startEvents(null, 16, 1, 0)).toThrow(RangeError);
    expect(() => handle.startEvents(null, 16, 1, 2 ** 31)).toThrow(RangeError);
    expect(() => handle.startEvents(null, 16, 1, 2 ** 32 + 4096)).toThrow(RangeError);
    expect(() => handle.startEvents(null, 16, 1, -4096)).toThrow(RangeError);
    expect(() => handle.startEvents(null, 16, 0, 1 << 20)).toThrow(RangeError);
    expect(() => handle.startEvents(null, 16, 8, 1 << 20)).toThrow(RangeError);
    expect(() => handle.startEvents(null, 0, 1, 1 << 20)).toThrow(RangeError);
    expect(() => handle.startDump(null, 0)).toThrow(RangeError);
    expect(() => handle.startDump(null, 65_537)).toThrow(RangeError);
    expect(() => handle.startDump(null, 16, ['dport' as never])).toThrow(TypeError);
    expect(() => handle.startDump(null, 16, [99])).toThrow(RangeError);
  });

  it('dump messages other than CTRZERO, DYING and UNCONFIRMED; delete filter lists; expectation specs', () => {
    // IPCTNL_MSG_CT_GET_CTRZERO is 3, _GET_DYING 6, _GET_UNCONFIRMED 7: a delete (2) must never pass.
    for (const message of [1, 2, 4, 5, 8, 255, -1]) expect(() => handle.startDump(null, 16, null, message)).toThrow(RangeError);
    expect(() => handle.startDump(null, 16, null, 'dying' as never)).toThrow(TypeError);
    expect(() => handle.startDelete([] as never, true)).toThrow(RangeError);
    expect(() => handle.startDelete(new Array(4097).fill(filter()), true)).toThrow(RangeError);
    expect(() => handle.startDelete(filter() as never, true)).toThrow(TypeError);
    expect(() => handle.startDelete([null] as never, true)).toThrow(TypeError);
    expect(() => handle.startDelete([filter({ zone: 70_000 })], true)).toThrow(RangeError);
    const expectation = { family: AF_INET, tuple, master: tuple, mask: tuple, timeout: 10 };
    const bad: Array<[number, Record<string, unknown>, ErrorConstructor]> = [
      [4, expectation, RangeError],
      [-1, expectation, RangeError],
      [2, { ...expectation, family: 3 }, RangeError],
      [0, { family: 0, master: tuple }, RangeError], // a tuple without a family to read it by
      [2, { ...expectation, tuple: { ...tuple, src: new Uint8Array(16) } }, RangeError],
      [2, { ...expectation, zone: 65_536 }, RangeError],
      [2, { ...expectation, natDir: 2, natTuple: tuple }, RangeError],
      [2, { ...expectation, helper: 7 }, TypeError],
      [2, { ...expectation, helper: 'a-name-of-16-chr' }, RangeError],
      [2, { ...expectation, helper: 'ftp\0x' }, RangeError],
      [2, { ...expectation, fn: '' }, RangeError],
    ];
    for (const [op, spec, type] of bad) expect(() => handle.expectationRequest(op, spec as never), JSON.stringify(spec)).toThrow(type);
    expect(() => handle.expectationRequest(0, null as never)).toThrow(TypeError);
  });

  it('bulk changes: create or update only, spec records in a Uint32Array, no more than it holds', () => {
    const bulk = handle.openBulk();
    try {
      const records = new Uint32Array(64);
      expect(() => bulk.apply(0, records, 0)).toThrow(RangeError); // get
      expect(() => bulk.apply(3, records, 0)).toThrow(RangeError); // delete
      expect(() => bulk.apply(1, new Int32Array(64) as never, 0)).toThrow(TypeError);
      expect(() => bulk.apply(1, [0, 0] as never, 0)).toThrow(TypeError);
      expect(() => bulk.apply(1, records, 2 ** 32)).toThrow(RangeError);
      expect(() => bulk.apply(1, records, -1)).toThrow(RangeError);
      // More records than the array holds would be read past its end.
      expect(() => bulk.apply(1, records, 1_000)).toThrow(RangeError);
    } finally {
      bulk.close();
    }
  });

  it('flush families other than 0, AF_INET and AF_INET6; datagrams that are not Uint8Arrays', () => {
    // Only values that, unchecked, would name a family with no entries (255, 3): never 0 or 2.
    for (const family of [-1, 3, 255]) expect(() => handle.flush(family)).toThrow(RangeError);
    expect(() => handle.flush('ipv4' as never)).toThrow(TypeError);
    expect(() => binding().decode(new Uint16Array(8) as never, null)).toThrow(TypeError);
    expect(() => binding().decode('datagram' as never, null)).toThrow(TypeError);
  });

  it('lib reports them as ERR_CONNTRACK_INVALID_ARGUMENT', () => {
    let thrown: unknown;
    try {
      handle.startDump(filter({ addresses: [{ ...address, end: 2 }] }), 16);
    } catch (err) {
      thrown = err;
    }
    expect(toConntrackError(thrown, undefined)).toMatchObject({ code: 'ERR_CONNTRACK_INVALID_ARGUMENT', message: expect.stringContaining('end') });
  });
});
