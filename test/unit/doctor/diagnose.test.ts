/**
 * The doctor's judgement on facts: every rule of evaluate(), the kernel-log parser, the rule and
 * interface scanners, and the human report. No kernel needed.
 */
import { describe, expect, it } from 'vitest';

import { DOCTOR_EXIT, formatDiagnosis } from '../../../lib/cli/doctor.js';
import { findConntrackRules, containerInterfaces, parseInterfaceNames } from '../../../lib/doctor/dependents.js';
import { evaluate, parseProcConntrackStats, worstSeverity, type DiagnosisFacts, type Finding } from '../../../lib/doctor/diagnose.js';
import { parseKmsgRecord, readKernelLog, tableFullEvents, type TableFullEvent } from '../../../lib/doctor/kmsg.js';

const NOW = new Date('2026-11-25T12:00:00Z');
const INODE = 4026532246;

function facts(overrides: Partial<DiagnosisFacts> = {}): DiagnosisFacts {
  return {
    netns: '/run/netns/x',
    netnsInode: INODE,
    // The namespace is at least two hours old.
    netnsSince: new Date(NOW.getTime() - 7_200_000),
    initialNetns: false,
    source: 'ctnetlink',
    time: NOW,
    intervalMs: 1000,
    kernelRelease: '6.18.0',
    memoryBytes: 24 * 2 ** 30,
    linkage: 'built-in',
    before: { count: { entries: 100, max: 1000 }, stats: { insert: 500, drop: 0 } },
    after: { count: { entries: 100, max: 1000 }, stats: { insert: 510, drop: 0 } },
    buckets: 1024,
    objectSize: 256,
    tcpTimeoutEstablished: 432_000,
    tcpTimeoutTimeWait: 120,
    kernelLog: { readable: true, events: [] },
    breakdown: undefined,
    breakdownSkipped: 'scan switched off',
    dependents: { rules: [], rulesUnknown: [], containerInterfaces: [], interfaces: ['lo'] },
    expectedConnections: undefined,
    ...overrides,
  };
}

/** Facts whose count and limit are `entries` of `max` both before and after. */
function atUsage(entries: number, max: number, overrides: Partial<DiagnosisFacts> = {}): DiagnosisFacts {
  return facts({
    before: { count: { entries, max }, stats: { insert: entries } },
    after: { count: { entries, max }, stats: { insert: entries } },
    ...overrides,
  });
}

function find(findings: readonly Finding[], id: string): Finding {
  const found = findings.find((f) => f.id === id);
  if (found === undefined) throw new Error(`no finding ${id}: ${findings.map((f) => f.id).join(', ')}`);
  return found;
}

/** A "table full" line; inode null stands for a kernel that does not name the namespace. */
function event(secondsAgo: number, netns: number | null = INODE): TableFullEvent {
  const inode = netns ?? undefined;
  return {
    time: new Date(NOW.getTime() - secondsAgo * 1000),
    sequence: 1,
    netnsInode: inode,
    message: inode === undefined ? 'nf_conntrack: table full, dropping packet' : `nf_conntrack: nf_conntrack: table full in netns ${inode}, dropping packet`,
  };
}

describe('evaluate(): is conntrack in use', () => {
  it('calls an empty namespace with all-zero counters inactive (info), and one with activity active', () => {
    const idle = evaluate(facts({
      before: { count: { entries: 0, max: 1000 }, stats: {} },
      after: { count: { entries: 0, max: 1000 }, stats: { insert: 0, drop: 0 } },
    }));
    expect(find(idle.findings, 'tracking')).toMatchObject({ severity: 'info', title: expect.stringMatching(/tracks nothing/) });
    // With nothing tracked, exempting traffic is not advice worth giving.
    expect(find(idle.findings, 'dependents').fix).toBeUndefined();
    expect(find(evaluate(facts()).findings, 'tracking').severity).toBe('ok');
  });
});

