import { describe, expect, it } from 'vitest';
import { sysctlCommand } from '../../../lib/cli/tuning.js';
import { ConntrackError } from '../../../lib/base/errors.js';
import {
  INITIAL_NETNS_INODE,
  KNOWN_SYSCTLS,
  MAX_TIMEOUT_SECONDS,
  closeMatches,
  describeSysctl,
  netnsPath,
  normalizeSysctlName,
  parseSysctlValue,
  readAllSysctlsWith,
  readSysctlWith,
  resolveSysctlName,
  writeSysctlWith,
  type NetnsFiles,
} from '../../../lib/tuning/sysctl.js';
import { runCommand } from '../../helpers/cli.js';
import { rejection } from '../../helpers/errors.js';

const DIR = '/proc/sys/net/netfilter';

/** The listing of /proc/sys/net/netfilter on the 6.18 test machine. */
const LISTING = [
  'nf_conntrack_acct', 'nf_conntrack_buckets', 'nf_conntrack_checksum', 'nf_conntrack_count',
  'nf_conntrack_events', 'nf_conntrack_expect_max', 'nf_conntrack_frag6_high_thresh',
  'nf_conntrack_frag6_low_thresh', 'nf_conntrack_frag6_timeout', 'nf_conntrack_generic_timeout',
  'nf_conntrack_gre_timeout', 'nf_conntrack_gre_timeout_stream', 'nf_conntrack_icmp_timeout',
  'nf_conntrack_icmpv6_timeout', 'nf_conntrack_log_invalid', 'nf_conntrack_max',
  'nf_conntrack_sctp_timeout_closed', 'nf_conntrack_sctp_timeout_cookie_echoed',
  'nf_conntrack_sctp_timeout_cookie_wait', 'nf_conntrack_sctp_timeout_established',
  'nf_conntrack_sctp_timeout_heartbeat_sent', 'nf_conntrack_sctp_timeout_shutdown_ack_sent',
  'nf_conntrack_sctp_timeout_shutdown_recd', 'nf_conntrack_sctp_timeout_shutdown_sent',
  'nf_conntrack_tcp_be_liberal', 'nf_conntrack_tcp_ignore_invalid_rst', 'nf_conntrack_tcp_loose',
  'nf_conntrack_tcp_max_retrans', 'nf_conntrack_tcp_timeout_close', 'nf_conntrack_tcp_timeout_close_wait',
  'nf_conntrack_tcp_timeout_established', 'nf_conntrack_tcp_timeout_fin_wait',
  'nf_conntrack_tcp_timeout_last_ack', 'nf_conntrack_tcp_timeout_max_retrans',
  'nf_conntrack_tcp_timeout_syn_recv', 'nf_conntrack_tcp_timeout_syn_sent',
  'nf_conntrack_tcp_timeout_time_wait', 'nf_conntrack_tcp_timeout_unacknowledged',
  'nf_conntrack_timestamp', 'nf_conntrack_udp_timeout', 'nf_conntrack_udp_timeout_stream',
  'nf_hooks_lwtunnel', 'nf_log', 'nf_log_all_netns',
];

function errnoError(code: string): NodeJS.ErrnoException {
  const error = new Error(`${code}: simulated`) as NodeJS.ErrnoException;
  error.code = code;
  return error;
}

interface FakeOptions {
  inode?: number;
  readOnly?: string[];
  /** Transform applied by the "kernel" to a written value. */
  kernel?: (path: string, value: number) => number;
  failWrite?: Record<string, string>;
}

