/**
 * A small, strict reader of the Prometheus text exposition format (version 0.0.4), written from the
 * format's rules so tests can check every line the exporter writes instead of grepping for a few.
 * It throws, naming the line, on anything the format does not allow. Histograms and summaries
 * (samples named x_bucket, x_sum, x_count under TYPE x) are not supported: the exporter has none.
 */

export interface ExpositionSample {
  labels: Record<string, string>;
  value: number;
}

export interface ExpositionFamily {
  name: string;
  help: string | undefined;
  type: 'counter' | 'gauge' | 'histogram' | 'summary' | 'untyped';
  samples: ExpositionSample[];
}

const METRIC_NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const LABEL_NAME = /^[a-zA-Z_][a-zA-Z0-9_]*$/;
/** What Go's strconv.ParseFloat accepts in practice from exporters. */
const FLOAT = /^(?:[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?|[+-]?Inf|NaN)$/;
const TYPES = new Set(['counter', 'gauge', 'histogram', 'summary', 'untyped']);

function fail(lineNumber: number, line: string, why: string): never {
  throw new Error(`exposition line ${lineNumber}: ${why}: ${JSON.stringify(line)}`);
}

/** Undoes the escapes of a HELP text (`\\`, `\n`); any other escape is an error. */
function unescapeHelp(text: string, lineNumber: number, line: string): string {
  return text.replace(/\\(.?)/g, (_m, c: string) => {
    if (c === '\\') return '\\';
    if (c === 'n') return '\n';
    return fail(lineNumber, line, `bad escape \\${c} in HELP`);
  });
}

function parseValue(text: string, lineNumber: number, line: string): number {
  if (!FLOAT.test(text)) fail(lineNumber, line, `bad value ${JSON.stringify(text)}`);
  if (/Inf$/.test(text)) return text.startsWith('-') ? -Infinity : Infinity;
  return text === 'NaN' ? Number.NaN : Number(text);
}

/** Parses `{name="value",...}` starting at `start` (the `{`); returns the labels and the index after `}`. */
function parseLabels(line: string, start: number, lineNumber: number): { labels: Record<string, string>; end: number } {
  const labels: Record<string, string> = {};
  let i = start + 1;
  for (;;) {
    if (line[i] === '}') return { labels, end: i + 1 };
    const eq = line.indexOf('=', i);
    if (eq < 0) fail(lineNumber, line, 'label without =');
    const name = line.slice(i, eq);
    if (!LABEL_NAME.test(name) || name.startsWith('__')) fail(lineNumber, line, `bad label name ${JSON.stringify(name)}`);
    if (name in labels) fail(lineNumber, line, `label ${name} given twice`);
    if (line[eq + 1] !== '"') fail(lineNumber, line, `label ${name}: value not quoted`);
    let value = '';
    let j = eq + 2;
    for (;; j++) {
      const c = line[j];
      if (c === undefined) fail(lineNumber, line, `label ${name}: unterminated value`);
      if (c === '"') break;
      if (c === '\\') {
        const next = line[++j];
        if (next === '\\' || next === '"') value += next;
        else if (next === 'n') value += '\n';
        else fail(lineNumber, line, `label ${name}: bad escape \\${next ?? ''}`);
      } else {
        value += c;
      }
    }
    labels[name] = value;
    i = j + 1;
    if (line[i] === ',') i++;
    else if (line[i] !== '}') fail(lineNumber, line, 'expected , or } after a label');
  }
}

/**
 * Every family of `text`, by name, in order of appearance. Enforces: a final line feed; HELP and
 * TYPE at most once per name and TYPE before the name's first sample; each name's lines in one
 * uninterrupted group; valid names, escapes and values; no two samples with the same labels.
 */
export function parseExposition(text: string): Map<string, ExpositionFamily> {
  if (text !== '' && !text.endsWith('\n')) throw new Error('exposition: the last line must end with a line feed');
  const families = new Map<string, ExpositionFamily>();
  const helpSeen = new Set<string>();
  const typeSeen = new Set<string>();
  const series = new Set<string>();
  const finished = new Set<string>();
  let current: string | undefined;
  const enter = (name: string, lineNumber: number, line: string): ExpositionFamily => {
    if (name !== current) {
      if (finished.has(name)) fail(lineNumber, line, `${name} continues after another metric's lines`);
      if (current !== undefined) finished.add(current);
      current = name;
    }
    let family = families.get(name);
    if (family === undefined) {
      family = { name, help: undefined, type: 'untyped', samples: [] };
      families.set(name, family);
    }
    return family;
  };

  const lines = text.split('\n');
  lines.pop(); // after the final line feed
  for (const [index, line] of lines.entries()) {
    const lineNumber = index + 1;
    if (line.includes('\r')) fail(lineNumber, line, 'carriage return');
    const trimmed = line.trim();
    if (trimmed === '') continue;
    if (trimmed.startsWith('#')) {
      const meta = /^#\s+(HELP|TYPE)\s+(\S+)(?:\s+(.*))?$/.exec(trimmed);
      if (meta === null) continue; // a plain comment
      const [, keyword, name = '', rest = ''] = meta;
      if (!METRIC_NAME.test(name)) fail(lineNumber, line, `bad metric name ${JSON.stringify(name)}`);
      const family = enter(name, lineNumber, line);
      if (keyword === 'HELP') {
        if (helpSeen.has(name)) fail(lineNumber, line, `second HELP for ${name}`);
        helpSeen.add(name);
        family.help = unescapeHelp(rest, lineNumber, line);
      } else {
        if (!TYPES.has(rest)) fail(lineNumber, line, `unknown type ${JSON.stringify(rest)}`);
        if (family.samples.length > 0) fail(lineNumber, line, `TYPE for ${name} after its samples`);
        if (typeSeen.has(name)) fail(lineNumber, line, `second TYPE for ${name}`);
        typeSeen.add(name);
        family.type = rest as ExpositionFamily['type'];
      }
      continue;
    }
    const nameMatch = /^[^\s{]+/.exec(trimmed);
    const name = nameMatch?.[0] ?? '';
    if (!METRIC_NAME.test(name)) fail(lineNumber, line, `bad metric name ${JSON.stringify(name)}`);
    let labels: Record<string, string> = {};
    let restStart = name.length;
    if (trimmed[restStart] === '{') ({ labels, end: restStart } = parseLabels(trimmed, restStart, lineNumber));
    const rest = trimmed.slice(restStart);
    if (!/^[ \t]/.test(rest)) fail(lineNumber, line, 'no blank before the value');
    const fields = rest.trim().split(/[ \t]+/);
    if (fields.length > 2) fail(lineNumber, line, 'more than a value and a timestamp');
    if (fields[1] !== undefined && !/^-?\d+$/.test(fields[1])) fail(lineNumber, line, 'bad timestamp');
    const value = parseValue(fields[0] ?? '', lineNumber, line);
    const family = enter(name, lineNumber, line);
    const key = `${name}${JSON.stringify(Object.entries(labels).sort(([a], [b]) => (a < b ? -1 : 1)))}`;
    if (series.has(key)) fail(lineNumber, line, 'a second sample with the same name and labels');
    series.add(key);
    family.samples.push({ labels, value });
  }
  return families;
}