describe('evaluate(): count against the limit (node_exporter thresholds)', () => {
  it.each([
    [0, 1000, 'ok'],
    [749, 1000, 'ok'],
    [750, 1000, 'warning'],
    [899, 1000, 'warning'],
    [900, 1000, 'critical'],
    [1000, 1000, 'critical'],
  ] as const)('%i of %i is %s', (entries, max, severity) => {
    const { findings, severity: worst } = evaluate(atUsage(entries, max));
    expect(find(findings, 'table-usage').severity).toBe(severity);
    // The timeout and dependents findings are informational at least.
    expect(worst).toBe(severity === 'ok' ? 'info' : severity);
  });

  it('says "full" at the limit and recommends double the limit when demand is unknown', () => {
    const diagnosis = evaluate(atUsage(200, 200, { buckets: 512 }));
    const usage = find(diagnosis.findings, 'table-usage');
    expect(usage.title).toBe('conntrack table full: 200 of 200 entries; new connections are dropped');
    // 200 connections x headroom 2, rounded up to 1024.
    expect(diagnosis.recommendation).toMatchObject({ max: 1024, buckets: 1024 });
    expect(usage.fix?.commands).toEqual([
      'echo 1024 > /sys/module/nf_conntrack/parameters/hashsize',
      'sysctl -w net.netfilter.nf_conntrack_max=1024',
      'conntrack persist --max 1024 --buckets 1024 --apply --root /',
    ]);
  });

  it('never shrinks the global bucket array: a bigger running table keeps its buckets', () => {
    const diagnosis = evaluate(atUsage(200, 200, { buckets: 262_144 }));
    expect(diagnosis.recommendation).toMatchObject({ max: 1024, buckets: 262_144 });
    expect(diagnosis.recommendation?.memory.bucketsBytes).toBe(262_144 * 8);
    const usage = find(diagnosis.findings, 'table-usage');
    expect(usage.fix?.commands).toEqual([
      'sysctl -w net.netfilter.nf_conntrack_max=1024',
      'conntrack persist --max 1024 --apply --root /',
    ]);
    expect(usage.fix?.summary).not.toContain('buckets to');
  });

  it('sizes for the expected connections when given', () => {
    const diagnosis = evaluate(atUsage(200, 200, { expectedConnections: 100_000 }));
    expect(diagnosis.recommendation?.max).toBe(200_704); // 200,000 rounded up to a multiple of 1024
  });

  it('does not tell to raise a limit that already covers the expected connections', () => {
    const diagnosis = evaluate(atUsage(4096, 4096, { expectedConnections: 1000 }));
    const usage = find(diagnosis.findings, 'table-usage');
    expect(usage.severity).toBe('critical');
    expect(usage.fix?.commands).toEqual([]);
    expect(usage.fix?.summary).toContain('nf_conntrack_max 4096 already covers the expected connections (2048 with headroom)');
  });

  it('gives no recommendation to a healthy table', () => {
    expect(evaluate(atUsage(10, 1000)).recommendation).toBeUndefined();
  });
});