/** An in-memory /proc/sys/net/netfilter that records every path touched. */
function fakeNamespace(options: FakeOptions = {}) {
  const values = new Map<string, string>(
    LISTING.filter((name) => name.startsWith('nf_conntrack_')).map((name) => [`${DIR}/${name}`, '7\n']),
  );
  values.set(`${DIR}/nf_conntrack_max`, '262144\n');
  values.set(`${DIR}/nf_conntrack_buckets`, '262144\n');
  values.set(`${DIR}/nf_conntrack_frag6_low_thresh`, '3145728\n');
  values.set(`${DIR}/nf_conntrack_frag6_high_thresh`, '4194304\n');
  values.set('/sys/module/nf_conntrack/parameters/hashsize', '262144\n');
  const touched: string[] = [];
  const writes: Array<[string, string]> = [];
  const files: NetnsFiles = {
    nsPath: options.inode === undefined || options.inode === INITIAL_NETNS_INODE ? null : '/run/netns/test',
    async listDir(path) {
      touched.push(path);
      return [...LISTING];
    },
    async readFile(path) {
      touched.push(path);
      const value = values.get(path);
      if (value === undefined) throw errnoError('ENOENT');
      return value;
    },
    async writeFile(path, data) {
      touched.push(path);
      const failure = options.failWrite?.[path];
      if (failure !== undefined) throw errnoError(failure);
      if (options.readOnly?.some((name) => path === `${DIR}/${name}`)) throw errnoError('EACCES');
      writes.push([path, data]);
      const number = Number(data.trim());
      const stored = options.kernel ? options.kernel(path, number) : number;
      values.set(path, `${stored}\n`);
      if (path.endsWith('/hashsize')) values.set(`${DIR}/nf_conntrack_buckets`, `${stored}\n`);
    },
    async inode() {
      return options.inode ?? INITIAL_NETNS_INODE;
    },
  };
  return { files, values, touched, writes };
}

function thrown(fn: () => unknown): ConntrackError {
  try {
    fn();
  } catch (error) {
    expect(error).toBeInstanceOf(ConntrackError);
    return error as ConntrackError;
  }
  throw new Error('expected a throw');
}

describe('sysctl names', () => {
  it('accepts the full and the short form', () => {
    expect(normalizeSysctlName('net.netfilter.nf_conntrack_max')).toBe('nf_conntrack_max');
    expect(normalizeSysctlName('nf_conntrack_max')).toBe('nf_conntrack_max');
  });

  it.each([
    '../../etc/passwd',
    'nf_conntrack_max/../../../../etc/shadow',
    'net.netfilter.nf_conntrack_max/..',
    '/proc/sys/net/netfilter/nf_conntrack_max',
    'net/netfilter/nf_conntrack_max',
    'nf_conntrack_max\0',
    'nf_conntrack_max ',
    'NF_CONNTRACK_MAX',
    'nf_conntrack_.max',
    'kernel.pid_max',
    'net.netfilter.nf_log_all_netns',
    'net.ipv4.nf_conntrack_max',
    '',
    `nf_conntrack_${'a'.repeat(200)}`,
  ])('refuses %j before any lookup', (name) => {
    const error = thrown(() => normalizeSysctlName(name));
    expect(error.code).toBe('ERR_CONNTRACK_SYSCTL');
    expect(error.message).toContain('not a conntrack sysctl name');
  });

  it('refuses non-strings', () => {
    expect(thrown(() => normalizeSysctlName(42)).code).toBe('ERR_CONNTRACK_SYSCTL');
  });

  it('resolves to the listing entry', () => {
    expect(resolveSysctlName('net.netfilter.nf_conntrack_tcp_loose', LISTING)).toBe('nf_conntrack_tcp_loose');
  });

  it('lists close matches for an unknown name', () => {
    const error = thrown(() => resolveSysctlName('nf_conntrack_tcp_timeout_establish', LISTING));
    expect(error.code).toBe('ERR_CONNTRACK_SYSCTL');
    expect(error.message).toContain('unknown sysctl net.netfilter.nf_conntrack_tcp_timeout_establish');
    expect(error.message).toContain('Did you mean: net.netfilter.nf_conntrack_tcp_timeout_established');
  });

  it('suggests from words shared with the name', () => {
    expect(closeMatches('nf_conntrack_maximum', LISTING)).toContain('net.netfilter.nf_conntrack_max');
    expect(closeMatches('nf_conntrack_udp', LISTING)).toEqual(
      expect.arrayContaining(['net.netfilter.nf_conntrack_udp_timeout', 'net.netfilter.nf_conntrack_udp_timeout_stream']),
    );
  });

  it('says when a known setting is not exposed by this kernel', () => {
    const error = thrown(() => resolveSysctlName('nf_conntrack_dccp_timeout_open', LISTING));
    expect(error.message).toContain('does not expose it');
  });

  it('offers nothing for a name unlike any other', () => {
    const error = thrown(() => resolveSysctlName('nf_conntrack_zzzzzzzz', LISTING));
    expect(error.message).not.toContain('Did you mean');
  });
});

