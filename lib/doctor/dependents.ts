/**
 * What in a network namespace needs connection tracking: NAT and stateful firewall rules
 * (nftables, legacy iptables) and container bridges (Docker, Kubernetes CNIs NAT their traffic).
 * The answer decides whether "stop tracking this traffic" is an option or only "make the table
 * bigger" is.
 */
import { execFile } from 'node:child_process';
import { constants } from 'node:fs';
import { access, readFile } from 'node:fs/promises';
import { delimiter, join } from 'node:path';

import { binding } from '../binding/native.js';

export interface RuleMatch {
  source: 'nft' | 'iptables-legacy' | 'ip6tables-legacy';
  /** NAT (snat, dnat, masquerade, redirect, a nat chain) or stateful (ct state/mark/zone/...). */
  kind: 'nat' | 'stateful' | 'notrack';
  rule: string;
}

export interface ConntrackDependents {
  /** Rules that use conntrack, or undefined when no rule tool could be run (see rulesUnknown). */
  rules: RuleMatch[] | undefined;
  /** Why the rules could not be listed. */
  rulesUnknown: string[];
  /** Interfaces of container networking, whose traffic is NATed through conntrack. */
  containerInterfaces: string[];
  /** Every interface name seen (from /proc/net/dev of the namespace). */
  interfaces: string[];
}

const RULE_TOOLS: Array<{ source: RuleMatch['source']; command: string; args: string[] }> = [
  { source: 'nft', command: 'nft', args: ['list', 'ruleset'] },
  { source: 'iptables-legacy', command: 'iptables-legacy-save', args: [] },
  { source: 'ip6tables-legacy', command: 'ip6tables-legacy-save', args: [] },
];

const NFT_NAT = /\b(snat|dnat|masquerade|redirect)\b|type nat hook/;
const NFT_NOTRACK = /\bnotrack\b/;
const NFT_STATEFUL = /\bct (state|status|mark|zone|helper|label|count|direction|expiration|original|reply|id|event|timeout|expectation)\b|\bflow (add|offload) @|\bsynproxy\b/;
const IPT_NAT = /-j (SNAT|DNAT|MASQUERADE|REDIRECT|NETMAP)\b/;
const IPT_NOTRACK = /-j (NOTRACK|CT --notrack)\b/;
const IPT_STATEFUL = /-m (conntrack|state|connmark|connlimit|helper)\b|-j (CONNMARK|CT)\b/;

/** nft prints live counters in rules; they make the same rule look different on every run. */
function withoutCounterValues(rule: string): string {
  return rule.replace(/\bcounter packets \d+ bytes \d+/g, 'counter');
}

/** The lines of a ruleset listing that use (or switch off) conntrack, each distinct rule once. */
export function findConntrackRules(source: RuleMatch['source'], listing: string): RuleMatch[] {
  const nft = source === 'nft';
  const matches: RuleMatch[] = [];
  const seen = new Set<string>();
  for (const raw of listing.split('\n')) {
    const rule = withoutCounterValues(raw.trim());
    if (seen.has(rule)) continue;
    seen.add(rule);
    if (rule === '' || rule.startsWith('#')) continue;
    // iptables-save: only rule lines; a nat table with no rules needs nothing.
    if (!nft && !rule.startsWith('-A ')) continue;
    const kind = (nft ? NFT_NOTRACK : IPT_NOTRACK).test(rule) ? 'notrack'
      : (nft ? NFT_NAT : IPT_NAT).test(rule) ? 'nat'
        : (nft ? NFT_STATEFUL : IPT_STATEFUL).test(rule) ? 'stateful'
          : undefined;
    if (kind !== undefined) matches.push({ source, kind, rule });
  }
  return matches;
}

const CONTAINER_INTERFACE = /^(docker\d+|br-[0-9a-f]{12}|cni\d+|cbr\d+|flannel\.\d+|cali[0-9a-f]{4,}|cilium_\w+|kube-\w+|weave|vxlan\.calico|podman\d+|virbr\d+|lxcbr\d+|lxdbr\d+)$/;

/** Interface names in /proc/net/dev text. */
export function parseInterfaceNames(procNetDev: string): string[] {
  const names: string[] = [];
  for (const line of procNetDev.split('\n').slice(2)) {
    const colon = line.indexOf(':');
    if (colon > 0) names.push(line.slice(0, colon).trim());
  }
  return names;
}

export function containerInterfaces(names: readonly string[]): string[] {
  return names.filter((name) => CONTAINER_INTERFACE.test(name));
}

/** Whether `command` is an executable on PATH (nsenter's own "not found" is not an errno). */
async function onPath(command: string): Promise<boolean> {
  for (const dir of (process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin').split(delimiter)) {
    try {
      await access(join(dir, command), constants.X_OK);
      return true;
    } catch {
      // not in this directory
    }
  }
  return false;
}

function runTool(command: string, args: readonly string[], netnsPath: string | undefined): Promise<string> {
  // nsenter runs the tool inside the namespace; both come from util-linux / the firewall package.
  const [file, argv] = netnsPath === undefined ? [command, args] : ['nsenter', [`--net=${netnsPath}`, command, ...args]];
  return new Promise((resolve, reject) => {
    execFile(file, argv, { timeout: 10_000, maxBuffer: 64 * 1024 * 1024 }, (err, stdout, stderr) => {
      if (err) reject(Object.assign(err, { stderr }));
      else resolve(stdout);
    });
  });
}

/** Looks for rules and interfaces that need conntrack in the namespace (`netnsPath`, or this process's). */
export async function findConntrackDependents(netnsPath: string | undefined): Promise<ConntrackDependents> {
  const rules: RuleMatch[] = [];
  const rulesUnknown: string[] = [];
  let listedAny = false;
  for (const tool of RULE_TOOLS) {
    if (!(await onPath(tool.command))) {
      // A legacy tool that is not installed means no legacy rules can exist: not worth a mention.
      if (tool.source === 'nft') rulesUnknown.push('nft is not installed (Debian package nftables)');
      continue;
    }
    try {
      rules.push(...findConntrackRules(tool.source, await runTool(tool.command, tool.args, netnsPath)));
      listedAny = true;
    } catch (err) {
      const { code, stderr } = err as NodeJS.ErrnoException & { stderr?: string };
      rulesUnknown.push(code === 'ENOENT'
        ? 'nsenter is not installed (Debian package util-linux)'
        : `${tool.command} failed: ${(stderr ?? '').trim() || (err as Error).message}`);
    }
  }
  let interfaces: string[] = [];
  try {
    // /proc/net follows the reading thread's namespace; the native helper reads it from inside.
    const text = netnsPath === undefined
      ? await readFile('/proc/net/dev', 'utf8')
      : await binding().netnsReadFile(netnsPath, '/proc/net/dev');
    interfaces = parseInterfaceNames(text);
  } catch {
    // Interfaces are supporting evidence only.
  }
  return { rules: listedAny ? rules : undefined, rulesUnknown, containerInterfaces: containerInterfaces(interfaces), interfaces };
}
