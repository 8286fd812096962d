/**
 * The part of YAML that configuration files such as exporter-toolkit's web config use: block
 * mappings and sequences, flow sequences, plain and quoted scalars, literal blocks (`|`, `|-`),
 * comments. Anything else (anchors, aliases, tags, several documents, flow mappings with content,
 * multi-line plain scalars) is refused with the line it is on, instead of being read wrongly.
 * Scalars stay strings except `true`/`false`, `null`/`~` and decimal integers.
 */
export class YamlSubsetError extends Error {}

type Value = string | number | boolean | null | Value[] | { [key: string]: Value };

interface Line {
  number: number;
  indent: number;
  /** The line without indentation and trailing comment. */
  text: string;
  /** The raw line, for literal blocks. */
  raw: string;
}

function fail(line: { number: number } | undefined, why: string): never {
  throw new YamlSubsetError(line === undefined ? why : `line ${line.number}: ${why}`);
}

/** Removes a comment (`#` at the start or after a space, outside quotes). */
function stripComment(text: string, number: number): string {
  let quote: string | undefined;
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (quote !== undefined) {
      if (c === '\\' && quote === '"') i++;
      else if (c === quote) {
        if (quote === "'" && text[i + 1] === "'") i++;
        else quote = undefined;
      }
    } else if (c === '"' || c === "'") {
      // A quote only opens a quoted scalar where a scalar starts.
      const before = text.slice(0, i).trimEnd();
      if (before === '' || /[:\-,[]$/.test(before)) quote = c;
    } else if (c === '#' && (i === 0 || text[i - 1] === ' ' || text[i - 1] === '\t')) {
      return text.slice(0, i).trimEnd();
    }
  }
  if (quote !== undefined) fail({ number }, 'unterminated quoted string');
  return text.trimEnd();
}

function unquoteDouble(body: string, line: Line): string {
  return body.replace(/\\(u[0-9a-fA-F]{4}|x[0-9a-fA-F]{2}|.)/g, (_m, e: string) => {
    if (e.length > 1) return String.fromCharCode(Number.parseInt(e.slice(1), 16));
    const simple: Record<string, string> = { n: '\n', t: '\t', r: '\r', '"': '"', '\\': '\\', '/': '/', '0': '\0', ' ': ' ' };
    return simple[e] ?? fail(line, `unknown escape \\${e}`);
  });
}