describe('describeSysctl', () => {
  it('nf_conntrack_max: global, initial namespace only, 0 .. INT_MAX', () => {
    expect(describeSysctl('nf_conntrack_max')).toMatchObject({
      name: 'net.netfilter.nf_conntrack_max',
      type: 'integer',
      min: 0,
      max: 2 ** 31 - 1,
      scope: 'global',
      writable: 'initial-netns-only',
      known: true,
    });
  });

  it('timeouts: per-namespace seconds, 1 .. INT_MAX / 1000', () => {
    expect(describeSysctl('net.netfilter.nf_conntrack_tcp_timeout_established')).toMatchObject({
      type: 'seconds',
      min: 1,
      max: 2147483,
      unit: 'seconds',
      scope: 'per-netns',
      writable: 'any-netns',
      kernelHandler: 'proc_dointvec_jiffies',
    });
    expect(MAX_TIMEOUT_SECONDS).toBe(2147483);
  });

  it.each([
    ['nf_conntrack_acct', 'boolean', 0, 1],
    ['nf_conntrack_timestamp', 'boolean', 0, 1],
    ['nf_conntrack_checksum', 'boolean', 0, 1],
    ['nf_conntrack_events', 'integer', 0, 2],
    ['nf_conntrack_log_invalid', 'protocol', 0, 255],
    ['nf_conntrack_tcp_max_retrans', 'integer', 0, 255],
    ['nf_conntrack_expect_max', 'integer', 1, 2 ** 31 - 1],
    ['nf_conntrack_buckets', 'integer', 1, 268434944],
  ])('%s is %s from %d to %d', (name, type, min, max) => {
    expect(describeSysctl(name)).toMatchObject({ type, min, max });
  });

  it('nf_conntrack_count is read-only', () => {
    expect(describeSysctl('nf_conntrack_count').writable).toBe('read-only');
  });

  it('covers every conntrack sysctl of the test machine', () => {
    for (const name of LISTING.filter((entry) => entry.startsWith('nf_conntrack_'))) {
      expect(KNOWN_SYSCTLS).toContain(name);
    }
  });

  it('rejects unknown names with suggestions', () => {
    const error = thrown(() => describeSysctl('nf_conntrack_udp_timeout_streams'));
    expect(error.code).toBe('ERR_CONNTRACK_SYSCTL');
    expect(error.message).toContain('net.netfilter.nf_conntrack_udp_timeout_stream');
  });
});

describe('sysctl values', () => {
  const timeout = describeSysctl('nf_conntrack_tcp_timeout_established');
  const acct = describeSysctl('nf_conntrack_acct');
  const max = describeSysctl('nf_conntrack_max');

  it('takes integers and integer strings', () => {
    expect(parseSysctlValue(timeout, 3600)).toBe(3600);
    expect(parseSysctlValue(timeout, ' 3600\n')).toBe(3600);
    expect(parseSysctlValue(max, '0')).toBe(0);
    expect(parseSysctlValue(acct, true)).toBe(1);
    expect(parseSysctlValue(acct, false)).toBe(0);
  });

  it.each([
    ['timeout = 0', timeout, 0, /out of range from 1 to 2147483 seconds/],
    ['timeout = -1', timeout, -1, /out of range/],
    ['timeout = 2147484', timeout, 2147484, /INT_MAX \/ HZ/],
    ['timeout = 1.5', timeout, 1.5, /takes an integer/],
    ['timeout = "1e3"', timeout, '1e3', /takes an integer/],
    ['timeout = "0x10"', timeout, '0x10', /takes an integer/],
    ['timeout = "abc"', timeout, 'abc', /takes an integer/],
    ['timeout = ""', timeout, '', /takes an integer/],
    ['timeout = NaN', timeout, Number.NaN, /takes an integer/],
    ['timeout = true', timeout, true, /takes an integer/],
    ['acct = 2', acct, 2, /0 off, 1 on/],
    ['max = -1', max, -1, /out of range/],
    ['max = 2 ** 31', max, 2 ** 31, /out of range/],
  ] as const)('refuses %s', (_label, description, value, message) => {
    const error = thrown(() => parseSysctlValue(description, value));
    expect(error.code).toBe('ERR_CONNTRACK_SYSCTL');
    expect(error.message).toMatch(message);
  });
});

