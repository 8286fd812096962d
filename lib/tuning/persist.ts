/**
 * Makes conntrack settings survive a reboot: renders, and on request writes, the files that
 * apply them at boot.
 *
 * - /etc/sysctl.d/90-conntrack.conf: read at boot by systemd-sysctl (or `sysctl --system`).
 * - /etc/udev/rules.d/90-conntrack.rules: when nf_conntrack is a module its sysctls only exist
 *   after it loads, later than systemd-sysctl runs; this rule re-runs systemd-sysctl for
 *   /net/netfilter when the module appears (the pattern sysctl.d(5) documents for br_netfilter).
 * - /etc/modprobe.d/conntrack.conf: `options nf_conntrack hashsize=N` sizes the table when the
 *   module loads. Where conntrack is built into the kernel no module is loaded, so modprobe
 *   options and the udev rule never apply: use `nf_conntrack.hashsize=N` on the kernel command
 *   line (or the nf_conntrack_buckets sysctl, writable since 4.8).
 *
 * Writing merges: lines this library does not own are kept as they are, ours are replaced in
 * place, and every file is replaced atomically (temporary file in the same directory + rename).
 */
import { randomBytes } from 'node:crypto';
import { access, lstat, mkdir, open, readFile, rename, stat, unlink } from 'node:fs/promises';
import { dirname, isAbsolute, join, normalize, resolve, sep } from 'node:path';
import { ConntrackError, invalidArgument } from '../base/errors.js';
import { INT_MAX, MAX_BUCKETS } from './sizing.js';
import { describeSysctl, normalizeSysctlName, parseSysctlValue } from './sysctl.js';

export const DEFAULT_SYSCTL_FILE = '/etc/sysctl.d/90-conntrack.conf';
export const DEFAULT_UDEV_RULE_FILE = '/etc/udev/rules.d/90-conntrack.rules';
export const DEFAULT_MODPROBE_FILE = '/etc/modprobe.d/conntrack.conf';

/** The rule sysctl.d(5) gives for module-dependent sysctls, for nf_conntrack. */
export const UDEV_RULE =
  'ACTION=="add", SUBSYSTEM=="module", KERNEL=="nf_conntrack", RUN+="/usr/lib/systemd/systemd-sysctl --prefix=/net/netfilter"';

/** How nf_conntrack is present in the running kernel. */
export type ConntrackLinkage = 'built-in' | 'module' | 'not-loaded';

/**
 * Built-in code has /sys/module/NAME (for its parameters) but no `initstate`, which only
 * loadable modules have.
 */
export async function detectConntrackLinkage(moduleDir = '/sys/module/nf_conntrack'): Promise<ConntrackLinkage> {
  try {
    await stat(moduleDir);
  } catch {
    return 'not-loaded';
  }
  try {
    await access(join(moduleDir, 'initstate'));
    return 'module';
  } catch {
    return 'built-in';
  }
}

export interface PersistenceSettings {
  /** nf_conntrack_max. */
  max?: number;
  /** nf_conntrack_buckets / hashsize. */
  buckets?: number;
  /** Further net.netfilter.nf_conntrack_* settings (timeouts, acct, ...). */
  sysctls?: Record<string, number | string | boolean>;
}

export interface RenderOptions {
  /** How nf_conntrack is present; decides whether the udev rule and modprobe options are useful. */
  linkage?: ConntrackLinkage;
  /** Default DEFAULT_SYSCTL_FILE; must be /etc/sysctl.d/NAME.conf. */
  sysctlFile?: string;
}

export type PersistenceKind = 'sysctl.d' | 'udev' | 'modprobe.d';

export interface PersistenceFile {
  /** Absolute path on the target system. */
  path: string;
  /** The file as rendered for a system that does not have it yet. */
  content: string;
  purpose: string;
  kind: PersistenceKind;
  /** For sysctl.d: full sysctl name → value; for modprobe.d: hashsize. Drives merging. */
  settings: Readonly<Record<string, number>>;
}

const HEADER = '# Written by the conntrack npm package (conntrack persist). Lines it does not own are kept.';

