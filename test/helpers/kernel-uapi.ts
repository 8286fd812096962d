/**
 * The kernel's own numbering, read from its uapi headers (Debian's linux-libc-dev, which the addon
 * is built against too): TCP and SCTP state numbers and the status bits. Tests compare the
 * library's numbers and flag names with these instead of with the library's own tables.
 */
import { readFileSync } from 'node:fs';

const INCLUDE = '/usr/include/linux/netfilter';

const headers = new Map<string, string>();

function header(name: string): string {
  const cached = headers.get(name);
  if (cached !== undefined) return cached;
  try {
    const text = readFileSync(`${INCLUDE}/${name}`, 'utf8');
    headers.set(name, text);
    return text;
  } catch (err) {
    throw new Error(`${INCLUDE}/${name} is missing: apt-get install linux-libc-dev`, { cause: err });
  }
}

function withoutComments(text: string): string {
  return text.replace(/\/\*[\s\S]*?\*\//g, '').replace(/\/\/.*$/gm, '');
}

/**
 * The members of `enum NAME { ... }` with their values (implicit ones counted on from the last),
 * and `#define ALIAS MEMBER` lines inside it as extra names.
 */
export function parseEnum(text: string, name: string): Map<string, number> {
  const body = new RegExp(`enum\\s+${name}\\s*\\{([\\s\\S]*?)\\};`).exec(withoutComments(text))?.[1];
  if (body === undefined) throw new Error(`enum ${name} not found`);
  const values = new Map<string, number>();
  const aliases: Array<[string, string]> = [];
  let next = 0;
  for (const line of body.split('\n')) {
    const define = /^\s*#define\s+(\w+)\s+(\w+)\s*$/.exec(line);
    if (define !== null) {
      aliases.push([define[1] as string, define[2] as string]);
      continue;
    }
    for (const item of line.split(',')) {
      const member = /^\s*(\w+)\s*(?:=\s*(\d+))?\s*$/.exec(item);
      if (member === null) continue;
      const value = member[2] === undefined ? next : Number(member[2]);
      values.set(member[1] as string, value);
      next = value + 1;
    }
  }
  for (const [alias, target] of aliases) {
    const value = values.get(target);
    if (value !== undefined) values.set(alias, value);
  }
  return values;
}

/** `TCP_CONNTRACK_ESTABLISHED` → 3, and SYN_SENT2 (the kernel's alias of LISTEN) → 9. */
export function tcpStateNumber(state: string): number {
  const value = parseEnum(header('nf_conntrack_tcp.h'), 'tcp_conntrack').get(`TCP_CONNTRACK_${state}`);
  if (value === undefined) throw new Error(`no TCP_CONNTRACK_${state} in nf_conntrack_tcp.h`);
  return value;
}

/** `SCTP_CONNTRACK_ESTABLISHED` → 4. */
export function sctpStateNumber(state: string): number {
  const value = parseEnum(header('nf_conntrack_sctp.h'), 'sctp_conntrack').get(`SCTP_CONNTRACK_${state}`);
  if (value === undefined) throw new Error(`no SCTP_CONNTRACK_${state} in nf_conntrack_sctp.h`);
  return value;
}

/** `IPS_<NAME>_BIT = N` of enum ip_conntrack_status: flag name → bit number. */
export function statusBits(): Map<string, number> {
  const bits = new Map<string, number>();
  for (const match of withoutComments(header('nf_conntrack_common.h')).matchAll(/\bIPS_(\w+)_BIT\s*=\s*(\d+)/g)) {
    if (match[1] !== '__IPS_MAX') bits.set(match[1] as string, Number(match[2]));
  }
  if (bits.size === 0) throw new Error('no IPS_*_BIT in nf_conntrack_common.h');
  return bits;
}

/** The flag names whose bits are set in `status`, in bit order: what `flags` must say. */
export function flagsOfStatus(status: number): string[] {
  return [...statusBits()].filter(([, bit]) => (status & (2 ** bit)) !== 0).sort((a, b) => a[1] - b[1]).map(([name]) => name);
}