describe('netnsPath', () => {
  it('maps a pid to /proc/PID/ns/net and keeps absolute paths', () => {
    expect(netnsPath(1234)).toBe('/proc/1234/ns/net');
    expect(netnsPath('/run/netns/blue')).toBe('/run/netns/blue');
  });

  it.each([0, -3, 1.5, 'run/netns/blue', '/run/netns/../../etc/passwd', '/run/netns/x\0', ''])('rejects %j', (spec) => {
    expect(thrown(() => netnsPath(spec as string | number)).code).toBe('ERR_CONNTRACK_INVALID_ARGUMENT');
  });
});

describe('reading through a namespace', () => {
  it('reads one setting as a number, by either name', async () => {
    const { files } = fakeNamespace();
    expect(await readSysctlWith(files, 'net.netfilter.nf_conntrack_max')).toBe(262144);
    expect(await readSysctlWith(files, 'nf_conntrack_max')).toBe(262144);
  });

  it('reads every nf_conntrack_* setting and nothing else, by full name', async () => {
    const { files } = fakeNamespace();
    const all = await readAllSysctlsWith(files);
    expect(Object.keys(all)).toHaveLength(LISTING.filter((name) => name.startsWith('nf_conntrack_')).length);
    expect(all['net.netfilter.nf_conntrack_buckets']).toBe(262144);
    expect(Object.keys(all).every((key) => key.startsWith('net.netfilter.nf_conntrack_'))).toBe(true);
  });

  it('never turns an injected name into a path', async () => {
    const { files, touched } = fakeNamespace();
    const error = await rejection(readSysctlWith(files, 'nf_conntrack_max/../../../../etc/passwd'));
    expect(error.code).toBe('ERR_CONNTRACK_SYSCTL');
    expect(touched).toEqual([]);
    await rejection(readSysctlWith(files, 'nf_conntrack_nope'));
    expect(touched).toEqual([DIR]);
  });
});

