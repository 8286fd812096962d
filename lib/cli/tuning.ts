/**
 * CLI commands for tuning: `sysctl`, `size` and `persist`. Each takes the arguments after its
 * command word and the streams to write to, and resolves with the exit code:
 * 0 success, 1 the operation failed, 2 the command line was wrong.
 */
import { totalmem, release } from 'node:os';
import { parseArgs } from 'node:util';
import {
  applyPersistence,
  bootParameterAdvice,
  detectConntrackLinkage,
  renderPersistence,
  type PersistenceSettings,
} from '../tuning/persist.js';
import { DEFAULT_HEADROOM, kernelDefaults, readSlabObjectSize, recommend } from '../tuning/sizing.js';
import { describeSysctl, readAllSysctls, readSysctl, writeSysctl, type SysctlOptions } from '../tuning/sysctl.js';
import { formatBytes, integerOption, json, netnsOption, numberOption, run, UsageError, write, type Command, type CommandIo } from './common.js';

const SYSCTL_USAGE = `usage: conntrack sysctl get [NAME...] [--netns PATH|PID] [--json]
       conntrack sysctl set NAME=VALUE... [--netns PATH|PID] [--json]
       conntrack sysctl describe NAME... [--json]
NAME is net.netfilter.nf_conntrack_<name> or nf_conntrack_<name>.`;

/** `sysctl get|set|describe`: read, write or explain net.netfilter.nf_conntrack_* settings. */
export const sysctlCommand: Command = (argv, io) =>
  run(io, SYSCTL_USAGE, async () => {
    const { values, positionals } = parseArgs({
      args: argv,
      allowPositionals: true,
      strict: true,
      options: {
        netns: { type: 'string' },
        json: { type: 'boolean', default: false },
        help: { type: 'boolean', short: 'h', default: false },
      },
    });
    if (values.help) {
      write(io.stdout, SYSCTL_USAGE);
      return 0;
    }
    const [action, ...names] = positionals[0] === 'sysctl' ? positionals.slice(1) : positionals;
    const options = netnsOption(values.netns);

    if (action === 'get') {
      const result: Record<string, number | string> = {};
      if (names.length === 0) {
        Object.assign(result, await readAllSysctls(options));
      } else {
        for (const name of names) {
          const full = describeName(name);
          result[full] = await readSysctl(name, options);
        }
      }
      if (values.json) json(io.stdout, result);
      else write(io.stdout, Object.entries(result).map(([name, value]) => `${name} = ${value}`).join('\n'));
      return 0;
    }

    if (action === 'set') {
      if (names.length === 0) throw new UsageError('sysctl set needs at least one NAME=VALUE');
      const assignments = names.map((assignment) => {
        const equals = assignment.indexOf('=');
        if (equals <= 0) throw new UsageError(`expected NAME=VALUE, got "${assignment}"`);
        return [assignment.slice(0, equals).trim(), assignment.slice(equals + 1).trim()] as const;
      });
      const result: Record<string, number> = {};
      for (const [name, value] of assignments) {
        const readBack = await writeSysctl(name, value, options);
        const full = describeName(name);
        result[full] = readBack;
        if (!values.json) write(io.stdout, `${full} = ${readBack}`);
      }
      if (values.json) json(io.stdout, result);
      return 0;
    }

    if (action === 'describe') {
      if (names.length === 0) throw new UsageError('sysctl describe needs at least one NAME');
      const descriptions = names.map((name) => describeSysctl(name));
      if (values.json) {
        json(io.stdout, descriptions);
      } else {
        for (const d of descriptions) {
          const range = d.min === undefined && d.max === undefined ? 'any' : `${d.min ?? '-inf'} .. ${d.max ?? 'inf'}`;
          write(io.stdout, [
            d.name,
            `  ${d.description}`,
            `  type ${d.type}, range ${range}${d.unit ? ` ${d.unit}` : ''}`,
            `  ${d.scope === 'global' ? 'global (one value for every namespace)' : 'per network namespace'}; ` +
              `writable: ${d.writable === 'initial-netns-only' ? 'initial namespace only' : d.writable === 'read-only' ? 'never' : 'in any namespace'}`,
            `  kernel handler: ${d.kernelHandler}`,
          ].join('\n'));
        }
      }
      return 0;
    }

    throw new UsageError(action === undefined ? 'missing action: get, set or describe' : `unknown action "${action}"`);
  });