function validatedSettings(settings: PersistenceSettings): Array<[string, number]> {
  if (settings === null || typeof settings !== 'object') throw invalidArgument('renderPersistence() takes a settings object');
  const entries = new Map<string, number>();
  if (settings.buckets !== undefined) {
    if (!Number.isInteger(settings.buckets) || settings.buckets < 1 || settings.buckets > MAX_BUCKETS) {
      throw invalidArgument(`buckets must be an integer from 1 to ${MAX_BUCKETS}, got ${String(settings.buckets)}`);
    }
    entries.set('net.netfilter.nf_conntrack_buckets', settings.buckets);
  }
  if (settings.max !== undefined) {
    if (!Number.isInteger(settings.max) || settings.max < 0 || settings.max > INT_MAX) {
      throw invalidArgument(`max must be an integer from 0 to ${INT_MAX}, got ${String(settings.max)}`);
    }
    entries.set('net.netfilter.nf_conntrack_max', settings.max);
  }
  for (const [name, value] of Object.entries(settings.sysctls ?? {})) {
    const full = `net.netfilter.${normalizeSysctlName(name)}`;
    const description = describeSysctl(full);
    if (description.writable === 'read-only') throw invalidArgument(`${full} is read-only and cannot be persisted`);
    const number = parseSysctlValue(description, value);
    const previous = entries.get(full);
    if (previous !== undefined && previous !== number) {
      throw invalidArgument(`${full} is given twice with different values (${previous} and ${number})`);
    }
    entries.set(full, number);
  }
  if (entries.size === 0) throw invalidArgument('nothing to persist: give max, buckets or sysctls');
  // Buckets first: size the table before raising the limit.
  return [...entries].sort(([a], [b]) => order(a) - order(b) || a.localeCompare(b));
}

function order(name: string): number {
  if (name === 'net.netfilter.nf_conntrack_buckets') return 0;
  if (name === 'net.netfilter.nf_conntrack_max') return 1;
  return 2;
}

function checkTargetPath(path: string, directory: string, suffix: string): string {
  if (typeof path !== 'string' || normalize(path) !== path || !path.startsWith(`${directory}/`) || !path.endsWith(suffix)
    || path.slice(directory.length + 1).includes('/')) {
    throw invalidArgument(`file must be ${directory}/NAME${suffix}, got ${JSON.stringify(path)}`);
  }
  return path;
}

/** The kernel command-line advice for built-in conntrack, or undefined when it does not apply. */
export function bootParameterAdvice(buckets: number | undefined, linkage: ConntrackLinkage | undefined): string | undefined {
  if (buckets === undefined || linkage !== 'built-in') return undefined;
  return `nf_conntrack is built into this kernel, so modprobe options never apply: add nf_conntrack.hashsize=${buckets} ` +
    'to the kernel command line (e.g. GRUB_CMDLINE_LINUX in /etc/default/grub, then update-grub) to allocate the table ' +
    'at that size at boot; the sysctl.d entry for nf_conntrack_buckets resizes it early in boot as well (Linux 4.8+).';
}

/** Renders the files that re-apply the settings at boot. Pure: reads and writes nothing. */
export function renderPersistence(settings: PersistenceSettings, options: RenderOptions = {}): PersistenceFile[] {
  const entries = validatedSettings(settings);
  const sysctlPath = checkTargetPath(options.sysctlFile ?? DEFAULT_SYSCTL_FILE, '/etc/sysctl.d', '.conf');
  const linkage = options.linkage;
  const files: PersistenceFile[] = [];

  files.push({
    path: sysctlPath,
    kind: 'sysctl.d',
    settings: Object.fromEntries(entries),
    purpose: 'Applied at boot by systemd-sysctl (or `sysctl --system`); takes effect now with `sysctl --system`.',
    content: `${HEADER}\n${entries.map(([name, value]) => `${name} = ${value}`).join('\n')}\n`,
  });

  if (linkage !== 'built-in') {
    const when = linkage === 'module' ? '' : ' Only matters if nf_conntrack is a loadable module.';
    files.push({
      path: DEFAULT_UDEV_RULE_FILE,
      kind: 'udev',
      settings: {},
      purpose: 'Re-applies the net.netfilter sysctls when the nf_conntrack module loads, which is after systemd-sysctl ' +
        `ran at boot (the rule sysctl.d(5) documents for module sysctls).${when}`,
      content: `${HEADER}\n${UDEV_RULE}\n`,
    });
    const buckets = entries.find(([name]) => name === 'net.netfilter.nf_conntrack_buckets')?.[1];
    if (buckets !== undefined) {
      files.push({
        path: DEFAULT_MODPROBE_FILE,
        kind: 'modprobe.d',
        settings: { hashsize: buckets },
        purpose: `Allocates ${buckets} buckets when the nf_conntrack module loads.${when}`,
        content: `${HEADER}\noptions nf_conntrack hashsize=${buckets}\n`,
      });
    }
  }
  return files;
}