function scalar(text: string, line: Line): Value {
  if (text.startsWith('"')) {
    if (!text.endsWith('"') || text.length < 2) fail(line, 'unterminated double-quoted string');
    return unquoteDouble(text.slice(1, -1), line);
  }
  if (text.startsWith("'")) {
    if (!text.endsWith("'") || text.length < 2) fail(line, 'unterminated single-quoted string');
    return text.slice(1, -1).replace(/''/g, "'");
  }
  if (/^[&*!%@`|>]/.test(text)) fail(line, `${JSON.stringify(text[0])} (anchors, aliases, tags, block scalars here) is not supported`);
  if (text === '' || text === '~' || text === 'null' || text === 'Null' || text === 'NULL') return null;
  if (/^(true|True|TRUE)$/.test(text)) return true;
  if (/^(false|False|FALSE)$/.test(text)) return false;
  if (/^[-+]?\d+$/.test(text) && Number.isSafeInteger(Number(text))) return Number(text);
  if (text.includes(': ') || text.endsWith(':')) fail(line, `a mapping is not allowed here: ${JSON.stringify(text)}`);
  return text;
}

/** `[a, "b", c]` with scalars only; `{}` for an empty mapping. */
function flow(text: string, line: Line): Value {
  if (text === '{}') return {};
  if (text.startsWith('{')) fail(line, 'flow mappings other than {} are not supported');
  const body = text.slice(1, -1).trim();
  if (!text.endsWith(']')) fail(line, 'unterminated flow sequence');
  if (body === '') return [];
  const items: Value[] = [];
  let start = 0;
  let quote: string | undefined;
  for (let i = 0; i <= body.length; i++) {
    const c = body[i];
    if (quote !== undefined) {
      if (c === '\\' && quote === '"') i++;
      else if (c === quote) quote = undefined;
    } else if (c === '"' || c === "'") quote = c;
    else if (c === '[' || c === '{') fail(line, 'nested flow collections are not supported');
    else if (c === ',' || c === undefined) {
      items.push(scalar(body.slice(start, i).trim(), line));
      start = i + 1;
    }
  }
  return items;
}

function inlineValue(text: string, line: Line): Value {
  return text.startsWith('[') || text.startsWith('{') ? flow(text, line) : scalar(text, line);
}

/** `key: rest` or `key:`; the key may be quoted. */
function splitKey(text: string, line: Line): [string, string] | undefined {
  let keyEnd: number;
  let key: string;
  if (text.startsWith('"') || text.startsWith("'")) {
    const close = text.indexOf(text[0] as string, 1);
    if (close < 0) fail(line, 'unterminated quoted key');
    keyEnd = close + 1;
    key = String(scalar(text.slice(0, keyEnd), line));
    if (text[keyEnd] !== ':') return undefined;
  } else {
    const match = /^([^\s:][^:]*?):(?=\s|$)/.exec(text);
    if (match === null) return undefined;
    keyEnd = (match[1] as string).length;
    key = match[1] as string;
  }
  const rest = text.slice(keyEnd + 1);
  if (rest !== '' && !rest.startsWith(' ')) return undefined;
  return [key, rest.trim()];
}

class Parser {
  readonly #lines: Line[];
  #i = 0;

  constructor(text: string) {
    const lines: Line[] = [];
    text.replace(/^\uFEFF/, '').split(/\r?\n/).forEach((raw, index) => {
      const number = index + 1;
      const indentText = /^[ \t]*/.exec(raw)?.[0] ?? '';
      if (indentText.includes('\t') && raw.trim() !== '') fail({ number }, 'tabs are not allowed for indentation');
      const body = stripComment(raw.slice(indentText.length), number);
      lines.push({ number, indent: indentText.length, text: body, raw });
    });
    this.#lines = lines;
  }

  #skipBlank(): Line | undefined {
    while (this.#i < this.#lines.length && (this.#lines[this.#i] as Line).text === '') this.#i++;
    return this.#lines[this.#i];
  }

  document(): Value {
    let first = this.#skipBlank();
    if (first?.text === '---') {
      this.#i++;
      first = this.#skipBlank();
    }
    if (first === undefined) return null;
    if (first.text.startsWith('%')) fail(first, 'directives are not supported');
    const value = this.#node(first.indent);
    const rest = this.#skipBlank();
    if (rest !== undefined) fail(rest, rest.text === '---' ? 'only one document is supported' : 'unexpected indentation');
    return value;
  }

  /** A block node whose first line is at the cursor, indented by exactly `indent`. */
  #node(indent: number): Value {
    const line = this.#skipBlank() as Line;
    if (line.indent !== indent) fail(line, 'unexpected indentation');
    if (line.text === '-' || line.text.startsWith('- ')) return this.#sequence(indent);
    if (splitKey(line.text, line) !== undefined) return this.#mapping(indent);
    this.#i++;
    return inlineValue(line.text, line);
  }

  #mapping(indent: number): Value {
    const map: { [key: string]: Value } = {};
    for (let line = this.#skipBlank(); line !== undefined && line.indent === indent; line = this.#skipBlank()) {
      if (line.text === '---' || line.text === '...') break;
      const pair = splitKey(line.text, line);
      if (pair === undefined) fail(line, `expected "key: value", got ${JSON.stringify(line.text)}`);
      const [key, rest] = pair;
      if (Object.hasOwn(map, key)) fail(line, `key ${JSON.stringify(key)} is given twice`);
      this.#i++;
      map[key] = this.#valueAfterKey(rest, line, indent);
    }
    const next = this.#skipBlank();
    if (next !== undefined && next.indent > indent) fail(next, 'unexpected indentation');
    return map;
  }

  #sequence(indent: number): Value {
    const items: Value[] = [];
    for (let line = this.#skipBlank(); line !== undefined && line.indent === indent; line = this.#skipBlank()) {
      if (!(line.text === '-' || line.text.startsWith('- '))) break;
      const rest = line.text.slice(1).trim();
      this.#i++;
      if (rest === '') {
        const next = this.#skipBlank();
        if (next === undefined || next.indent <= indent) items.push(null);
        else items.push(this.#node(next.indent));
      } else {
        if (splitKey(rest, line) !== undefined) fail(line, 'mappings inside sequences are not supported');
        items.push(inlineValue(rest, line));
      }
    }
    return items;
  }

  #valueAfterKey(rest: string, line: Line, indent: number): Value {
    if (rest === '|' || rest === '|-') return this.#literal(indent, rest === '|-', line);
    if (rest !== '') return inlineValue(rest, line);
    const next = this.#skipBlank();
    if (next === undefined) return null;
    // A sequence may sit at its key's own indentation.
    if (next.indent > indent || (next.indent === indent && (next.text === '-' || next.text.startsWith('- ')))) {
      return this.#node(next.indent);
    }
    return null;
  }

  /** A literal block: the raw lines indented beyond the key, with line feeds kept. */
  #literal(indent: number, strip: boolean, keyLine: Line): string {
    const body: string[] = [];
    let blockIndent: number | undefined;
    while (this.#i < this.#lines.length) {
      const line = this.#lines[this.#i] as Line;
      if (line.raw.trim() === '') {
        body.push('');
        this.#i++;
        continue;
      }
      const lineIndent = /^ */.exec(line.raw)?.[0].length ?? 0;
      if (lineIndent <= indent) break;
      blockIndent ??= lineIndent;
      if (lineIndent < blockIndent) fail(line, 'literal block lines must keep their indentation');
      body.push(line.raw.slice(blockIndent));
      this.#i++;
    }
    if (blockIndent === undefined) fail(keyLine, 'empty literal block');
    while (body.at(-1) === '') body.pop();
    return body.join('\n') + (strip ? '' : '\n');
  }
}

/** Parses one YAML document of the subset described above. */
export function parseYamlSubset(text: string): unknown {
  return new Parser(text).document();
}
