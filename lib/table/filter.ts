/**
 * Validates an EntryFilter and turns it into the form native code matches on.
 * Nothing invalid reaches the kernel: every value is checked here first.
 */
import { isIPv4, isIPv6 } from 'node:net';

import { invalidFilter } from '../base/errors.js';
import type { NativeFilter } from '../binding/native.js';
import { PROTOCOL_NUMBERS, STATUS_FLAGS, TCP_STATES } from './records.js';
import type { EntryFilter, PortMatch, ProtocolName, StatusFlag, TcpState, TupleFilter } from '../base/types.js';

const AF_INET = 2;
const AF_INET6 = 10;

const FILTER_KEYS = new Set([
  'family', 'protocol', 'tcpState', 'src', 'dst', 'sport', 'dport', 'original', 'reply', 'mark',
  'zone', 'status',
]);
const TUPLE_KEYS = new Set(['src', 'dst', 'sport', 'dport']);

function ipv4Bytes(text: string): Uint8Array {
  return Uint8Array.from(text.split('.').map(Number));
}

function ipv6Bytes(text: string): Uint8Array {
  let head = text;
  let v4Tail: number[] = [];
  const lastColon = text.lastIndexOf(':');
  if (text.includes('.', lastColon)) {
    // Embedded IPv4 (::ffff:1.2.3.4): two groups' worth of bytes.
    v4Tail = [...ipv4Bytes(text.slice(lastColon + 1))];
    head = text.slice(0, lastColon + 1) + '0:0';
  }
  const [left = '', right] = head.split('::');
  const leftGroups = left === '' ? [] : left.split(':');
  const rightGroups = right === undefined || right === '' ? [] : right.split(':');
  const zeros = 8 - leftGroups.length - rightGroups.length;
  const groups = [...leftGroups, ...new Array<string>(right === undefined ? 0 : zeros).fill('0'), ...rightGroups];
  const bytes = new Uint8Array(16);
  groups.forEach((group, i) => {
    const value = parseInt(group, 16);
    bytes[i * 2] = value >> 8;
    bytes[i * 2 + 1] = value & 0xff;
  });
  if (v4Tail.length === 4) bytes.set(v4Tail, 12);
  return bytes;
}

/**
 * The number of a TCP state name, or -1. conntrack-tools names the kernel's state 9 (SYN_SENT2,
 * a simultaneous open) `LISTEN` where it parses text; both names are taken.
 */
export function tcpStateNumber(name: unknown): number {
  return name === 'LISTEN' ? TCP_STATES.indexOf('SYN_SENT2') : TCP_STATES.indexOf(name as TcpState);
}

/**
 * Dotted-quad text as bytes, or undefined: the octets of node:net's isIPv4() (0-255, no leading
 * zeros), read char by char. createMany() parses two addresses per entry: a regex and a split
 * cost more than the rest of the entry's validation.
 */
function fastIpv4(text: string): Uint8Array | undefined {
  const n = text.length;
  if (n < 7 || n > 15) return undefined;
  const out = new Uint8Array(4);
  let part = 0;
  let value = 0;
  let digits = 0;
  for (let i = 0; i <= n; i++) {
    const c = i < n ? text.charCodeAt(i) : 46; // a final '.' closes the last octet
    if (c === 46) {
      if (digits === 0 || part > 3) return undefined;
      out[part++] = value;
      value = 0;
      digits = 0;
    } else if (c >= 48 && c <= 57) {
      if (digits > 0 && value === 0) return undefined; // leading zero
      value = value * 10 + (c - 48);
      if (value > 255) return undefined;
      digits++;
    } else {
      return undefined;
    }
  }
  return part === 4 ? out : undefined;
}

/** An IPv4 or IPv6 address (no zone index) as family and network-order bytes; undefined if it is none. */
export function parseAddress(text: string): { family: number; bytes: Uint8Array } | undefined {
  const v4 = fastIpv4(text);
  if (v4 !== undefined) return { family: AF_INET, bytes: v4 };
  if (isIPv4(text)) return { family: AF_INET, bytes: ipv4Bytes(text) };
  if (isIPv6(text) && !text.includes('%')) return { family: AF_INET6, bytes: ipv6Bytes(text) };
  return undefined;
}