function isComment(line: string): boolean {
  const trimmed = line.trim();
  return trimmed === '' || trimmed.startsWith('#') || trimmed.startsWith(';');
}

/** The sysctl name a sysctl.d line sets, in dotted form, or undefined. */
function sysctlLineKey(line: string): string | undefined {
  if (isComment(line)) return undefined;
  const equals = line.indexOf('=');
  if (equals < 0) return undefined;
  // A leading '-' only means "ignore failures"; '/' and '.' are both separators (sysctl.d(5)).
  return line.slice(0, equals).trim().replace(/^-/, '').replace(/\//g, '.');
}

function splitLines(text: string): string[] {
  const lines = text.split('\n');
  if (lines.at(-1) === '') lines.pop();
  return lines;
}

function mergeSysctl(file: PersistenceFile, existing: string): string {
  const pending = new Map(Object.entries(file.settings));
  const seen = new Set<string>();
  const out: string[] = [];
  for (const line of splitLines(existing)) {
    const key = sysctlLineKey(line);
    if (key === undefined || !pending.has(key)) {
      out.push(line);
      continue;
    }
    // Replace our key where it stands; drop later duplicates (the last one would win).
    if (!seen.has(key)) out.push(`${key} = ${pending.get(key)}`);
    seen.add(key);
  }
  const missing = [...pending].filter(([key]) => !seen.has(key));
  if (missing.length > 0) {
    if (!out.includes(HEADER)) out.push(HEADER);
    for (const [key, value] of missing) out.push(`${key} = ${value}`);
  }
  return `${out.join('\n')}\n`;
}

function isOurUdevRule(line: string): boolean {
  return !isComment(line) && line.includes('SUBSYSTEM=="module"') && line.includes('KERNEL=="nf_conntrack"');
}

function mergeUdev(existing: string): string {
  const out: string[] = [];
  let placed = false;
  for (const line of splitLines(existing)) {
    if (!isOurUdevRule(line)) {
      out.push(line);
    } else if (!placed) {
      out.push(UDEV_RULE);
      placed = true;
    }
  }
  if (!placed) {
    if (!out.includes(HEADER)) out.push(HEADER);
    out.push(UDEV_RULE);
  }
  return `${out.join('\n')}\n`;
}

const MODPROBE_OPTIONS = /^\s*options\s+nf_conntrack(\s|$)/;

function mergeModprobe(file: PersistenceFile, existing: string): string {
  const hashsize = file.settings.hashsize;
  const out: string[] = [];
  let placed = false;
  for (const line of splitLines(existing)) {
    if (isComment(line) || !MODPROBE_OPTIONS.test(line)) {
      out.push(line);
      continue;
    }
    // Keep the other options on the line (expect_hashsize, acct, ...); own only hashsize=.
    const words = line.trim().split(/\s+/);
    const others = words.slice(2).filter((word) => !word.startsWith('hashsize='));
    if (!placed) {
      out.push(['options', 'nf_conntrack', ...others, `hashsize=${hashsize}`].join(' '));
      placed = true;
    } else if (others.length > 0) {
      out.push(['options', 'nf_conntrack', ...others].join(' '));
    }
  }
  if (!placed) {
    if (!out.includes(HEADER)) out.push(HEADER);
    out.push(`options nf_conntrack hashsize=${hashsize}`);
  }
  return `${out.join('\n')}\n`;
}

/** The file's new content given what is there now (undefined: no file yet). */
export function mergeFileContent(file: PersistenceFile, existing: string | undefined): string {
  if (existing === undefined || existing.trim() === '') return file.content;
  switch (file.kind) {
    case 'sysctl.d':
      return mergeSysctl(file, existing);
    case 'udev':
      return mergeUdev(existing);
    case 'modprobe.d':
      return mergeModprobe(file, existing);
    default:
      throw invalidArgument(`unknown persistence file kind ${String((file as PersistenceFile).kind)}`);
  }
}

export interface ApplyOptions {
  /** Directory standing for / on the target system. Required; pass '/' to change the real system. */
  root: string;
}

export interface AppliedFile {
  path: string;
  /** Where it was written (root + path). */
  writtenTo: string;
  /** False when the file already had exactly this content. */
  changed: boolean;
}

const ALLOWED_DIRECTORIES: Record<PersistenceKind, string> = {
  'sysctl.d': '/etc/sysctl.d',
  udev: '/etc/udev/rules.d',
  'modprobe.d': '/etc/modprobe.d',
};

const SUFFIX: Record<PersistenceKind, string> = { 'sysctl.d': '.conf', udev: '.rules', 'modprobe.d': '.conf' };

async function writeAtomically(target: string, content: string, mode: number): Promise<void> {
  const directory = dirname(target);
  const temporary = join(directory, `.${randomBytes(6).toString('hex')}.conntrack.tmp`);
  const handle = await open(temporary, 'wx', mode);
  try {
    await handle.writeFile(content, 'utf8');
    await handle.chmod(mode);
    await handle.sync();
  } catch (error) {
    await handle.close();
    await unlink(temporary).catch(() => undefined);
    throw error;
  }
  await handle.close();
  try {
    await rename(temporary, target);
  } catch (error) {
    await unlink(temporary).catch(() => undefined);
    throw error;
  }
  // Make the rename itself durable.
  const directoryHandle = await open(directory, 'r').catch(() => undefined);
  await directoryHandle?.sync().catch(() => undefined);
  await directoryHandle?.close();
}

/**
 * Writes rendered files under `root`, merging with what is there. Every file is written to a
 * temporary file in its own directory and renamed over the target, so a reader sees the old or
 * the new file, never half of one.
 */
export async function applyPersistence(files: readonly PersistenceFile[], options: ApplyOptions): Promise<AppliedFile[]> {
  if (options === null || typeof options !== 'object' || typeof options.root !== 'string') {
    throw invalidArgument("applyPersistence() needs { root }: the directory standing for '/' (pass { root: '/' } to change this system)");
  }
  if (!isAbsolute(options.root)) throw invalidArgument(`root must be an absolute path, got ${JSON.stringify(options.root)}`);
  const root = resolve(options.root);
  const results: AppliedFile[] = [];
  for (const file of files) {
    const directory = ALLOWED_DIRECTORIES[file.kind];
    if (directory === undefined) throw invalidArgument(`unknown persistence file kind ${String(file.kind)}`);
    checkTargetPath(file.path, directory, SUFFIX[file.kind]);
    const target = join(root, file.path);
    if (!target.startsWith(root === sep ? sep : root + sep)) throw invalidArgument(`${file.path} leaves ${root}`);

    try {
      await mkdir(dirname(target), { recursive: true });
      let existing: string | undefined;
      let mode = 0o644;
      try {
        const info = await lstat(target);
        if (info.isSymbolicLink()) {
          throw new ConntrackError('ERR_CONNTRACK_INVALID_ARGUMENT', `${target} is a symbolic link; refusing to replace it`);
        }
        mode = info.mode & 0o7777;
        existing = await readFile(target, 'utf8');
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
      }
      const content = mergeFileContent(file, existing);
      if (content === existing) {
        results.push({ path: file.path, writtenTo: target, changed: false });
        continue;
      }
      await writeAtomically(target, content, mode);
      results.push({ path: file.path, writtenTo: target, changed: true });
    } catch (error) {
      if (error instanceof ConntrackError) throw error;
      const code = (error as NodeJS.ErrnoException).code;
      if (code === 'EACCES' || code === 'EPERM' || code === 'EROFS') {
        throw new ConntrackError('ERR_CONNTRACK_PERMISSION', `cannot write ${target} (${code}): run as root`, { cause: error });
      }
      const errno = (error as NodeJS.ErrnoException).errno;
      throw new ConntrackError('ERR_CONNTRACK_KERNEL', `cannot write ${target}: ${(error as Error).message}`, {
        cause: error,
        ...(typeof errno === 'number' ? { errno: Math.abs(errno) } : {}),
      });
    }
  }
  return results;
}