describe('evaluate(): drop counters over the interval', () => {
  it('drops during the interval are critical, with the numbers', () => {
    const diagnosis = evaluate(facts({
      before: { count: { entries: 100, max: 1000 }, stats: { drop: 3 } },
      after: { count: { entries: 100, max: 1000 }, stats: { drop: 10 } },
    }));
    const drops = find(diagnosis.findings, 'drops');
    expect(drops.severity).toBe('critical');
    expect(drops.title).toBe('7 packets dropped in 1 s for want of a conntrack entry');
    expect(drops.evidence[0]).toContain('from 3 to 10');
  });

  it('old drops without new ones are a warning', () => {
    const old = { count: { entries: 100, max: 1000 }, stats: { drop: 5 } };
    expect(find(evaluate(facts({ before: old, after: old })).findings, 'drops')).toMatchObject({
      severity: 'warning',
      title: '5 packets dropped since tracking started, none in the last 1 s',
    });
  });

  it('with a zero interval only totals are judged', () => {
    const sample = { count: { entries: 100, max: 1000 }, stats: { drop: 5, early_drop: 9, chaintoolong: 2 } };
    const { findings } = evaluate(facts({ intervalMs: 0, before: { ...sample, stats: {} }, after: sample }));
    expect(find(findings, 'drops').severity).toBe('warning');
    expect(findings.map((f) => f.id)).not.toContain('early-drops');
    expect(findings.map((f) => f.id)).not.toContain('long-chains');
  });

  it('reports early_drop, insert_failed and chaintoolong rises, with the bucket fix for long chains', () => {
    const { findings } = evaluate(facts({
      buckets: 256,
      before: { count: { entries: 100, max: 1000 }, stats: { early_drop: 1, insert_failed: 0, chaintoolong: 0 } },
      after: { count: { entries: 100, max: 1000 }, stats: { early_drop: 4, insert_failed: 2, chaintoolong: 1 } },
    }));
    expect(find(findings, 'early-drops')).toMatchObject({ severity: 'warning', title: '3 entries evicted in 1 s to make room (early_drop)' });
    expect(find(findings, 'insert-failures')).toMatchObject({ severity: 'warning', title: '2 inserts failed in 1 s' });
    expect(find(findings, 'long-chains').fix?.commands[0]).toBe('echo 1000 > /sys/module/nf_conntrack/parameters/hashsize');
  });
});

