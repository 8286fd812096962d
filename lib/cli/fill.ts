/**
 * `conntrack fill`: fills a namespace's table with synthetic entries through createMany(), to
 * rehearse a full table without thousands of real clients. Tuples are unique: the source port
 * runs fastest, then the destination address, then the source address.
 */
import { parseArgs } from 'node:util';

import { Conntrack } from '../table/conntrack.js';
import { parseCidr } from '../table/filter.js';
import type { NewEntry, ProtocolName } from '../base/types.js';
import { integerOption, json, netnsOption, run, UsageError, write, type Command } from './common.js';

const USAGE = `usage: conntrack fill --count N [--proto udp|tcp|udplite|sctp|icmp] [--src CIDR] [--dst CIDR]
                      [--dport P] [--timeout S] [--mark M] [--zone Z] [--netns PATH|PID] [--json]
Creates N entries (default source 198.18.0.0/16 and destination 198.19.0.0/16, the benchmarking
range of RFC 2544; TCP entries ESTABLISHED) with createMany(). Source ports 1024-65535 are used
first, then the next destination address, then the next source address.`;

const FIRST_PORT = 1024;
const PORTS = 65536 - FIRST_PORT;
const DEFAULT_DPORT: Partial<Record<ProtocolName, number>> = { udp: 53, tcp: 443, udplite: 53, sctp: 443 };

/** The `index`th address of a CIDR block, as text. */
function addressPicker(cidr: string, what: string): { size: number; at(index: number): string } {
  const { family, bytes, prefix } = parseCidr(cidr, what);
  const hostBits = bytes.length * 8 - prefix;
  if (family === 2) {
    const base = (((bytes[0] as number) << 24) | ((bytes[1] as number) << 16) | ((bytes[2] as number) << 8) | (bytes[3] as number)) >>> 0;
    const mask = hostBits >= 32 ? 0 : (0xffffffff << hostBits) >>> 0;
    const network = (base & mask) >>> 0;
    return {
      size: 2 ** hostBits,
      at(index) {
        const a = (network + index) >>> 0;
        return `${a >>> 24}.${(a >>> 16) & 255}.${(a >>> 8) & 255}.${a & 255}`;
      },
    };
  }
  let base = 0n;
  for (const b of bytes) base = (base << 8n) | BigInt(b);
  const network = (base >> BigInt(hostBits)) << BigInt(hostBits);
  return {
    size: hostBits > 52 ? Number.MAX_SAFE_INTEGER : 2 ** hostBits,
    at(index) {
      const a = network + BigInt(index);
      const groups: string[] = [];
      for (let g = 7; g >= 0; g--) groups.push(((a >> BigInt(g * 16)) & 0xffffn).toString(16));
      return groups.join(':');
    },
  };
}

export const fillCommand: Command = (argv, io) =>
  run(io, USAGE, async () => {
    const { values } = parseArgs({
      args: argv,
      options: {
        count: { type: 'string' },
        proto: { type: 'string', short: 'p', default: 'udp' },
        src: { type: 'string', short: 's', default: '198.18.0.0/16' },
        dst: { type: 'string', short: 'd', default: '198.19.0.0/16' },
        dport: { type: 'string' },
        timeout: { type: 'string', short: 't', default: '600' },
        mark: { type: 'string' },
        zone: { type: 'string' },
        netns: { type: 'string' },
        json: { type: 'boolean', default: false },
      },
      strict: true,
    });
    const given = integerOption('count', values.count, 1);
    if (given === undefined) throw new UsageError('--count N is required');
    const count = given;
    const protocol = values.proto.toLowerCase() as Exclude<ProtocolName, 'unknown'>;
    const icmp = protocol === 'icmp' || protocol === 'icmpv6';
    if (!icmp && DEFAULT_DPORT[protocol] === undefined) throw new UsageError(`--proto takes udp, tcp, udplite, sctp or icmp, got "${values.proto}"`);
    const timeout = integerOption('timeout', values.timeout, 1) as number;
    const mark = integerOption('mark', values.mark, 0);
    const zone = integerOption('zone', values.zone, 0);
    const dport = integerOption('dport', values.dport, 0) ?? DEFAULT_DPORT[protocol] ?? 0;
    let src: ReturnType<typeof addressPicker>;
    let dst: ReturnType<typeof addressPicker>;
    try {
      src = addressPicker(values.src, '--src');
      dst = addressPicker(values.dst, '--dst');
    } catch (err) {
      throw new UsageError((err as Error).message.replace(/^invalid filter: /, ''));
    }
    const perPort = icmp ? 65536 : PORTS;
    if (count > perPort * src.size * dst.size) {
      throw new UsageError(`--src and --dst hold ${src.size} × ${dst.size} address pairs: too few for ${count} unique entries (${perPort} per pair)`);
    }

    function* entries(): Generator<NewEntry> {
      for (let i = 0; i < count; i++) {
        const pair = Math.floor(i / perPort);
        const original = icmp
          ? { protocol, src: src.at(Math.floor(pair / dst.size)), dst: dst.at(pair % dst.size), icmpType: protocol === 'icmp' ? 8 : 128, icmpCode: 0, icmpId: i % perPort }
          : { protocol, src: src.at(Math.floor(pair / dst.size)), dst: dst.at(pair % dst.size), sport: FIRST_PORT + (i % perPort), dport };
        const entry: NewEntry = { original, timeout };
        if (mark !== undefined) entry.mark = mark;
        if (zone !== undefined) entry.zone = zone;
        yield entry;
      }
    }

    const ct = await Conntrack.open(netnsOption(values.netns));
    const started = process.hrtime.bigint();
    let result;
    try {
      result = await ct.createMany(entries(), { maxFailures: 10 });
    } finally {
      await ct.close();
    }
    const seconds = Number(process.hrtime.bigint() - started) / 1e9;
    const rate = Math.round(result.succeeded / seconds);
    if (values.json) {
      json(io.stdout, { created: result.succeeded, failed: result.failed, failedByCode: result.failedByCode, seconds, perSecond: rate });
    } else {
      const failures = Object.entries(result.failedByCode).map(([code, n]) => `${n} ${code}`).join(', ');
      write(io.stderr, `conntrack: ${result.succeeded} flow entries created in ${seconds.toFixed(2)} s (${rate.toLocaleString('en-US')}/s)` +
        (result.failed > 0 ? `; ${result.failed} failed (${failures}), first: ${result.failures[0]?.message ?? ''}` : ''));
    }
    return result.failed > 0 ? 1 : 0;
  });
