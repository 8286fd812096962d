import { chmod, lstat, mkdir, mkdtemp, readdir, readFile, rm, stat, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { persistCommand } from '../../../lib/cli/tuning.js';
import { ConntrackError } from '../../../lib/base/errors.js';
import {
  UDEV_RULE,
  applyPersistence,
  bootParameterAdvice,
  detectConntrackLinkage,
  mergeFileContent,
  renderPersistence,
  type PersistenceFile,
} from '../../../lib/tuning/persist.js';
import { runCommand } from '../../helpers/cli.js';

const HEADER = '# Written by the conntrack npm package (conntrack persist). Lines it does not own are kept.';
const SYSCTL_FILE = '/etc/sysctl.d/90-conntrack.conf';
const UDEV_FILE = '/etc/udev/rules.d/90-conntrack.rules';
const MODPROBE_FILE = '/etc/modprobe.d/conntrack.conf';

function lines(text: string): string[] {
  expect(text.endsWith('\n')).toBe(true);
  return text.slice(0, -1).split('\n');
}

function byPath(files: PersistenceFile[], path: string): PersistenceFile {
  const file = files.find((candidate) => candidate.path === path);
  if (file === undefined) throw new Error(`no ${path} in ${files.map((f) => f.path).join(', ')}`);
  return file;
}

describe('renderPersistence', () => {
  it('renders sysctl.d, the udev rule and modprobe options for a module', () => {
    const files = renderPersistence(
      { max: 1_048_576, buckets: 262_144, sysctls: { 'net.netfilter.nf_conntrack_tcp_timeout_established': 86400, nf_conntrack_acct: true } },
      { linkage: 'module' },
    );
    expect(files.map((file) => file.path)).toEqual([SYSCTL_FILE, UDEV_FILE, MODPROBE_FILE]);
    expect(lines(byPath(files, SYSCTL_FILE).content)).toEqual([
      HEADER,
      'net.netfilter.nf_conntrack_buckets = 262144',
      'net.netfilter.nf_conntrack_max = 1048576',
      'net.netfilter.nf_conntrack_acct = 1',
      'net.netfilter.nf_conntrack_tcp_timeout_established = 86400',
    ]);
    expect(lines(byPath(files, UDEV_FILE).content)).toEqual([
      HEADER,
      'ACTION=="add", SUBSYSTEM=="module", KERNEL=="nf_conntrack", RUN+="/usr/lib/systemd/systemd-sysctl --prefix=/net/netfilter"',
    ]);
    expect(lines(byPath(files, MODPROBE_FILE).content)).toEqual([HEADER, 'options nf_conntrack hashsize=262144']);
    for (const file of files) expect(file.purpose.length).toBeGreaterThan(30);
  });

  it('leaves out modprobe options and the udev rule when conntrack is built in', () => {
    const files = renderPersistence({ max: 1_048_576, buckets: 262_144 }, { linkage: 'built-in' });
    expect(files.map((file) => file.path)).toEqual([SYSCTL_FILE]);
    const advice = bootParameterAdvice(262_144, 'built-in');
    expect(advice).toContain('modprobe options never apply');
    expect(advice).toContain('nf_conntrack.hashsize=262144');
    expect(bootParameterAdvice(262_144, 'module')).toBeUndefined();
  });

  it('says the module files only matter for a module when the linkage is unknown', () => {
    const files = renderPersistence({ buckets: 65_536 });
    expect(byPath(files, UDEV_FILE).purpose).toContain('Only matters if nf_conntrack is a loadable module');
    expect(byPath(files, MODPROBE_FILE).purpose).toContain('Only matters if nf_conntrack is a loadable module');
  });

  it('renders no modprobe file without buckets', () => {
    expect(renderPersistence({ max: 65_536 }, { linkage: 'module' }).map((file) => file.path)).toEqual([SYSCTL_FILE, UDEV_FILE]);
  });

  it('takes another sysctl.d file name', () => {
    expect(renderPersistence({ max: 1 }, { sysctlFile: '/etc/sysctl.d/60-ct.conf', linkage: 'built-in' })[0]?.path).toBe('/etc/sysctl.d/60-ct.conf');
  });

  it.each([
    ['nothing', {}, /nothing to persist/],
    ['a negative max', { max: -1 }, /max must be/],
    ['a fractional max', { max: 1.5 }, /max must be/],
    ['zero buckets', { buckets: 0 }, /buckets must be/],
    ['an unknown sysctl', { sysctls: { nf_conntrack_maxx: 1 } }, /unknown sysctl/],
    ['a path as a sysctl', { sysctls: { '../../etc/passwd': 1 } }, /not a conntrack sysctl name/],
    ['a read-only sysctl', { sysctls: { nf_conntrack_count: 1 } }, /read-only/],
    ['an out-of-range value', { sysctls: { nf_conntrack_udp_timeout: 0 } }, /out of range/],
    ['conflicting values', { max: 5, sysctls: { nf_conntrack_max: 6 } }, /given twice/],
  ])('rejects %s', (_label, settings, message) => {
    expect(() => renderPersistence(settings)).toThrow(message);
  });

  it.each(['/etc/sysctl.d/../passwd.conf', '/etc/sysctl.conf', '/etc/sysctl.d/sub/x.conf', 'etc/sysctl.d/x.conf', '/etc/sysctl.d/x.txt'])(
    'rejects sysctl file %s',
    (sysctlFile) => {
      expect(() => renderPersistence({ max: 1 }, { sysctlFile })).toThrow(ConntrackError);
    },
  );
});

describe('mergeFileContent', () => {
  const [sysctl, udev, modprobe] = renderPersistence({ max: 1_048_576, buckets: 262_144 }, { linkage: 'module' }) as [
    PersistenceFile, PersistenceFile, PersistenceFile,
  ];

  it('keeps unrelated sysctl lines, replaces ours in place and drops later duplicates of ours', () => {
    const existing = [
      '# local tuning',
      'net.core.somaxconn = 4096',
      'net.netfilter.nf_conntrack_max=65536',
      '',
      '; old comment net.netfilter.nf_conntrack_buckets = 1',
      'net.netfilter.nf_conntrack_tcp_timeout_established = 3600',
      '-net/netfilter/nf_conntrack_max = 1',
      'vm.swappiness=10',
    ].join('\n');
    expect(lines(mergeFileContent(sysctl, existing))).toEqual([
      '# local tuning',
      'net.core.somaxconn = 4096',
      'net.netfilter.nf_conntrack_max = 1048576',
      '',
      '; old comment net.netfilter.nf_conntrack_buckets = 1',
      'net.netfilter.nf_conntrack_tcp_timeout_established = 3600',
      'vm.swappiness=10',
      HEADER,
      'net.netfilter.nf_conntrack_buckets = 262144',
    ]);
  });

  it('replaces our udev rule and keeps other rules', () => {
    const existing = [
      'ACTION=="add", SUBSYSTEM=="module", KERNEL=="br_netfilter", RUN+="/usr/lib/systemd/systemd-sysctl --prefix=/net/bridge"',
      'ACTION=="add", SUBSYSTEM=="module", KERNEL=="nf_conntrack", RUN+="/sbin/sysctl -p /etc/sysctl.d/old.conf"',
    ].join('\n');
    expect(lines(mergeFileContent(udev, existing))).toEqual([
      'ACTION=="add", SUBSYSTEM=="module", KERNEL=="br_netfilter", RUN+="/usr/lib/systemd/systemd-sysctl --prefix=/net/bridge"',
      UDEV_RULE,
    ]);
  });

  it('owns only hashsize= in modprobe options and keeps the other options', () => {
    const existing = [
      'options nf_conntrack expect_hashsize=1024 hashsize=16384',
      'options bonding max_bonds=0',
      'options nf_conntrack hashsize=8192',
      'options nf_conntrack acct=1 hashsize=4096',
    ].join('\n');
    expect(lines(mergeFileContent(modprobe, existing))).toEqual([
      'options nf_conntrack expect_hashsize=1024 hashsize=262144',
      'options bonding max_bonds=0',
      'options nf_conntrack acct=1',
    ]);
  });

  it('appends to a file without our lines', () => {
    expect(lines(mergeFileContent(modprobe, 'blacklist pcspkr\n'))).toEqual([
      'blacklist pcspkr',
      HEADER,
      'options nf_conntrack hashsize=262144',
    ]);
  });
});

describe('applyPersistence', () => {
  let root: string;

  beforeEach(async () => {
    root = await mkdtemp(join(tmpdir(), 'ct-persist-'));
  });

  afterEach(async () => {
    await rm(root, { recursive: true, force: true });
  });

  it('writes every file under the root, line by line, mode 0644', async () => {
    const files = renderPersistence({ max: 1_048_576, buckets: 262_144 }, { linkage: 'module' });
    const applied = await applyPersistence(files, { root });
    expect(applied).toEqual(files.map((file) => ({ path: file.path, writtenTo: join(root, file.path), changed: true })));
    expect(lines(await readFile(join(root, SYSCTL_FILE), 'utf8'))).toEqual([
      HEADER,
      'net.netfilter.nf_conntrack_buckets = 262144',
      'net.netfilter.nf_conntrack_max = 1048576',
    ]);
    expect(lines(await readFile(join(root, UDEV_FILE), 'utf8'))).toEqual([HEADER, UDEV_RULE]);
    expect(lines(await readFile(join(root, MODPROBE_FILE), 'utf8'))).toEqual([HEADER, 'options nf_conntrack hashsize=262144']);
    expect((await stat(join(root, SYSCTL_FILE))).mode & 0o777).toBe(0o644);
  });

  it('preserves unrelated lines and the file mode, replacing the file by rename', async () => {
    const target = join(root, SYSCTL_FILE);
    await mkdir(dirname(target), { recursive: true });
    await writeFile(target, 'kernel.pid_max = 4194304\nnet.netfilter.nf_conntrack_max = 1\n');
    await chmod(target, 0o600);
    const inodeBefore = (await stat(target)).ino;

    await applyPersistence(renderPersistence({ max: 2_000_000 }, { linkage: 'built-in' }), { root });

    expect(lines(await readFile(target, 'utf8'))).toEqual(['kernel.pid_max = 4194304', 'net.netfilter.nf_conntrack_max = 2000000']);
    const after = await stat(target);
    expect(after.mode & 0o777).toBe(0o600);
    // A new inode: the content arrived by rename(2), never by rewriting the old file in place.
    expect(after.ino).not.toBe(inodeBefore);
    // No temporary file left behind in the directory.
    expect(await readdir(dirname(target))).toEqual(['90-conntrack.conf']);
  });

  it('reports an unchanged file and leaves it alone', async () => {
    const files = renderPersistence({ max: 65_536 }, { linkage: 'built-in' });
    await applyPersistence(files, { root });
    const inode = (await stat(join(root, SYSCTL_FILE))).ino;
    const second = await applyPersistence(files, { root });
    expect(second[0]?.changed).toBe(false);
    expect((await stat(join(root, SYSCTL_FILE))).ino).toBe(inode);
  });

  it('needs an explicit root', async () => {
    const files = renderPersistence({ max: 65_536 }, { linkage: 'built-in' });
    await expect(applyPersistence(files, undefined as unknown as { root: string })).rejects.toThrow(/needs \{ root \}/);
    await expect(applyPersistence(files, {} as { root: string })).rejects.toThrow(/needs \{ root \}/);
    await expect(applyPersistence(files, { root: 'relative/dir' })).rejects.toThrow(/absolute/);
  });

  it('refuses a file outside its directory', async () => {
    const forged: PersistenceFile = {
      path: '/etc/sysctl.d/../../tmp/evil.conf', content: 'x\n', purpose: 'test', kind: 'sysctl.d', settings: {},
    };
    await expect(applyPersistence([forged], { root })).rejects.toThrow(ConntrackError);
    await expect(lstat(join(root, 'tmp'))).rejects.toThrow(/ENOENT/);
  });

  it('refuses to replace a symbolic link', async () => {
    const target = join(root, SYSCTL_FILE);
    await mkdir(dirname(target), { recursive: true });
    await writeFile(join(root, 'elsewhere.conf'), 'a = 1\n');
    await symlink(join(root, 'elsewhere.conf'), target);
    await expect(applyPersistence(renderPersistence({ max: 1 }, { linkage: 'built-in' }), { root })).rejects.toThrow(/symbolic link/);
    expect(await readFile(join(root, 'elsewhere.conf'), 'utf8')).toBe('a = 1\n');
  });
});

describe('detectConntrackLinkage', () => {
  let dir: string;

  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'ct-module-'));
  });

  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('tells built-in (parameters only), module (initstate) and not loaded apart', async () => {
    const moduleDir = join(dir, 'nf_conntrack');
    expect(await detectConntrackLinkage(moduleDir)).toBe('not-loaded');
    await mkdir(join(moduleDir, 'parameters'), { recursive: true });
    expect(await detectConntrackLinkage(moduleDir)).toBe('built-in');
    await writeFile(join(moduleDir, 'initstate'), 'live\n');
    expect(await detectConntrackLinkage(moduleDir)).toBe('module');
  });
});