/** Parses `addr` or `addr/prefix`. */
export function parseCidr(text: unknown, what: string): { family: number; bytes: Uint8Array; prefix: number } {
  if (typeof text !== 'string') throw invalidFilter(`${what} must be an address or CIDR string`);
  const slash = text.indexOf('/');
  const parsed = parseAddress(slash < 0 ? text : text.slice(0, slash));
  if (parsed === undefined) throw invalidFilter(`${what} '${text}' is not an IPv4 or IPv6 address`);
  const { family, bytes } = parsed;
  const maxPrefix = bytes.length * 8;
  let prefix = maxPrefix;
  if (slash >= 0) {
    const prefixText = text.slice(slash + 1);
    prefix = /^\d{1,3}$/.test(prefixText) ? Number(prefixText) : NaN;
    if (!(prefix >= 0 && prefix <= maxPrefix)) {
      throw invalidFilter(`${what} '${text}': prefix length must be 0 to ${maxPrefix}`);
    }
  }
  return { family, bytes, prefix };
}

function isPort(value: unknown): value is number {
  return Number.isInteger(value) && (value as number) >= 0 && (value as number) <= 65535;
}

function parsePort(value: PortMatch | undefined, what: string): { low: number; high: number } | undefined {
  if (value === undefined) return undefined;
  if (isPort(value)) return { low: value, high: value };
  if (Array.isArray(value) && value.length === 2 && isPort(value[0]) && isPort(value[1]) && value[0] <= value[1]) {
    return { low: value[0], high: value[1] };
  }
  throw invalidFilter(`${what} must be a port 0-65535 or a range [low, high] with low <= high`);
}

function isUint32(value: unknown): value is number {
  return Number.isInteger(value) && (value as number) >= 0 && (value as number) <= 0xffffffff;
}

function statusBits(names: readonly unknown[], what: string): number {
  let bits = 0;
  for (const name of names) {
    const bit = STATUS_FLAGS.indexOf(name as StatusFlag);
    if (bit < 0) throw invalidFilter(`${what}: unknown status flag '${String(name)}' (known: ${STATUS_FLAGS.join(', ')})`);
    bits |= 1 << bit;
  }
  return bits >>> 0;
}

function checkKeys(object: object, allowed: Set<string>, what: string): void {
  for (const key of Object.keys(object)) {
    if (!allowed.has(key)) throw invalidFilter(`unknown ${what} key '${key}' (known: ${[...allowed].join(', ')})`);
  }
}

