/**
 * Finding the command-line tools the integration helpers drive. Kept free of vitest imports so the
 * helpers also work from plain scripts (benchmarks, fixture capture).
 */
import { accessSync, constants } from 'node:fs';
import { delimiter, join } from 'node:path';

/** Tools every integration test file needs; a file may ask for more (e.g. `ping`). */
export const REQUIRED_TOOLS = ['ip', 'nft', 'conntrack'] as const;

/** Which Debian package provides each tool, for the "how to fix" part of the reason. */
export const PACKAGE_OF: Record<string, string> = {
  ip: 'iproute2',
  nft: 'nftables',
  conntrack: 'conntrack',
  ping: 'iputils-ping',
  sysctl: 'procps',
  mosquitto: 'mosquitto',
  unshare: 'util-linux',
  nsenter: 'util-linux',
  setpriv: 'util-linux',
  flock: 'util-linux',
  python3: 'python3',
  'iptables-legacy': 'iptables',
  'ip6tables-legacy': 'iptables',
  'iptables-legacy-save': 'iptables',
  'ip6tables-legacy-save': 'iptables',
  gdb: 'gdb',
  prometheus: 'prometheus',
  promtool: 'prometheus',
  htpasswd: 'apache2-utils',
  openssl: 'openssl',
};

/** sbin directories are often missing from a non-root PATH although the tools live there. */
const EXTRA_TOOL_DIRS = ['/usr/local/sbin', '/usr/sbin', '/sbin'];

/** Absolute path of an executable, searching PATH and the sbin directories; undefined if absent. */
export function findTool(name: string): string | undefined {
  const dirs = [...(process.env.PATH ?? '').split(delimiter).filter(Boolean), ...EXTRA_TOOL_DIRS];
  for (const dir of dirs) {
    const candidate = join(dir, name);
    try {
      accessSync(candidate, constants.X_OK);
      return candidate;
    } catch {
      // not here; keep looking
    }
  }
  return undefined;
}

/** Like findTool, but throws a message that names the package to install. */
export function requireTool(name: string): string {
  const path = findTool(name);
  if (path === undefined) {
    throw new Error(`${name} not found on PATH: apt-get install ${PACKAGE_OF[name] ?? name}`);
  }
  return path;
}