describe('persist command', () => {
  let root: string;

  beforeEach(async () => {
    root = await mkdtemp(join(tmpdir(), 'ct-persist-cli-'));
  });

  afterEach(async () => {
    await rm(root, { recursive: true, force: true });
  });

  it('writes the files under --root with --apply', async () => {
    const { code, out } = await runCommand(persistCommand, ['--max', '1048576', '--buckets', '262144', '--sysctl', 'nf_conntrack_acct=1', '--apply', '--root', root, '--json']);
    expect(code).toBe(0);
    const parsed = JSON.parse(out) as { applied: Array<{ path: string; changed: boolean }> };
    expect(parsed.applied.map((file) => file.path)).toContain(SYSCTL_FILE);
    expect(lines(await readFile(join(root, SYSCTL_FILE), 'utf8'))).toEqual([
      HEADER,
      'net.netfilter.nf_conntrack_buckets = 262144',
      'net.netfilter.nf_conntrack_max = 1048576',
      'net.netfilter.nf_conntrack_acct = 1',
    ]);
  });

  it('only prints without --apply', async () => {
    const { code, out } = await runCommand(persistCommand, ['--max', '65536']);
    expect(code).toBe(0);
    expect(out).toContain('net.netfilter.nf_conntrack_max = 65536');
    expect(out).toContain('Nothing written');
    expect(await readdir(root)).toEqual([]);
  });

  it.each([
    [['--apply']],
    [['--max', '5', '--root', '/tmp']],
    [['--max', 'lots']],
    [['--sysctl', 'nf_conntrack_acct']],
  ])('exits 2 for %j', async (argv) => {
    const { code, err } = await runCommand(persistCommand, argv);
    expect(code).toBe(2);
    expect(err).toContain('usage: conntrack persist');
  });
});
