/**
 * `conntrack doctor`: diagnose() for a person (or, with --json, for a script). The exit status
 * carries the worst finding, so a cron job or a sidecar probe can act on it.
 */
import { parseArgs } from 'node:util';

import { diagnose, type Diagnosis, type Finding, type Severity } from '../doctor/diagnose.js';
import { integerOption, netnsOption, numberOption, run, UsageError, write, type Command } from './common.js';
import { toJson } from './core.js';

/** Exit status per worst severity; 1 (could not run) and 2 (bad command line) are taken. */
export const DOCTOR_EXIT: Record<Severity, number> = { ok: 0, info: 0, warning: 3, critical: 4 };

const DOCTOR_USAGE = `usage: conntrack doctor [--netns PATH|PID] [--interval SECONDS] [--connections N] [--no-scan] [--json]
  --interval     time between the two samples of the drop counters (default 1; 0 takes one sample)
  --connections  peak connections to size for (default: what the table holds now)
  --no-scan      do not walk the entries for the protocol/state/NAT breakdown
Exit status: 0 nothing wrong, 3 warning, 4 critical; 1 the check itself failed, 2 bad usage.`;

const LABEL: Record<Severity, string> = { ok: 'OK', info: 'INFO', warning: 'WARNING', critical: 'CRITICAL' };
const ORDER: Record<Severity, number> = { critical: 0, warning: 1, info: 2, ok: 3 };

/** The human report: worst findings first, each fix printed once. */
export function formatDiagnosis(diagnosis: Diagnosis): string {
  const { facts } = diagnosis;
  const where = facts.netns === null ? 'this network namespace' : facts.netns;
  const lines = [
    `conntrack doctor: ${where} (netns inode ${facts.netnsInode}${facts.initialNetns ? ', the initial namespace' : ''}), ` +
      `${facts.time.toISOString()}, counters sampled ${facts.intervalMs / 1000} s apart`,
    '',
  ];
  const printedFixes = new Set<string>();
  const findings = [...diagnosis.findings].sort((a, b) => ORDER[a.severity] - ORDER[b.severity]);
  for (const finding of findings) lines.push(...formatFinding(finding, printedFixes));
  const breakdown = facts.breakdown;
  if (breakdown !== undefined && breakdown.entries > 0) {
    const top = (record: Record<string, number>): string => Object.entries(record).sort((a, b) => b[1] - a[1]).map(([k, v]) => `${k} ${v}`).join(', ');
    lines.push(
      'Entries:',
      `  by protocol    ${top(breakdown.byProtocol)}`,
      ...(Object.keys(breakdown.byTcpState).length > 0 ? [`  TCP states     ${top(breakdown.byTcpState)}`] : []),
      `  assured ${breakdown.assured}, unreplied ${breakdown.unreplied}, NATed ${breakdown.nat}`,
      '',
    );
  } else if (facts.breakdownSkipped !== undefined) {
    lines.push(`Entries not walked: ${facts.breakdownSkipped}.`, '');
  }
  lines.push(`Worst finding: ${LABEL[diagnosis.severity]} (exit status ${DOCTOR_EXIT[diagnosis.severity]}).`);
  return lines.join('\n');
}

function formatFinding(finding: Finding, printedFixes: Set<string>): string[] {
  const lines = [`${LABEL[finding.severity].padEnd(9)} ${finding.title}`];
  for (const evidence of finding.evidence) lines.push(`          - ${evidence}`);
  if (finding.fix !== undefined) {
    // Several findings share the sizing fix: its commands are printed once.
    const key = finding.fix.commands.join('\n');
    if (printedFixes.has(key)) {
      lines.push('          fix: as above.');
    } else {
      printedFixes.add(key);
      lines.push(`          fix: ${finding.fix.summary}`, ...finding.fix.commands.map((c) => `            ${c}`));
    }
  }
  lines.push('');
  return lines;
}

export const doctorCommand: Command = (argv, io) =>
  run(io, DOCTOR_USAGE, async () => {
    const { values, positionals } = parseArgs({
      args: argv,
      allowPositionals: true,
      strict: true,
      options: {
        netns: { type: 'string' },
        interval: { type: 'string' },
        connections: { type: 'string' },
        'no-scan': { type: 'boolean', default: false },
        json: { type: 'boolean', default: false },
        help: { type: 'boolean', short: 'h', default: false },
      },
    });
    if (values.help) {
      write(io.stdout, DOCTOR_USAGE);
      return 0;
    }
    if (positionals.length > 0) throw new UsageError(`unexpected argument "${positionals[0]}"`);
    const interval = numberOption('interval', values.interval);
    if (interval !== undefined && interval > 600) throw new UsageError('--interval is at most 600 seconds');
    const expectedConnections = integerOption('connections', values.connections, 1);
    const diagnosis = await diagnose({
      ...netnsOption(values.netns),
      ...(interval === undefined ? {} : { intervalMs: Math.round(interval * 1000) }),
      ...(expectedConnections === undefined ? {} : { expectedConnections }),
      scan: !values['no-scan'],
    });
    write(io.stdout, values.json ? toJson(diagnosis, 2) : formatDiagnosis(diagnosis));
    return DOCTOR_EXIT[diagnosis.severity];
  });