/** Full name for output; names that are unknown to the table are still shown as given. */
function describeName(name: string): string {
  const short = name.startsWith('net.netfilter.') ? name.slice('net.netfilter.'.length) : name;
  return `net.netfilter.${short}`;
}

const SIZE_USAGE = `usage: conntrack size --connections N [--flows-per-connection F] [--headroom H]
                      [--entries-per-bucket E] [--object-size BYTES] [--json]`;

/** `size`: recommend nf_conntrack_max and buckets for a load, with memory and commands. */
export const sizeCommand: Command = (argv, io) =>
  run(io, SIZE_USAGE, async () => {
    const { values, positionals } = parseArgs({
      args: argv,
      allowPositionals: true,
      strict: true,
      options: {
        connections: { type: 'string' },
        'flows-per-connection': { type: 'string' },
        headroom: { type: 'string' },
        'entries-per-bucket': { type: 'string' },
        'object-size': { type: 'string' },
        json: { type: 'boolean', default: false },
        help: { type: 'boolean', short: 'h', default: false },
      },
    });
    if (values.help) {
      write(io.stdout, SIZE_USAGE);
      return 0;
    }
    const extra = positionals[0] === 'size' ? positionals.slice(1) : positionals;
    if (extra.length > 0) throw new UsageError(`unexpected argument "${extra[0]}"`);
    const connections = integerOption('connections', values.connections, 1);
    if (connections === undefined) throw new UsageError('--connections is required');

    const slabObjectSize = await readSlabObjectSize();
    const objectSize = integerOption('object-size', values['object-size'], 1) ?? slabObjectSize;
    const kernelRelease = release();
    const memoryBytes = totalmem();
    const recommendation = recommend({
      connections,
      flowsPerConnection: integerOption('flows-per-connection', values['flows-per-connection'], 1),
      headroom: numberOption('headroom', values.headroom),
      entriesPerBucket: numberOption('entries-per-bucket', values['entries-per-bucket']),
      objectSize,
      kernelRelease,
      memoryBytes,
    });
    const current: Record<string, number | string> = {};
    for (const name of ['net.netfilter.nf_conntrack_max', 'net.netfilter.nf_conntrack_buckets', 'net.netfilter.nf_conntrack_count']) {
      try {
        current[name] = await readSysctl(name);
      } catch {
        // Not loaded or not readable: the recommendation stands without it.
      }
    }
    const defaults = kernelDefaults({ kernelRelease, memoryBytes });

    if (values.json) {
      json(io.stdout, {
        input: { connections, kernelRelease, memoryBytes, objectSize: objectSize ?? null, objectSizeSource: values['object-size'] ? 'option' : slabObjectSize ? '/proc/slabinfo' : 'default' },
        recommendation,
        current,
        kernelDefaults: defaults,
      });
      return 0;
    }
    const { max, buckets, memory } = recommendation;
    const lines = [
      `Recommendation for ${connections} connections (headroom ${values.headroom ?? DEFAULT_HEADROOM}):`,
      `  nf_conntrack_max      ${max}`,
      `  nf_conntrack_buckets  ${buckets}`,
      `  full-table chains     ${recommendation.averageChainLength.toFixed(2)} nodes per bucket`,
      `  memory when full      ${formatBytes(memory.totalBytes)} (${max} x ${memory.perEntryBytes} B entries + ${formatBytes(memory.bucketsBytes)} buckets)`,
    ];
    if (Object.keys(current).length > 0) {
      lines.push('Now:', ...Object.entries(current).map(([name, value]) => `  ${name} = ${value}`));
    }
    lines.push('Why:', ...recommendation.reasons.map((reason) => `  - ${reason}`));
    lines.push('Apply now (as root, in the initial network namespace):', ...recommendation.commands.map((command) => `  ${command}`));
    lines.push(`Keep after reboot: conntrack persist --max ${max} --buckets ${buckets} --apply --root /`);
    write(io.stdout, lines.join('\n'));
    return 0;
  });