describe('evaluate(): the kernel log', () => {
  it('a recent line for this namespace is critical; an old one a warning', () => {
    const recent = find(evaluate(facts({ kernelLog: { readable: true, events: [event(600), event(30)] } })).findings, 'kernel-log');
    expect(recent.severity).toBe('critical');
    expect(recent.title).toBe('the kernel dropped packets on a full table 30 s ago');
    expect(recent.evidence[0]).toContain('2 lines');
    const old = find(evaluate(facts({ kernelLog: { readable: true, events: [event(3600)] } })).findings, 'kernel-log');
    expect(old.evidence).not.toContain(expect.stringMatching(/predate/));
    expect(old.severity).toBe('warning');
    expect(old.title).toContain(new Date(NOW.getTime() - 3_600_000).toISOString());
  });

  it('lines naming other namespaces are evidence, not findings', () => {
    const log = find(evaluate(facts({ kernelLog: { readable: true, events: [event(5, 4026530000)] } })).findings, 'kernel-log');
    expect(log.severity).toBe('ok');
    expect(log.title).toBe('no "table full" lines for this namespace in the kernel log');
    expect(log.evidence).toEqual(['1 line name other namespaces (netns 4026530000).']);
  });

  it('lines that name no namespace (older kernels) count, with a caveat', () => {
    const log = find(evaluate(facts({ kernelLog: { readable: true, events: [event(5, null)] } })).findings, 'kernel-log');
    expect(log.severity).toBe('critical');
    expect(log.evidence.join(' ')).toContain('does not name the namespace');
  });

  it('lines with this inode number from before the namespace existed are reported, not judged (inode numbers are reused)', () => {
    const events = [event(9000), event(8000)];
    const log = find(evaluate(facts({ kernelLog: { readable: true, events } })).findings, 'kernel-log');
    expect(log.severity).toBe('info');
    expect(log.evidence[0]).toMatch(/^2 lines with this namespace's inode number predate .*may come from an earlier namespace/);
    // The initial namespace's number is never reused: every line counts.
    const initial = find(evaluate(facts({ netnsSince: undefined, initialNetns: true, kernelLog: { readable: true, events } })).findings, 'kernel-log');
    expect(initial.severity).toBe('warning');
    // Lines on both sides of the namespace's birth: only the later ones are judged.
    const mixed = find(evaluate(facts({ kernelLog: { readable: true, events: [event(9000), event(60)] } })).findings, 'kernel-log');
    expect(mixed.severity).toBe('critical');
    expect(mixed.evidence[0]).toMatch(/^1 line "/);
  });

  it('an unreadable log is reported as such', () => {
    const log = find(evaluate(facts({ kernelLog: { readable: false, reason: 'reading /dev/kmsg needs CAP_SYSLOG' } })).findings, 'kernel-log');
    expect(log).toMatchObject({ severity: 'info', title: 'kernel log not checked', evidence: ['reading /dev/kmsg needs CAP_SYSLOG'] });
  });
});

describe('evaluate(): buckets and timeouts', () => {
  it('chains up to 8 nodes are fine (the pre-5.15 default of max = 4 x buckets); more is a warning', () => {
    expect(find(evaluate(facts({ buckets: 250 })).findings, 'buckets').severity).toBe('ok');
    const few = find(evaluate(facts({ buckets: 128 })).findings, 'buckets');
    expect(few.severity).toBe('warning');
    expect(few.title).toContain('15.6 nodes');
    expect(few.fix?.commands[0]).toBe('echo 1000 > /sys/module/nf_conntrack/parameters/hashsize');
  });

  it('the default established timeout is advice only under pressure', () => {
    expect(find(evaluate(atUsage(10, 1000)).findings, 'established-timeout').severity).toBe('info');
    const pressed = find(evaluate(atUsage(800, 1000)).findings, 'established-timeout');
    expect(pressed.severity).toBe('warning');
    expect(pressed.fix?.commands[0]).toBe('sysctl -w net.netfilter.nf_conntrack_tcp_timeout_established=86400');
    expect(find(evaluate(atUsage(800, 1000, { tcpTimeoutEstablished: 3600 })).findings, 'established-timeout').severity).toBe('info');
  });

  it('a table a quarter TIME_WAIT under pressure gets the time-wait advice', () => {
    const breakdown = { entries: 800, byProtocol: { tcp: 800 }, byTcpState: { ESTABLISHED: 500, TIME_WAIT: 300 }, nat: 0, assured: 800, unreplied: 0 };
    const { findings } = evaluate(atUsage(800, 1000, { breakdown, breakdownSkipped: undefined }));
    expect(find(findings, 'time-wait').title).toBe('37.5 % of the entries are TIME_WAIT');
    expect(evaluate(atUsage(100, 1000, { breakdown })).findings.map((f) => f.id)).not.toContain('time-wait');
  });
});

describe('evaluate(): what needs conntrack', () => {
  const dependents = (over: Partial<DiagnosisFacts['dependents']>): Partial<DiagnosisFacts> => ({
    dependents: { rules: [], rulesUnknown: [], containerInterfaces: [], interfaces: [], ...over },
  });

  it('NAT rules, NATed entries or container bridges make it required', () => {
    const nat = find(evaluate(facts(dependents({ rules: [{ source: 'nft', kind: 'nat', rule: 'oifname "eth0" masquerade' }] }))).findings, 'dependents');
    expect(nat.title).toMatch(/required here/);
    expect(nat.evidence[0]).toBe('NAT rules: "oifname "eth0" masquerade".');
    expect(find(evaluate(facts(dependents({ containerInterfaces: ['docker0'] }))).findings, 'dependents').title).toMatch(/required here/);
    const breakdown = { entries: 10, byProtocol: { tcp: 10 }, byTcpState: {}, nat: 4, assured: 10, unreplied: 0 };
    expect(find(evaluate(facts({ breakdown })).findings, 'dependents').title).toMatch(/required here/);
  });

  it('stateful rules only: exemption would bypass them', () => {
    const found = find(evaluate(facts(dependents({ rules: [{ source: 'nft', kind: 'stateful', rule: 'ct state established,related accept' }] }))).findings, 'dependents');
    expect(found.title).toMatch(/stateful firewall rules/);
    expect(found.fix).toBeUndefined();
  });

  it('nothing found: exempting traffic is offered; unknown rules: no claim', () => {
    expect(find(evaluate(facts()).findings, 'dependents').fix?.commands).toContain('nft add rule inet notrack_exempt pre tcp dport 1883 notrack');
    const unknown = find(evaluate(facts(dependents({ rules: undefined, rulesUnknown: ['nft is not installed'] }))).findings, 'dependents');
    expect(unknown.title).toBe('could not tell whether anything here needs conntrack');
    expect(unknown.evidence).toContain('Rules not listed: nft is not installed.');
  });
});

describe('worstSeverity() and the exit status', () => {
  it('orders ok < info < warning < critical', () => {
    expect(worstSeverity([])).toBe('ok');
    expect(worstSeverity(['info', 'ok'])).toBe('info');
    expect(worstSeverity(['warning', 'critical', 'info'])).toBe('critical');
    expect([DOCTOR_EXIT.ok, DOCTOR_EXIT.info, DOCTOR_EXIT.warning, DOCTOR_EXIT.critical]).toEqual([0, 0, 3, 4]);
  });

  it('evaluate() is pure: the same facts give the same diagnosis', () => {
    const input = atUsage(1000, 1000, { kernelLog: { readable: true, events: [event(1)] } });
    expect(evaluate(input)).toEqual(evaluate(input));
  });
});

describe('formatDiagnosis()', () => {
  it('puts the worst first and prints a shared fix once', () => {
    const text = formatDiagnosis(evaluate(atUsage(200, 200, {
      before: { count: { entries: 200, max: 200 }, stats: { drop: 0 } },
      after: { count: { entries: 200, max: 200 }, stats: { drop: 4 } },
      kernelLog: { readable: true, events: [event(2)] },
    })));
    const lines = text.split('\n');
    const labels = lines.filter((l) => /^[A-Z]+ +\S/.test(l)).map((l) => l.split(/ +/)[0]);
    expect(labels.slice(0, 3)).toEqual(['CRITICAL', 'CRITICAL', 'CRITICAL']);
    expect(labels.indexOf('OK')).toBeGreaterThan(labels.lastIndexOf('INFO'));
    expect(text.split('sysctl -w net.netfilter.nf_conntrack_max=1024').length - 1).toBe(1);
    expect(text).toContain('fix: as above.');
    expect(lines.at(-1)).toBe('Worst finding: CRITICAL (exit status 4).');
  });
});

describe('the kernel log parser', () => {
  it('parses a /dev/kmsg record and dates it from the monotonic clock', () => {
    const record = parseKmsgRecord(`4,1234,5000000,-;nf_conntrack: nf_conntrack: table full in netns ${INODE}, dropping packet`, 10_000_000, 1_000_000_000);
    expect(record).toEqual({
      level: 4,
      facility: 0,
      sequence: 1234,
      bootTimeUs: 5_000_000,
      time: new Date(1_000_000_000 - 5000),
      message: `nf_conntrack: nf_conntrack: table full in netns ${INODE}, dropping packet`,
    });
  });

  it('keeps only the message line of a record with dictionary lines, and the facility', () => {
    expect(parseKmsgRecord('30,7,1,c,more;hello\n SUBSYSTEM=net\n', 1, 0)).toMatchObject({ level: 6, facility: 3, message: 'hello' });
  });

  it.each(['', 'no header', '4,x,5;m', '4,1;m', '-1,2,3;m'])('refuses %j', (text) => {
    expect(parseKmsgRecord(text, 1, 0)).toBeUndefined();
  });

  it('finds table-full lines of both formats', () => {
    const records = [
      parseKmsgRecord(`4,1,1,-;nf_conntrack: nf_conntrack: table full in netns ${INODE}, dropping packet`, 2, 0),
      parseKmsgRecord('4,2,1,-;nf_conntrack: table full, dropping packet', 2, 0),
      parseKmsgRecord('4,3,1,-;nf_conntrack: expectation table full', 2, 0),
    ].filter((r) => r !== undefined);
    expect(tableFullEvents(records).map((e) => [e.sequence, e.netnsInode])).toEqual([[1, INODE], [2, undefined]]);
  });

  it('reports a log it cannot open instead of throwing', async () => {
    const result = await readKernelLog({ path: '/nonexistent/kmsg' });
    expect(result).toMatchObject({ readable: false, code: 'ENOENT' });
  });
});

describe('rules and interfaces that need conntrack', () => {
  it('classifies an nft ruleset', () => {
    const ruleset = [
      'table ip nat {',
      '\tchain POSTROUTING {',
      '\t\ttype nat hook postrouting priority srcnat; policy accept;',
      '\t\toifname "eth0" masquerade',
      '\t}',
      '}',
      'table inet filter {',
      '\tchain input {',
      '\t\tct state established,related accept',
      '\t\ttcp dport 22 accept',
      '\t}',
      '\tchain raw { type filter hook prerouting priority raw; tcp dport 1883 notrack }',
      '}',
    ].join('\n');
    expect(findConntrackRules('nft', ruleset).map((r) => [r.kind, r.rule])).toEqual([
      ['nat', 'type nat hook postrouting priority srcnat; policy accept;'],
      ['nat', 'oifname "eth0" masquerade'],
      ['stateful', 'ct state established,related accept'],
      ['notrack', 'chain raw { type filter hook prerouting priority raw; tcp dport 1883 notrack }'],
    ]);
  });

  it('classifies iptables-save output, ignoring empty tables and chain policies', () => {
    const saved = [
      '*nat',
      ':POSTROUTING ACCEPT [0:0]',
      '-A POSTROUTING -s 172.17.0.0/16 ! -o docker0 -j MASQUERADE',
      'COMMIT',
      '*filter',
      '-A INPUT -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT',
      '-A INPUT -p tcp --dport 22 -j ACCEPT',
      'COMMIT',
      '*raw',
      '-A PREROUTING -p udp --dport 53 -j CT --notrack',
      'COMMIT',
    ].join('\n');
    expect(findConntrackRules('iptables-legacy', saved).map((r) => r.kind)).toEqual(['nat', 'stateful', 'notrack']);
  });

  it('reads interface names from /proc/net/dev and picks container networking', () => {
    const dev = [
      'Inter-|   Receive                                                |  Transmit',
      ' face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed',
      '    lo:  100 1 0 0 0 0 0 0 100 1 0 0 0 0 0 0',
      '  eth0:  100 1 0 0 0 0 0 0 100 1 0 0 0 0 0 0',
      'docker0:  0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0',
      'br-0123456789ab: 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0',
      'cali1a2b3c4d5e6: 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0',
    ].join('\n');
    const names = parseInterfaceNames(dev);
    expect(names).toEqual(['lo', 'eth0', 'docker0', 'br-0123456789ab', 'cali1a2b3c4d5e6']);
    expect(containerInterfaces(names)).toEqual(['docker0', 'br-0123456789ab', 'cali1a2b3c4d5e6']);
  });
});

describe('rule listings from a live nft', () => {
  it('lists a rule once, without its counter values', () => {
    const listing = '\t\tct state new counter packets 200 bytes 12000\n\t\tct state new counter packets 3 bytes 180\n';
    expect(findConntrackRules('nft', listing)).toEqual([{ source: 'nft', kind: 'stateful', rule: 'ct state new counter' }]);
  });
});

describe('procfs fallback', () => {
  it('sums /proc/net/stat/nf_conntrack by header name, in conntrack -S names', () => {
    const text = [
      'entries  clashres found new invalid ignore delete chainlength insert insert_failed drop early_drop icmp_error  expect_new expect_create expect_delete search_restart',
      '000000c8  00000001 00000002 00000000 00000003 00000000 00000000 00000004 00000000 00000000 000000c8 00000000 00000000  00000009 00000000 00000000 00000005',
      '000000c8  00000001 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000002 00000001 00000000 00000000  00000000 00000000 00000000 00000000',
    ].join('\n');
    expect(parseProcConntrackStats(text)).toEqual({
      clash_resolve: 2, found: 2, new: 0, invalid: 3, ignore: 0, delete: 0, chaintoolong: 4, insert: 0,
      insert_failed: 2, drop: 201, early_drop: 0, error: 0, search_restart: 5,
    });
  });

  it('says what a process without CAP_NET_ADMIN could not see', () => {
    const { findings } = evaluate(facts({ source: 'procfs' }));
    expect(find(findings, 'privileges').title).toMatch(/without CAP_NET_ADMIN/);
    expect(evaluate(facts()).findings.map((f) => f.id)).not.toContain('privileges');
  });
});
