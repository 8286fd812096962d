/**
 * The rule scanner (lib/doctor/dependents.ts) on real rulesets: nft and legacy iptables /
 * ip6tables rules loaded into a namespace, listed by the tools themselves (`nft list ruleset`,
 * `iptables-legacy-save`, `ip6tables-legacy-save` through nsenter), and a container bridge's name.
 */
import { afterAll, beforeAll, expect, it } from 'vitest';
import { findConntrackDependents, type RuleMatch } from '../../../lib/doctor/dependents.js';
import { describeIntegration } from '../../helpers/gate.js';
import { createNetns, destroyAllNetns, type Netns } from '../../helpers/netns.js';
import { requireTool } from '../../helpers/tools.js';

/** One rule of each kind per tool, as the test writes it. */
const NFT_RULES = `
table inet scan_test {
  chain raw { type filter hook prerouting priority raw; policy accept; udp dport 5353 notrack; }
  chain input { type filter hook input priority filter; policy accept; ct state established,related accept; tcp dport 22 accept; }
}
table ip scan_nat {
  chain post { type nat hook postrouting priority srcnat; policy accept; oifname "docker0" masquerade; }
}
`;

describeIntegration('the rule scanner on real rulesets (nft, iptables-legacy, ip6tables-legacy)', () => {
  let ns: Netns;
  let bare: Netns;

  beforeAll(async () => {
    ns = await createNetns('dependents');
    bare = await createNetns('dependents bare');
    await ns.nft(NFT_RULES);
    const iptables = requireTool('iptables-legacy');
    const ip6tables = requireTool('ip6tables-legacy');
    await ns.exec(iptables, ['-t', 'nat', '-A', 'POSTROUTING', '-s', '172.17.0.0/16', '!', '-o', 'docker0', '-j', 'MASQUERADE']);
    await ns.exec(iptables, ['-A', 'INPUT', '-m', 'conntrack', '--ctstate', 'RELATED,ESTABLISHED', '-j', 'ACCEPT']);
    await ns.exec(iptables, ['-A', 'INPUT', '-p', 'tcp', '--dport', '22', '-j', 'ACCEPT']);
    await ns.exec(iptables, ['-t', 'raw', '-A', 'PREROUTING', '-p', 'udp', '--dport', '53', '-j', 'CT', '--notrack']);
    await ns.exec(ip6tables, ['-A', 'INPUT', '-m', 'state', '--state', 'NEW', '-j', 'ACCEPT']);
    await ns.exec(ip6tables, ['-t', 'nat', '-A', 'POSTROUTING', '-o', 'docker0', '-j', 'MASQUERADE']);
    // A bridge named as Docker names its own.
    await ns.exec(requireTool('ip'), ['link', 'add', 'docker0', 'type', 'bridge']);
  });

  afterAll(destroyAllNetns);

  /**
   * Interface names the namespace's /proc/net/dev lists (besides lo and the test's docker0, a
   * fresh namespace has the fallback devices of built-in tunnel modules: tunl0, sit0...).
   */
  async function interfacesOf(ns: Netns): Promise<string[]> {
    const { stdout } = await ns.exec('cat', ['/proc/net/dev']);
    return stdout.split('\n').slice(2).map((line) => line.split(':')[0]?.trim() ?? '').filter(Boolean).sort();
  }

  /** The rule lines a tool prints in the namespace that contain `text`, each once. */
  async function printed(ns: Netns, tool: string, args: readonly string[], text: string): Promise<string[]> {
    const { stdout } = await ns.exec(requireTool(tool), args);
    return [...new Set(stdout.split('\n').map((line) => line.trim().replace(/\bcounter packets \d+ bytes \d+/g, 'counter')).filter((line) => line.includes(text)))];
  }

  it('finds each NAT, stateful and notrack rule of every tool, as the tool prints it, and nothing else', async () => {
    const found = await findConntrackDependents(ns.path);
    expect(found.rulesUnknown).toEqual([]);
    const rules = found.rules ?? [];
    const of = (source: RuleMatch['source'], kind: RuleMatch['kind']) => rules.filter((r) => r.source === source && r.kind === kind).map((r) => r.rule);

    // nft: the rules as `nft list ruleset` prints them (one per line there).
    const nft = ['nft', ['list', 'ruleset']] as const;
    expect(of('nft', 'notrack')).toEqual(await printed(ns, ...nft, 'notrack'));
    expect(of('nft', 'stateful')).toEqual(await printed(ns, ...nft, 'ct state established'));
    expect(of('nft', 'nat')).toEqual([
      ...await printed(ns, ...nft, 'type nat hook'),
      ...await printed(ns, ...nft, 'masquerade'),
    ]);
    // iptables-legacy-save: `-A` lines only (no chain policies, no empty tables, no comments).
    const save = ['iptables-legacy-save', []] as const;
    expect(of('iptables-legacy', 'nat')).toEqual(await printed(ns, ...save, '-j MASQUERADE'));
    expect(of('iptables-legacy', 'stateful')).toEqual(await printed(ns, ...save, '-m conntrack'));
    expect(of('iptables-legacy', 'notrack')).toEqual(await printed(ns, ...save, '-j CT --notrack'));
    const save6 = ['ip6tables-legacy-save', []] as const;
    expect(of('ip6tables-legacy', 'stateful')).toEqual(await printed(ns, ...save6, '-m state'));
    expect(of('ip6tables-legacy', 'nat')).toEqual(await printed(ns, ...save6, '-j MASQUERADE'));
    expect(of('ip6tables-legacy', 'notrack')).toEqual([]);
    // Each of those lists is one rule (two for the nft NAT table: its chain type and its rule).
    expect(rules.map((r) => `${r.source} ${r.kind}`).sort()).toEqual([
      'ip6tables-legacy nat', 'ip6tables-legacy stateful',
      'iptables-legacy nat', 'iptables-legacy notrack', 'iptables-legacy stateful',
      'nft nat', 'nft nat', 'nft notrack', 'nft stateful',
    ]);
    // Rules that do not use conntrack are not reported.
    expect(rules.some((r) => /dport 22\b/.test(r.rule) && !r.rule.includes('ct state'))).toBe(false);

    expect([...found.interfaces].sort()).toEqual(await interfacesOf(ns));
    expect(found.interfaces).toContain('docker0');
    expect(found.containerInterfaces).toEqual(['docker0']);
  });

  it('a namespace without rules has none (an empty list, not "unknown") and no container bridge', async () => {
    const found = await findConntrackDependents(bare.path);
    expect(found).toMatchObject({ rules: [], rulesUnknown: [], containerInterfaces: [] });
    expect([...found.interfaces].sort()).toEqual(await interfacesOf(bare));
  });
}, { tools: ['nsenter', 'iptables-legacy', 'ip6tables-legacy', 'iptables-legacy-save', 'ip6tables-legacy-save'] });
