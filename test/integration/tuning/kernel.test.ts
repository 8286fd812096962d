/**
 * The library's knowledge of the kernel against the running kernel, so that a kernel the unit
 * tests' hard-coded listing and 24 GiB defaults do not describe shows up here: KNOWN_SYSCTLS and
 * describeSysctl() against /proc/sys/net/netfilter in a fresh namespace and in the initial one,
 * and kernelDefaults() against the bucket count and expectation limit this machine booted with.
 */
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { release } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { kernelDefaults } from '../../../lib/tuning/sizing.js';
import { KNOWN_SYSCTLS, describeSysctl } from '../../../lib/tuning/sysctl.js';
import { describeIntegration } from '../../helpers/gate.js';
import { createNetns, destroyAllNetns, type Netns } from '../../helpers/netns.js';

const NETFILTER = '/proc/sys/net/netfilter';

/** Where sysctl.d(5) and modprobe.d(5) look, in their order. */
const SYSCTL_CONFIG = ['/etc/sysctl.conf', '/etc/sysctl.d', '/run/sysctl.d', '/usr/local/lib/sysctl.d', '/usr/lib/sysctl.d', '/lib/sysctl.d'];
const MODPROBE_CONFIG = ['/etc/modprobe.d', '/run/modprobe.d', '/usr/local/lib/modprobe.d', '/usr/lib/modprobe.d', '/lib/modprobe.d'];

function configFiles(places: readonly string[]): string[] {
  return places.flatMap((place) => {
    try {
      return statSync(place).isDirectory()
        ? readdirSync(place).filter((name) => name.endsWith('.conf')).sort().map((name) => join(place, name))
        : [place];
    } catch {
      return [];
    }
  });
}

/** The last value this machine's sysctl configuration gives `net.netfilter.NAME`, if any. */
function configuredSysctl(name: string): number | undefined {
  let value: number | undefined;
  for (const file of configFiles(SYSCTL_CONFIG)) {
    for (const line of readFileSync(file, 'utf8').split('\n')) {
      const match = /^\s*-?net[./]netfilter[./](\S+)\s*=\s*(\d+)\s*$/.exec(line);
      if (match?.[1] === name) value = Number(match[2]);
    }
  }
  return value;
}

/** nf_conntrack.hashsize given on the kernel command line or in modprobe options; 0 when not. */
function hashsizeParam(): number {
  const cmdline = /(?:^|\s)nf_conntrack\.hashsize=(\d+)/.exec(readFileSync('/proc/cmdline', 'utf8'))?.[1];
  if (cmdline !== undefined) return Number(cmdline);
  let value = 0;
  for (const file of configFiles(MODPROBE_CONFIG)) {
    for (const line of readFileSync(file, 'utf8').split('\n')) {
      const match = /^\s*options\s+nf_conntrack\s+.*\bhashsize=(\d+)/.exec(line);
      if (match?.[1] !== undefined) value = Number(match[1]);
    }
  }
  return value;
}

describeIntegration('the library against the live kernel: sysctl table and default limits', () => {
  let ns: Netns;

  beforeAll(async () => {
    ns = await createNetns('kernel');
  });

  afterAll(destroyAllNetns);

  it('knows every nf_conntrack_* sysctl this kernel lists, in a new namespace and in the initial one', async () => {
    const inNamespace = (await ns.exec('ls', [NETFILTER])).stdout.split('\n').filter((name) => name.startsWith('nf_conntrack_'));
    const inHost = readdirSync(NETFILTER).filter((name) => name.startsWith('nf_conntrack_'));
    expect(inNamespace.length).toBeGreaterThan(10);
    const unknown = [...new Set([...inNamespace, ...inHost])].filter((name) => !KNOWN_SYSCTLS.includes(name) || !describeSysctl(name).known);
    expect(unknown, 'listed by this kernel, unknown to lib/tuning/sysctl.ts').toEqual([]);
  });

  it('says which settings a namespace may write as the kernel does (their file modes there)', async () => {
    // The kernel makes the global limits read-only (0444) outside the initial namespace, and
    // nf_conntrack_count everywhere.
    const { stdout } = await ns.exec('sh', ['-c', `cd ${NETFILTER} && stat -c '%n %a' nf_conntrack_*`]);
    const modes = stdout.trim().split('\n').map((line) => line.split(' ') as [string, string]);
    expect(modes.length).toBeGreaterThan(10);
    const wrong = modes.filter(([name, mode]) => (mode === '444') !== (describeSysctl(name).writable !== 'any-netns'))
      .map(([name, mode]) => `${name} ${mode}: ${describeSysctl(name).writable}`);
    expect(wrong).toEqual([]);
    const hostCount = statSync(join(NETFILTER, 'nf_conntrack_count')).mode & 0o777;
    expect(hostCount.toString(8)).toBe('444');
    expect(describeSysctl('nf_conntrack_count').writable).toBe('read-only');
  });

  it("kernelDefaults() gives this machine's boot-time bucket count and expectation limit", () => {
    const memTotalKiB = Number(/^MemTotal:\s+(\d+) kB$/m.exec(readFileSync('/proc/meminfo', 'utf8'))?.[1]);
    const defaults = kernelDefaults({ kernelRelease: release(), memoryBytes: memTotalKiB * 1024, hashsizeParam: hashsizeParam() });
    const live = {
      buckets: Number(readFileSync(join(NETFILTER, 'nf_conntrack_buckets'), 'utf8')),
      expectMax: Number(readFileSync(join(NETFILTER, 'nf_conntrack_expect_max'), 'utf8')),
    };
    // A value this machine's sysctl configuration sets is no default: it must then be that value.
    // nf_conntrack_max itself is not compared: admins, orchestrators (kube-proxy, Docker) and this
    // suite's own lock change it at run time, and nothing keeps its boot value. The expectation
    // limit, computed at boot from the same bucket count, stands witness for the model instead.
    const expected = {
      buckets: configuredSysctl('nf_conntrack_buckets') ?? defaults.buckets,
      expectMax: configuredSysctl('nf_conntrack_expect_max') ?? defaults.expectMax,
    };
    expect(live, `kernelDefaults(): ${defaults.rule}`).toEqual(expected);
  });
}, { tools: [] });