describe('writing through a namespace', () => {
  it('writes, reads back and returns the kernel value', async () => {
    const { files, writes, values } = fakeNamespace({ inode: 4026532246 });
    expect(await writeSysctlWith(files, 'nf_conntrack_tcp_timeout_established', '3600')).toBe(3600);
    expect(writes).toEqual([[`${DIR}/nf_conntrack_tcp_timeout_established`, '3600\n']]);
    expect(values.get(`${DIR}/nf_conntrack_tcp_timeout_established`)).toBe('3600\n');
  });

  it('fails when the value did not take', async () => {
    const { files } = fakeNamespace({ kernel: (_path, value) => value - 1 });
    const error = await rejection(writeSysctlWith(files, 'nf_conntrack_udp_timeout', 60));
    expect(error.code).toBe('ERR_CONNTRACK_SYSCTL');
    expect(error.message).toBe('wrote net.netfilter.nf_conntrack_udp_timeout = 60 but the kernel reports 59; the setting did not take');
  });

  it('accepts the kernel rounding buckets up to whole pages', async () => {
    const { files } = fakeNamespace({ kernel: (_path, value) => Math.ceil(value / 512) * 512 });
    expect(await writeSysctlWith(files, 'nf_conntrack_buckets', 1000)).toBe(1024);
  });

  it('resizes through the hashsize parameter where nf_conntrack_buckets is read-only (before 4.8)', async () => {
    const { files, writes } = fakeNamespace({ readOnly: ['nf_conntrack_buckets'] });
    expect(await writeSysctlWith(files, 'nf_conntrack_buckets', 131072)).toBe(131072);
    expect(writes).toEqual([['/sys/module/nf_conntrack/parameters/hashsize', '131072\n']]);
  });

  it.each(['nf_conntrack_max', 'nf_conntrack_buckets', 'nf_conntrack_expect_max'])(
    'refuses %s outside the initial namespace without writing',
    async (name) => {
      const { files, writes } = fakeNamespace({ inode: 4026532246 });
      const error = await rejection(writeSysctlWith(files, name, 1000));
      expect(error.code).toBe('ERR_CONNTRACK_SYSCTL');
      expect(error.message).toContain('can only be changed from the initial network namespace');
      expect(error.message).toContain('the limit is global');
      expect(writes).toEqual([]);
    },
  );

  it('refuses read-only settings', async () => {
    const { files, writes } = fakeNamespace();
    const error = await rejection(writeSysctlWith(files, 'nf_conntrack_count', 1));
    expect(error.message).toBe('net.netfilter.nf_conntrack_count is read-only');
    expect(writes).toEqual([]);
  });

  it('validates before writing', async () => {
    const { files, writes } = fakeNamespace();
    const error = await rejection(writeSysctlWith(files, 'nf_conntrack_acct', 5));
    expect(error.code).toBe('ERR_CONNTRACK_SYSCTL');
    expect(writes).toEqual([]);
  });

  it('keeps the IPv6 fragment thresholds ordered', async () => {
    const { files, writes } = fakeNamespace();
    const error = await rejection(writeSysctlWith(files, 'nf_conntrack_frag6_low_thresh', 5_000_000));
    expect(error.message).toContain('must be at most net.netfilter.nf_conntrack_frag6_high_thresh (4194304)');
    expect(writes).toEqual([]);
    expect(await writeSysctlWith(files, 'nf_conntrack_frag6_high_thresh', 8_000_000)).toBe(8_000_000);
    expect(await writeSysctlWith(files, 'nf_conntrack_frag6_low_thresh', 5_000_000)).toBe(5_000_000);
  });

  it('maps EACCES to a permission error naming CAP_NET_ADMIN', async () => {
    const { files } = fakeNamespace({ failWrite: { [`${DIR}/nf_conntrack_acct`]: 'EACCES' } });
    const error = await rejection(writeSysctlWith(files, 'nf_conntrack_acct', 1));
    expect(error.code).toBe('ERR_CONNTRACK_PERMISSION');
    expect(error.capability).toBe('CAP_NET_ADMIN');
    expect(error.message).toContain('run as root');
  });

  it('maps EACCES on a global limit to the namespace explanation', async () => {
    const { files } = fakeNamespace({ failWrite: { [`${DIR}/nf_conntrack_max`]: 'EACCES' } });
    const error = await rejection(writeSysctlWith(files, 'nf_conntrack_max', 1000));
    expect(error.code).toBe('ERR_CONNTRACK_SYSCTL');
    expect(error.message).toContain('only the initial network namespace may change it');
  });

  it('maps a kernel EINVAL to a sysctl error', async () => {
    const { files } = fakeNamespace({ failWrite: { [`${DIR}/nf_conntrack_events`]: 'EINVAL' } });
    const error = await rejection(writeSysctlWith(files, 'nf_conntrack_events', 2));
    expect(error.code).toBe('ERR_CONNTRACK_SYSCTL');
    expect(error.message).toContain('the kernel rejected the value');
  });
});

describe('sysctl command', () => {
  it('describes settings as JSON', async () => {
    const { code, out } = await runCommand(sysctlCommand, ['describe', 'nf_conntrack_max', 'net.netfilter.nf_conntrack_udp_timeout', '--json']);
    expect(code).toBe(0);
    const parsed = JSON.parse(out) as Array<{ name: string; writable: string; scope: string }>;
    expect(parsed.map((d) => [d.name, d.scope, d.writable])).toEqual([
      ['net.netfilter.nf_conntrack_max', 'global', 'initial-netns-only'],
      ['net.netfilter.nf_conntrack_udp_timeout', 'per-netns', 'any-netns'],
    ]);
  });

  it('describes settings for people', async () => {
    const { code, out } = await runCommand(sysctlCommand, ['describe', 'nf_conntrack_tcp_timeout_established']);
    expect(code).toBe(0);
    expect(out).toContain('type seconds, range 1 .. 2147483 seconds');
    expect(out).toContain('per network namespace; writable: in any namespace');
  });

  it('exits 1 with the library message for a path-like name, before touching anything', async () => {
    const { code, err } = await runCommand(sysctlCommand, ['get', '../../etc/passwd']);
    expect(code).toBe(1);
    expect(err).toContain('is not a conntrack sysctl name');
  });

  it.each([[[]], [['frobnicate']], [['set']], [['set', 'nf_conntrack_max']], [['get', '--netns']]])('exits 2 for %j', async (argv) => {
    const { code, err } = await runCommand(sysctlCommand, argv);
    expect(code).toBe(2);
    expect(err).toContain('usage: conntrack sysctl');
  });
});