/** Returns the native form, or null when the filter selects everything. */
export function compileFilter(filter: EntryFilter | undefined, kernel = true): NativeFilter | null {
  if (filter === undefined || filter === null) return null;
  if (typeof filter !== 'object' || Array.isArray(filter)) throw invalidFilter('the filter must be an object');
  checkKeys(filter, FILTER_KEYS, 'filter');

  const out: NativeFilter = {
    family: 0, protocol: -1, tcpStates: 0, markValue: 0, markMask: 0, zone: -1, statusSet: 0,
    statusUnset: 0, addresses: [], ports: [], kernel,
  };

  if (filter.family !== undefined) {
    if (filter.family === 'ipv4') out.family = AF_INET;
    else if (filter.family === 'ipv6') out.family = AF_INET6;
    else throw invalidFilter(`family must be 'ipv4' or 'ipv6', not '${String(filter.family)}'`);
  }

  if (filter.protocol !== undefined) {
    const p = filter.protocol;
    if (typeof p === 'number' && Number.isInteger(p) && p >= 0 && p <= 255) out.protocol = p;
    else if (typeof p === 'string' && p in PROTOCOL_NUMBERS) out.protocol = PROTOCOL_NUMBERS[p as Exclude<ProtocolName, 'unknown'>];
    else throw invalidFilter(`protocol must be one of ${Object.keys(PROTOCOL_NUMBERS).join(', ')} or a number 0-255`);
  }

  if (filter.tcpState !== undefined) {
    const states = (Array.isArray(filter.tcpState) ? filter.tcpState : [filter.tcpState]) as TcpState[];
    if (states.length === 0) throw invalidFilter('tcpState must name at least one state');
    for (const state of states) {
      const n = tcpStateNumber(state);
      if (n < 0) throw invalidFilter(`unknown TCP state '${String(state)}' (known: ${TCP_STATES.join(', ')}; LISTEN for SYN_SENT2)`);
      out.tcpStates |= 1 << n;
    }
    if (out.protocol >= 0 && out.protocol !== PROTOCOL_NUMBERS.tcp) {
      throw invalidFilter('tcpState only matches TCP entries, but protocol selects another protocol');
    }
    out.protocol = PROTOCOL_NUMBERS.tcp;
  }

  const tuples: Array<[0 | 1, TupleFilter | undefined, string]> = [[0, undefined, 'original'], [1, filter.reply, 'reply']];
  const shorthand: TupleFilter = { src: filter.src, dst: filter.dst, sport: filter.sport, dport: filter.dport };
  if (filter.original !== undefined) {
    for (const key of TUPLE_KEYS) {
      if ((shorthand as Record<string, unknown>)[key] !== undefined && (filter.original as Record<string, unknown>)[key] !== undefined) {
        throw invalidFilter(`'${key}' is given both at the top level and in 'original'`);
      }
    }
  }
  tuples[0] = [0, { ...shorthand, ...stripUndefined(filter.original) }, 'original'];

  for (const [tuple, spec, name] of tuples) {
    if (spec === undefined) continue;
    if (typeof spec !== 'object') throw invalidFilter(`${name} must be an object`);
    if (name === 'reply') checkKeys(spec, TUPLE_KEYS, 'reply');
    else if (filter.original !== undefined) checkKeys(filter.original, TUPLE_KEYS, 'original');
    for (const [end, key] of [[0, 'src'], [1, 'dst']] as const) {
      const value = spec[key];
      if (value === undefined) continue;
      const cidr = parseCidr(value, `${name}.${key}`);
      if (out.family !== 0 && out.family !== cidr.family) {
        throw invalidFilter(`${name}.${key} '${value}' does not match family ${filter.family ?? ''}`.trim());
      }
      out.family = cidr.family; // an address implies its family, which lets the kernel filter too
      out.addresses.push({ tuple, end, family: cidr.family, bytes: cidr.bytes, prefix: cidr.prefix });
    }
    for (const [end, key] of [[0, 'sport'], [1, 'dport']] as const) {
      const range = parsePort(spec[key], `${name}.${key}`);
      if (range) out.ports.push({ tuple, end, ...range });
    }
  }

  if (filter.mark !== undefined) {
    const mark = typeof filter.mark === 'number' ? { value: filter.mark, mask: 0xffffffff } : filter.mark;
    const mask = mark?.mask ?? 0xffffffff;
    if (!mark || !isUint32(mark.value) || !isUint32(mask) || mask === 0) {
      throw invalidFilter('mark must be a 32-bit unsigned number, or { value, mask } with a non-zero mask');
    }
    out.markValue = mark.value >>> 0;
    out.markMask = mask >>> 0;
  }

  if (filter.zone !== undefined) {
    if (!Number.isInteger(filter.zone) || filter.zone < 0 || filter.zone > 65535) {
      throw invalidFilter('zone must be an integer 0-65535');
    }
    out.zone = filter.zone;
  }

  if (filter.status !== undefined) {
    const s = filter.status;
    if (typeof s === 'string') out.statusSet = statusBits([s], 'status');
    else if (Array.isArray(s)) out.statusSet = statusBits(s, 'status');
    else if (typeof s === 'object' && s !== null) {
      checkKeys(s, new Set(['set', 'unset']), 'status');
      const { set = [], unset = [] } = s as { set?: readonly StatusFlag[]; unset?: readonly StatusFlag[] };
      out.statusSet = statusBits(set, 'status.set');
      out.statusUnset = statusBits(unset, 'status.unset');
      if ((out.statusSet & out.statusUnset) !== 0) throw invalidFilter('a status flag cannot be both set and unset');
    } else {
      throw invalidFilter('status must be a flag name, a list of names, or { set, unset }');
    }
  }
  return out;
}

function stripUndefined(tuple: TupleFilter | undefined): TupleFilter {
  const out: TupleFilter = {};
  if (!tuple) return out;
  for (const key of TUPLE_KEYS) {
    const value = (tuple as Record<string, unknown>)[key];
    if (value !== undefined) (out as Record<string, unknown>)[key] = value;
  }
  return out;
}
