/**
 * lib/tuning/sysctl.ts and lib/tuning/persist.ts against the real kernel, in a throw-away network namespace:
 * what the library reads must be what `sysctl -a` prints, per-namespace writes must stay in the
 * namespace, and the global limits must be refused outside the initial namespace, as the kernel
 * itself refuses them.
 */
import { spawnSync } from 'node:child_process';
import { chmod, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { renderPersistence } from '../../../lib/tuning/persist.js';
import { readAllSysctls, readSysctl, writeSysctl } from '../../../lib/tuning/sysctl.js';
import { rejection } from '../../helpers/errors.js';
import { describeIntegration } from '../../helpers/gate.js';
import { holdGlobalLimits, type GlobalLimitsLock } from '../../helpers/global-lock.js';
import { createNetns, destroyAllNetns, run, type Netns } from '../../helpers/netns.js';
import { requireTool } from '../../helpers/tools.js';

const REPO = fileURLToPath(new URL('../../..', import.meta.url));
const VITE_NODE = join(REPO, 'node_modules/.bin/vite-node');

/** `sysctl -a` lines for net.netfilter.nf_conntrack_*, as name → value text. */
function parseSysctlDump(text: string): Record<string, string> {
  const result: Record<string, string> = {};
  for (const line of text.split('\n')) {
    const match = /^(net\.netfilter\.nf_conntrack_\S+) = (.*)$/.exec(line);
    if (match) result[match[1] as string] = (match[2] as string).trim();
  }
  return result;
}

function asText(values: Record<string, number | string>): Record<string, string> {
  return Object.fromEntries(Object.entries(values).map(([name, value]) => [name, String(value)]));
}

describeIntegration('conntrack sysctls in a network namespace', () => {
  let limits: GlobalLimitsLock | undefined;
  let ns: Netns;
  let scratch: string;
  const sysctlTool = requireTool('sysctl');

  beforeAll(async () => {
    // Compared with nf_conntrack_max below: nobody may change it meanwhile.
    limits = await holdGlobalLimits('shared');
    ns = await createNetns('sysctl');
    scratch = await mkdtemp(join(tmpdir(), 'ct-sysctl-'));
  });

  afterAll(async () => {
    limits?.release();
    await destroyAllNetns();
    if (scratch) await rm(scratch, { recursive: true, force: true });
  });

  it('reads every nf_conntrack_* setting of the namespace exactly as sysctl -a prints it', async () => {
    // A value the host does not have, so reading the wrong namespace cannot pass.
    const hostClose = await readSysctl('nf_conntrack_tcp_timeout_close');
    await ns.sysctl('net.netfilter.nf_conntrack_tcp_timeout_close', hostClose === 13 ? 14 : 13);
    const expected = parseSysctlDump((await ns.exec(sysctlTool, ['-a'])).stdout);
    expect(Object.keys(expected).length).toBeGreaterThan(20);
    const actual = await readAllSysctls({ netns: ns.path });
    expect(asText(actual)).toEqual(expected);
  });

  it('reads the host namespace as sysctl -a prints it (the live count aside)', async () => {
    const expected = parseSysctlDump((await run(sysctlTool, ['-a'])).stdout);
    const actual = asText(await readAllSysctls());
    delete expected['net.netfilter.nf_conntrack_count'];
    delete actual['net.netfilter.nf_conntrack_count'];
    expect(actual).toEqual(expected);
  });

  it('reaches the namespace through a pid inside it', async () => {
    const sleeper = ns.spawn('sleep', ['30'], { stdio: 'ignore' });
    try {
      await new Promise((resolve) => sleeper.once('spawn', resolve));
      // `ip netns exec` execs sleep in place, so this pid lives in the namespace.
      const pid = sleeper.pid as number;
      await ns.sysctl('net.netfilter.nf_conntrack_icmp_timeout', 23);
      expect(await readSysctl('nf_conntrack_icmp_timeout', { netns: pid })).toBe(23);
    } finally {
      sleeper.kill('SIGKILL');
    }
  });

  it('writes a per-namespace timeout, reads it back, and leaves the host alone', async () => {
    const hostBefore = await readSysctl('net.netfilter.nf_conntrack_udp_timeout');
    const target = hostBefore === 47 ? 48 : 47;
    expect(await writeSysctl('net.netfilter.nf_conntrack_udp_timeout', target, { netns: ns.path })).toBe(target);
    expect((await ns.exec(sysctlTool, ['-n', 'net.netfilter.nf_conntrack_udp_timeout'])).stdout.trim()).toBe(String(target));
    expect(await readSysctl('nf_conntrack_udp_timeout', { netns: ns.path })).toBe(target);
    expect(await readSysctl('net.netfilter.nf_conntrack_udp_timeout')).toBe(hostBefore);
  });

  it('writes a per-namespace switch', async () => {
    expect(await writeSysctl('nf_conntrack_acct', true, { netns: ns.path })).toBe(1);
    expect((await ns.exec(sysctlTool, ['-n', 'net.netfilter.nf_conntrack_acct'])).stdout.trim()).toBe('1');
  });

  it('refuses nf_conntrack_max and nf_conntrack_buckets inside the namespace, as the kernel does', async () => {
    const hostMax = await readSysctl('nf_conntrack_max');
    for (const name of ['net.netfilter.nf_conntrack_max', 'net.netfilter.nf_conntrack_buckets']) {
      const error = await rejection(writeSysctl(name, 1000, { netns: ns.path }));
      expect(error.code).toBe('ERR_CONNTRACK_SYSCTL');
      expect(error.message).toContain('can only be changed from the initial network namespace');
      expect(error.message).toContain('the limit is global');
    }
    // The kernel agrees: the file is read-only there (EACCES even for root).
    const kernel = spawnSync(requireTool('ip'), ['netns', 'exec', ns.name, 'sh', '-c', 'echo 1000 > /proc/sys/net/netfilter/nf_conntrack_max'], { encoding: 'utf8' });
    expect(kernel.status).not.toBe(0);
    expect(kernel.stderr).toMatch(/Permission denied/);
    expect(await readSysctl('nf_conntrack_max')).toBe(hostMax);
  });

  it('validates before writing: out-of-range values never reach the kernel', async () => {
    const before = await readSysctl('nf_conntrack_tcp_timeout_established', { netns: ns.path });
    const error = await rejection(writeSysctl('nf_conntrack_tcp_timeout_established', 0, { netns: ns.path }));
    expect(error.code).toBe('ERR_CONNTRACK_SYSCTL');
    expect(await readSysctl('nf_conntrack_tcp_timeout_established', { netns: ns.path })).toBe(before);
  });

  it('refuses unknown names and path injection with close matches', async () => {
    const unknown = await rejection(readSysctl('nf_conntrack_udp_timeout_streem', { netns: ns.path }));
    expect(unknown.code).toBe('ERR_CONNTRACK_SYSCTL');
    expect(unknown.message).toContain('net.netfilter.nf_conntrack_udp_timeout_stream');
    const injected = await rejection(readSysctl('../../../../etc/passwd', { netns: ns.path }));
    expect(injected.code).toBe('ERR_CONNTRACK_SYSCTL');
  });

  it('in a process living in the namespace: detects the non-initial namespace itself, and maps EACCES', async () => {
    const script = join(scratch, 'in-namespace.ts');
    const sysctlModule = join(REPO, 'lib/tuning/sysctl.ts');
    await writeFile(script, [
      `import { readAllSysctls, writeSysctl } from ${JSON.stringify(sysctlModule)};`,
      'const outcome = async (fn: () => Promise<unknown>) => {',
      '  try { return { value: await fn() }; } catch (e) { return { code: (e as { code?: string }).code, capability: (e as { capability?: string }).capability, message: (e as Error).message }; }',
      '};',
      'const mode = process.argv[2];',
      'const result = mode === "unprivileged"',
      '  ? { timeout: await outcome(() => writeSysctl("nf_conntrack_udp_timeout_stream", 99)) }',
      '  : { all: await readAllSysctls(), max: await outcome(() => writeSysctl("nf_conntrack_max", 1000)), timeout: await outcome(() => writeSysctl("nf_conntrack_generic_timeout", 77)) };',
      'console.log(JSON.stringify(result));',
    ].join('\n'));
    // The unprivileged run below must be able to read the script.
    await chmod(scratch, 0o755);
    await chmod(script, 0o644);

    const before = parseSysctlDump((await ns.exec(sysctlTool, ['-a'])).stdout);

    const asRoot = JSON.parse((await ns.exec(VITE_NODE, [script, 'root'], { timeoutMs: 60_000 })).stdout.trim().split('\n').at(-1) as string);
    expect(asText(asRoot.all)).toEqual(before);
    expect(asRoot.max.code).toBe('ERR_CONNTRACK_SYSCTL');
    expect(asRoot.max.message).toContain('initial network namespace');
    expect(asRoot.timeout).toEqual({ value: 77 });
    expect(await readSysctl('nf_conntrack_generic_timeout', { netns: ns.path })).toBe(77);

    // uid 65534 without capabilities: the kernel refuses the write, the library says what to do.
    const setpriv = requireTool('setpriv');
    const asNobody = JSON.parse((await ns.exec(setpriv, ['--reuid=65534', '--regid=65534', '--clear-groups', VITE_NODE, script, 'unprivileged'], { timeoutMs: 60_000 }))
      .stdout.trim().split('\n').at(-1) as string);
    expect(asNobody.timeout.code).toBe('ERR_CONNTRACK_PERMISSION');
    expect(asNobody.timeout.capability).toBe('CAP_NET_ADMIN');
    expect(asNobody.timeout.message).toContain('run as root');
  });

  it('renders a sysctl.d fragment that procps sysctl -p applies', async () => {
    const [file] = renderPersistence(
      { sysctls: { nf_conntrack_udp_timeout: 33, 'net.netfilter.nf_conntrack_tcp_timeout_time_wait': 61 } },
      { linkage: 'built-in' },
    );
    const path = join(scratch, '90-conntrack.conf');
    await writeFile(path, file?.content as string);
    await ns.exec(sysctlTool, ['-p', path]);
    expect(await readSysctl('nf_conntrack_udp_timeout', { netns: ns.path })).toBe(33);
    expect(await readSysctl('nf_conntrack_tcp_timeout_time_wait', { netns: ns.path })).toBe(61);
  });
}, { tools: ['sysctl', 'setpriv'] });