const PERSIST_USAGE = `usage: conntrack persist [--max N] [--buckets N] [--sysctl NAME=VALUE]... [--sysctl-file PATH]
                         [--apply --root DIR] [--json]
Without --max/--buckets/--sysctl the running nf_conntrack_max and buckets are persisted.
--apply writes the files under DIR (use --root / for this system); without it they are printed.`;

/** `persist`: render (or write) sysctl.d, udev and modprobe.d files for the settings. */
export const persistCommand: Command = (argv, io) =>
  run(io, PERSIST_USAGE, async () => {
    const { values, positionals } = parseArgs({
      args: argv,
      allowPositionals: true,
      strict: true,
      options: {
        max: { type: 'string' },
        buckets: { type: 'string' },
        sysctl: { type: 'string', multiple: true },
        'sysctl-file': { type: 'string' },
        apply: { type: 'boolean', default: false },
        root: { type: 'string' },
        json: { type: 'boolean', default: false },
        help: { type: 'boolean', short: 'h', default: false },
      },
    });
    if (values.help) {
      write(io.stdout, PERSIST_USAGE);
      return 0;
    }
    const extra = positionals[0] === 'persist' ? positionals.slice(1) : positionals;
    if (extra.length > 0) throw new UsageError(`unexpected argument "${extra[0]}"`);
    if (values.apply && values.root === undefined) {
      throw new UsageError("--apply needs --root DIR (use --root / to change this system's files)");
    }
    if (!values.apply && values.root !== undefined) throw new UsageError('--root only makes sense with --apply');

    const settings: PersistenceSettings = {};
    const max = integerOption('max', values.max, 0);
    const buckets = integerOption('buckets', values.buckets, 1);
    if (max !== undefined) settings.max = max;
    if (buckets !== undefined) settings.buckets = buckets;
    if (values.sysctl !== undefined) {
      settings.sysctls = {};
      for (const assignment of values.sysctl) {
        const equals = assignment.indexOf('=');
        if (equals <= 0) throw new UsageError(`--sysctl expects NAME=VALUE, got "${assignment}"`);
        settings.sysctls[assignment.slice(0, equals).trim()] = assignment.slice(equals + 1).trim();
      }
    }
    if (max === undefined && buckets === undefined && values.sysctl === undefined) {
      // Persist what is running now.
      const liveMax = await readSysctl('net.netfilter.nf_conntrack_max');
      const liveBuckets = await readSysctl('net.netfilter.nf_conntrack_buckets');
      if (typeof liveMax === 'number') settings.max = liveMax;
      if (typeof liveBuckets === 'number') settings.buckets = liveBuckets;
    }

    const linkage = await detectConntrackLinkage();
    const files = renderPersistence(settings, values['sysctl-file'] ? { linkage, sysctlFile: values['sysctl-file'] } : { linkage });
    const advice = bootParameterAdvice(settings.buckets, linkage);
    const applied = values.apply ? await applyPersistence(files, { root: values.root as string }) : undefined;

    if (values.json) {
      json(io.stdout, { linkage, files, applied: applied ?? null, advice: advice ?? null });
      return 0;
    }
    const lines: string[] = [`nf_conntrack is ${linkage === 'built-in' ? 'built into the kernel' : linkage === 'module' ? 'a loaded module' : 'not loaded'}.`];
    if (applied === undefined) {
      for (const file of files) lines.push('', `# ${file.path}: ${file.purpose}`, file.content.trimEnd());
      lines.push('', 'Nothing written; add --apply --root / to install these files.');
    } else {
      for (const result of applied) lines.push(`${result.changed ? 'wrote' : 'unchanged'} ${result.writtenTo}`);
    }
    if (advice !== undefined) lines.push('', advice);
    write(io.stdout, lines.join('\n'));
    return 0;
  });
