/**
 * conntrack-tools' command line (`conntrack -L -p tcp --dport 22 -o extended`), parsed the way
 * conntrack-tools 1.4.7 parses it: getopt_long with unique prefixes of long options, protocol
 * options that exist only after `-p PROTO`, the same per-command table of legal and compulsory
 * options, and the same messages. Nothing here touches the kernel.
 */
import { readFileSync } from 'node:fs';
import { isIPv4, isIPv6 } from 'node:net';

import type { ConntrackEventType, Family, StatusFlag } from '../base/types.js';

/** A command-line problem: exit status 2 and conntrack-tools' "Try `conntrack -h'" line. */
export class CtParameterError extends Error {}
/** Any other failure: exit status 1. */
export class CtFailure extends Error {}

export type CtCommandName = 'list' | 'create' | 'update' | 'delete' | 'get' | 'flush' | 'event' | 'count' | 'stats' | 'version' | 'help' | 'add';
export type CtTable = 'conntrack' | 'expect' | 'dying' | 'unconfirmed';
export type OutputName = 'xml' | 'extended' | 'timestamp' | 'id' | 'ktimestamp' | 'labels' | 'userspace' | 'save' | 'json' | 'jsonl';

export interface TupleOptions {
  src?: string;
  /** CIDR prefix length given with the address (`-s 10.0.0.0/8`, or through --mask-src). */
  srcPrefix?: number;
  dst?: string;
  dstPrefix?: number;
  sport?: number;
  dport?: number;
}

/**
 * The expectation table's own options (`-I expect`): the expected tuple (`--tuple-src`,
 * `--tuple-dst`, `--tuple-port-src`, `--tuple-port-dst`) and its mask (`--mask-src`, `--mask-dst`,
 * `--mask-port-src`, `--mask-port-dst`; a CIDR prefix on `--tuple-src/-dst` or `-s/-d` sets the
 * mask too, as in conntrack-tools). The master is `-s -d -p --sport --dport`.
 */
export interface ExpectOptions {
  tuple: { src?: string; dst?: string; sport?: number; dport?: number };
  mask: { src?: string; dst?: string; sport?: number; dport?: number };
}

export interface NatOption {
  /** The address the entry was NATed to, and its port; neither: any NAT of that kind. */
  address?: string;
  port?: number;
}

export interface CtArgs {
  command: CtCommandName;
  table: CtTable;
  family: Family | undefined;
  original: TupleOptions;
  reply: TupleOptions;
  /** With the expectation table: the expected tuple and its mask. */
  expect: ExpectOptions;
  protocol: { name: string; number: number } | undefined;
  /** `--state` as given (LISTEN is the kernel's SYN_SENT2). */
  state: string | undefined;
  icmp: { type?: number; code?: number; id?: number };
  timeout: number | undefined;
  /** `-u`: flags to be set, flags to be clear. */
  status: { set: StatusFlag[]; unset: StatusFlag[] } | undefined;
  mark: { value: number; mask: number } | undefined;
  secmark: number | undefined;
  /** `-i/--id` (deprecated in conntrack-tools, still parsed): the entry's id. */
  id: number | undefined;
  /** Label names or bit numbers, resolved through connlabel.conf. */
  label: number[] | undefined;
  labelAdd: number[] | undefined;
  /** `--label-del` alone deletes every label. */
  labelDel: number[] | 'all' | undefined;
  zone: number | undefined;
  origZone: number | undefined;
  replyZone: number | undefined;
  srcNat: NatOption | undefined;
  dstNat: NatOption | undefined;
  anyNat: NatOption | undefined;
  events: ConntrackEventType[] | undefined;
  bufferSize: number | undefined;
  output: Set<OutputName>;
  zero: boolean;
  /** Ours: the network namespace to work in. */
  netns: string | undefined;
  /** Label names by bit, when labels were asked for and connlabel.conf exists. */
  labelNames: Map<number, string> | undefined;
  /** Lines conntrack-tools writes to stderr while parsing (warnings), to repeat them. */
  warnings: string[];
}

// Option bits in conntrack-tools' order: the order of its "Illegal option" checks.
const OPTION_NAMES = [
  'src', 'dst', 'reply-src', 'reply-dst', 'protonum', 'timeout', 'status', 'zero', 'event-mask',
  'tuple-src', 'tuple-dst', 'mask-src', 'mask-dst', 'nat-range', 'mark', 'id', 'family', 'src-nat',
  'dst-nat', 'output', 'secmark', 'buffer-size', 'any-nat', 'zone', 'label', 'label-add', 'label-del',
  'orig-zone', 'reply-zone',
] as const;
type OptionName = (typeof OPTION_NAMES)[number];

// 0 illegal, 1 compulsory, 2 optional, 3 a pair decides (src+dst or reply-src+reply-dst).
const LEGAL: Record<string, string> = {
  list: '22222022000220202222202220022',
  create: '33331120000002200220000202022',
  add: '33331120000002200220000202022',
  update: '22222220000220222222000022200',
  delete: '22222220000220222222000220022',
  get: '33331000000000020002000020000',
  flush: '00000000000000002000000000000',
  event: '22222000200220202222222220022',
  count: '00000000000000000000000000000',
  stats: '00000000000000000000000000000',
  version: '00000000000000000000000000000',
  help: '00002000000000000000000000000',
};
// With the expectation table the columns differ (conntrack-tools' EXP_* rows).
const LEGAL_EXPECT: Record<string, string> = {
  list: '00000000000000002002000000000',
  create: '11221120011110000000000000000',
  delete: '11221000000000000000000000000',
  get: '11221000000000000000000000000',
  event: '00000000000000000002000000000',
  stats: '00000000000000000000000000000',
  count: '00000000000000000000000000000',
  flush: '00000000000000000000000000000',
};

/**
 * The port protocols' own options in conntrack-tools' order (its tcp_optflags), with our key for
 * each, and which the expectation commands need (1), allow (2) or refuse (0).
 */
const PORT_OPTION_ORDER: ReadonlyArray<[name: string, key: string]> = [
  ['sport', 'sport'], ['dport', 'dport'], ['reply-port-src', 'reply-sport'], ['reply-port-dst', 'reply-dport'],
  ['mask-port-src', 'mask-port-src'], ['mask-port-dst', 'mask-port-dst'], ['state', 'state'],
  ['tuple-port-src', 'tuple-port-src'], ['tuple-port-dst', 'tuple-port-dst'],
];
const PORT_LEGAL_EXPECT: Record<string, string> = { create: '110011011', get: '111100000', delete: '111100000' };
/** In the conntrack table the mask and tuple ports mean nothing: illegal with every command. */
const EXPECT_ONLY_PORT_OPTIONS = ['mask-port-src', 'mask-port-dst', 'tuple-port-src', 'tuple-port-dst'];
/** The protocols whose handlers have ports (and so the expectation options above). */
export const PORT_PROTOCOL_NUMBERS: ReadonlySet<number> = new Set([6, 17, 136, 132, 33]);

interface LongOption {
  name: string;
  /** 0 none, 1 required, 2 optional (taken from the next word unless it starts with - or !). */
  arg: 0 | 1 | 2;
  key: string;
}

const COMMAND_KEYS: Record<string, CtCommandName> = {
  L: 'list', I: 'create', U: 'update', D: 'delete', G: 'get', F: 'flush', E: 'event', C: 'count',
  S: 'stats', V: 'version', h: 'help', A: 'add',
};

const GLOBAL_OPTIONS: LongOption[] = [
  { name: 'dump', arg: 2, key: 'L' }, { name: 'create', arg: 2, key: 'I' }, { name: 'add', arg: 2, key: 'A' },
  { name: 'delete', arg: 2, key: 'D' }, { name: 'update', arg: 2, key: 'U' }, { name: 'get', arg: 2, key: 'G' },
  { name: 'flush', arg: 2, key: 'F' }, { name: 'event', arg: 2, key: 'E' }, { name: 'counter', arg: 2, key: 'C' },
  { name: 'count', arg: 2, key: 'C' }, { name: 'stats', arg: 2, key: 'S' }, { name: 'version', arg: 0, key: 'V' },
  { name: 'help', arg: 0, key: 'h' }, { name: 'orig-src', arg: 1, key: 's' }, { name: 'src', arg: 1, key: 's' },
  { name: 'orig-dst', arg: 1, key: 'd' }, { name: 'dst', arg: 1, key: 'd' }, { name: 'reply-src', arg: 1, key: 'r' },
  { name: 'reply-dst', arg: 1, key: 'q' }, { name: 'protonum', arg: 1, key: 'p' }, { name: 'proto', arg: 1, key: 'p' },
  { name: 'timeout', arg: 1, key: 't' }, { name: 'status', arg: 1, key: 'u' }, { name: 'zero', arg: 0, key: 'z' },
  { name: 'event-mask', arg: 1, key: 'e' }, { name: 'tuple-src', arg: 1, key: '[' }, { name: 'tuple-dst', arg: 1, key: ']' },
  { name: 'mask-src', arg: 1, key: '{' }, { name: 'mask-dst', arg: 1, key: '}' }, { name: 'nat-range', arg: 1, key: 'a' },
  { name: 'mark', arg: 1, key: 'm' }, { name: 'secmark', arg: 1, key: 'c' }, { name: 'id', arg: 2, key: 'i' },
  { name: 'family', arg: 1, key: 'f' }, { name: 'src-nat', arg: 2, key: 'n' }, { name: 'dst-nat', arg: 2, key: 'g' },
  { name: 'output', arg: 1, key: 'o' }, { name: 'buffer-size', arg: 1, key: 'b' }, { name: 'any-nat', arg: 2, key: 'j' },
  { name: 'zone', arg: 1, key: 'w' }, { name: 'label', arg: 1, key: 'l' }, { name: 'label-add', arg: 1, key: '<' },
  { name: 'label-del', arg: 2, key: '>' }, { name: 'orig-zone', arg: 1, key: '(' }, { name: 'reply-zone', arg: 1, key: ')' },
  // Ours.
  { name: 'netns', arg: 1, key: 'netns' },
];

/** getopt_str of conntrack 1.4.7: which short options take an argument. */
const SHORT_ARGS: Record<string, 0 | 1 | 2> = {
  L: 2, I: 2, U: 2, D: 2, G: 2, E: 2, F: 2, A: 2, h: 0, V: 0, s: 1, d: 1, r: 1, q: 1, p: 1, t: 1, u: 1,
  e: 1, a: 1, z: 0, m: 1, i: 1, f: 1, o: 1, n: 2, g: 2, c: 1, b: 1, C: 2, S: 0, j: 2, w: 1, l: 1,
};

const PORT_OPTIONS: LongOption[] = [
  { name: 'orig-port-src', arg: 1, key: 'sport' }, { name: 'sport', arg: 1, key: 'sport' },
  { name: 'orig-port-dst', arg: 1, key: 'dport' }, { name: 'dport', arg: 1, key: 'dport' },
  { name: 'reply-port-src', arg: 1, key: 'reply-sport' }, { name: 'reply-port-dst', arg: 1, key: 'reply-dport' },
  { name: 'mask-port-src', arg: 1, key: 'mask-port-src' }, { name: 'mask-port-dst', arg: 1, key: 'mask-port-dst' },
  { name: 'tuple-port-src', arg: 1, key: 'tuple-port-src' }, { name: 'tuple-port-dst', arg: 1, key: 'tuple-port-dst' },
];
const STATE_OPTION: LongOption = { name: 'state', arg: 1, key: 'state' };

/** The protocol handlers conntrack-tools has, with the options each adds after `-p`. */
const PROTOCOL_HANDLERS: Record<string, { number: number; options: LongOption[] }> = {
  tcp: { number: 6, options: [...PORT_OPTIONS, STATE_OPTION] },
  udp: { number: 17, options: PORT_OPTIONS },
  udplite: { number: 136, options: PORT_OPTIONS },
  sctp: { number: 132, options: [...PORT_OPTIONS, STATE_OPTION, { name: 'orig-vtag', arg: 1, key: 'vtag' }, { name: 'reply-vtag', arg: 1, key: 'vtag' }] },
  dccp: { number: 33, options: [...PORT_OPTIONS, STATE_OPTION, { name: 'role', arg: 1, key: 'role' }] },
  icmp: {
    number: 1,
    options: [{ name: 'icmp-type', arg: 1, key: 'icmp-type' }, { name: 'icmp-code', arg: 1, key: 'icmp-code' }, { name: 'icmp-id', arg: 1, key: 'icmp-id' }],
  },
  icmpv6: {
    number: 58,
    options: [{ name: 'icmpv6-type', arg: 1, key: 'icmp-type' }, { name: 'icmpv6-code', arg: 1, key: 'icmp-code' }, { name: 'icmpv6-id', arg: 1, key: 'icmp-id' }],
  },
  gre: {
    number: 47,
    options: ['srckey', 'orig-key-src', 'dstkey', 'orig-key-dst', 'reply-key-src', 'reply-key-dst'].map((name) => ({ name, arg: 1 as const, key: 'gre-key' })),
  },
};

/** conntrack-tools' TCP state names (LISTEN is state 9, the kernel's SYN_SENT2; we take both). */
const TCP_STATE_NAMES = ['NONE', 'SYN_SENT', 'SYN_RECV', 'ESTABLISHED', 'FIN_WAIT', 'CLOSE_WAIT', 'LAST_ACK', 'TIME_WAIT', 'CLOSE', 'LISTEN', 'SYN_SENT2'];

const STATUS_NAMES: Array<[string, StatusFlag | undefined]> = [
  ['ASSURED', 'ASSURED'], ['SEEN_REPLY', 'SEEN_REPLY'], ['UNSET', undefined], ['FIXED_TIMEOUT', 'FIXED_TIMEOUT'],
  ['EXPECTED', 'EXPECTED'], ['OFFLOAD', 'OFFLOAD'], ['HW_OFFLOAD', 'HW_OFFLOAD'],
];
const EVENT_NAMES: Array<[string, ConntrackEventType[]]> = [
  ['ALL', ['new', 'update', 'destroy']], ['NEW', ['new']], ['UPDATES', ['update']], ['DESTROY', ['destroy']],
];
const OUTPUT_NAMES: OutputName[] = ['xml', 'extended', 'timestamp', 'id', 'ktimestamp', 'labels', 'userspace', 'save'];

/** Where conntrack-tools (libnetfilter_conntrack) reads label names. */
export const CONNLABEL_CONF = '/etc/xtables/connlabel.conf';

/** connlabel.conf: `BIT NAME` lines; undefined when the file cannot be read. */
export function readLabelMap(path = CONNLABEL_CONF): Map<number, string> | undefined {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch {
    return undefined;
  }
  const map = new Map<number, string>();
  for (const line of text.split('\n')) {
    const m = /^\s*(\d+)\s+(\S+)/.exec(line);
    if (m && !map.has(Number(m[1]))) map.set(Number(m[1]), m[2] as string);
  }
  return map;
}

/** strtoul(text, 0): decimal, 0x hex or 0 octal, the whole word. */
function cNumber(text: string, max: number): number | undefined {
  let value: number;
  if (/^0x[0-9a-f]+$/i.test(text)) value = Number.parseInt(text.slice(2), 16);
  else if (/^0[0-7]*$/.test(text)) value = Number.parseInt(text, 8);
  else if (/^[1-9]\d*$/.test(text)) value = Number(text);
  else return undefined;
  return Number.isSafeInteger(value) && value <= max ? value : undefined;
}

function decimal(text: string, max: number, what: string): number {
  const value = /^\d+$/.test(text) ? Number(text) : Number.NaN;
  if (!(value <= max)) throw new CtParameterError(`invalid ${what} \`${text}'`);
  return value;
}

/** The items of a comma list matched the way conntrack-tools does: case-insensitive, a prefix of the name. */
function parseList<T>(text: string, names: ReadonlyArray<[string, T]>): T[] {
  const out: T[] = [];
  let rest = text;
  for (;;) {
    const comma = rest.indexOf(',');
    const item = comma < 0 ? rest : rest.slice(0, comma);
    const found = item === '' ? undefined : names.find(([name]) => name.toLowerCase().startsWith(item.toLowerCase()));
    if (found === undefined) throw new CtParameterError(`Bad parameter \`${rest}'`);
    out.push(found[1]);
    if (comma < 0) return out;
    rest = rest.slice(comma + 1);
  }
}

/** getprotobyname() through /etc/protocols. */
function protocolByName(name: string): number | undefined {
  let text: string;
  try {
    text = readFileSync('/etc/protocols', 'utf8');
  } catch {
    return undefined;
  }
  for (const line of text.split('\n')) {
    const [entry] = line.split('#');
    const words = (entry ?? '').trim().split(/\s+/);
    if (words.length < 2) continue;
    const [first, number, ...aliases] = words;
    if (first === name || aliases.includes(name)) return Number(number);
  }
  return undefined;
}

const HANDLER_BY_NUMBER = new Map(Object.entries(PROTOCOL_HANDLERS).map(([name, h]) => [h.number, name]));

function findProtocol(text: string): { name: string; number: number } {
  const lower = text.toLowerCase();
  if (PROTOCOL_HANDLERS[lower] !== undefined) return { name: lower, number: (PROTOCOL_HANDLERS[lower] as { number: number }).number };
  const byName = protocolByName(text);
  if (byName !== undefined) return { name: HANDLER_BY_NUMBER.get(byName) ?? 'unknown', number: byName };
  const n = cNumber(text, 255);
  if (n !== undefined) return { name: HANDLER_BY_NUMBER.get(n) ?? 'unknown', number: n };
  throw new CtParameterError(`\`${text}' unsupported protocol`);
}

function emptyArgs(): CtArgs {
  return {
    command: 'help', table: 'conntrack', family: undefined, original: {}, reply: {}, expect: { tuple: {}, mask: {} }, protocol: undefined,
    state: undefined, icmp: {}, timeout: undefined, status: undefined, mark: undefined, secmark: undefined, id: undefined,
    label: undefined, labelAdd: undefined, labelDel: undefined, zone: undefined, origZone: undefined,
    replyZone: undefined, srcNat: undefined, dstNat: undefined, anyNat: undefined, events: undefined,
    bufferSize: undefined, output: new Set(), zero: false, netns: undefined, labelNames: undefined, warnings: [],
  };
}

/** Does `argv` speak conntrack-tools' language? Its first word is one of its command options. */
export function isConntrackToolsSyntax(argv: readonly string[]): boolean {
  // Our --netns may come first: `conntrack --netns /run/netns/x -L`.
  const skip = argv[0] === '--netns' ? 2 : argv[0]?.startsWith('--netns=') ? 1 : 0;
  const first = argv[skip];
  if (first === undefined) return false;
  if (/^-[LIUDGEFCSAV]/.test(first)) return true;
  const long = /^--([a-z-]+)/.exec(first)?.[1];
  return long !== undefined && ['dump', 'create', 'add', 'update', 'delete', 'get', 'flush', 'event', 'counter', 'count', 'stats', 'version'].includes(long);
}

function netmaskPrefix(text: string, family: number): number {
  const bytes = family === 4 ? text.split('.').map(Number) : undefined;
  if (bytes === undefined || !isIPv4(text)) {
    throw new CtParameterError(`--mask-src/--mask-dst take an IPv4 netmask here, got \`${text}'`);
  }
  const bits = bytes.map((b) => b.toString(2).padStart(8, '0')).join('');
  if (!/^1*0*$/.test(bits)) throw new CtParameterError(`only contiguous netmasks are supported, got \`${text}'`);
  return bits.indexOf('0') < 0 ? 32 : bits.indexOf('0');
}

/** Parses conntrack-tools' arguments; throws CtParameterError (exit 2) or CtFailure (exit 1). */
export function parseConntrackArgs(argv: readonly string[]): CtArgs {
  const args = emptyArgs();
  const given = new Set<OptionName>();
  const protoGiven = new Set<string>();
  let command: CtCommandName | undefined;
  let handlerOptions: LongOption[] = [];
  let family: 4 | 6 | undefined;
  const labelWords: Array<{ text: string; kind: 'label' | 'add' | 'del' }> = [];
  let masks: { src?: string; dst?: string } = {};
  // Every write to an expectation mask, in order (the last one wins, as in conntrack-tools):
  // --mask-src/--mask-dst, or a CIDR prefix on -s/-d/--tuple-src/--tuple-dst.
  const maskWrites: Array<{ end: 'src' | 'dst'; text?: string; prefix?: number; fromMaster?: boolean }> = [];
  let i = 0;

  const setFamily = (f: 4 | 6) => {
    if (family !== undefined && family !== f) throw new CtParameterError('mismatched address family');
    family = f;
  };
  const optionalWord = (): string | undefined => {
    const next = argv[i];
    if (next !== undefined && !next.startsWith('-') && !next.startsWith('!')) {
      i++;
      return next;
    }
    return undefined;
  };
  const address = (text: string, option: string, cidr: boolean): { address: string; prefix?: number } => {
    const slash = text.indexOf('/');
    const addr = slash < 0 ? text : text.slice(0, slash);
    const f = isIPv4(addr) ? 4 : isIPv6(addr) ? 6 : undefined;
    if (f === undefined) throw new CtParameterError(`Invalid IP address \`${text}'`);
    setFamily(f);
    if (slash < 0) return { address: addr };
    if (!cidr) throw new CtParameterError(`CIDR notation unavailable for \`--${option}'`);
    const prefix = /^\d+$/.test(text.slice(slash + 1)) ? Number(text.slice(slash + 1)) : Number.NaN;
    if (!(prefix <= (f === 4 ? 32 : 128))) throw new CtParameterError('Invalid netmask');
    return { address: addr, prefix };
  };
  const nat = (word: string | undefined): NatOption => {
    if (word === undefined) return {};
    let host = word;
    let port: string | undefined;
    const bracket = /^\[([^\]]*)\](?::(.*))?$/.exec(word);
    if (bracket) {
      if (bracket[1] === '') throw new CtParameterError('No IPv6 address specified');
      host = bracket[1] as string;
      port = bracket[2];
    } else if (word.split(':').length === 2) {
      [host, port] = word.split(':') as [string, string];
    }
    if (port !== undefined && (port === '' || !/^\d+$/.test(port) || Number(port) > 65535)) {
      throw new CtParameterError(port === '' ? "No port specified after `:'" : `Invalid port \`${port}'`);
    }
    const parsed = address(host, 'src-nat', false);
    return { address: parsed.address, port: port === undefined ? undefined : Number(port) };
  };

  const apply = (key: string, value: string | undefined, shown: string) => {
    const need = (): string => {
      if (value === undefined) throw new CtParameterError(`option \`${shown}' requires an argument`);
      return value;
    };
    const command1 = COMMAND_KEYS[key];
    if (command1 !== undefined) {
      const tableWord = value ?? optionalWord();
      let table: CtTable = 'conntrack';
      if (tableWord !== undefined) {
        const found = (['expect', 'conntrack', 'dying', 'unconfirmed'] as const).find((t) => t.startsWith(tableWord) && tableWord !== '');
        if (found === undefined) throw new CtParameterError(`unknown type \`${tableWord}'`);
        table = found;
      }
      if ((table === 'dying' || table === 'unconfirmed') && command1 !== 'list') {
        throw new CtParameterError("Can't do that command with tables `dying' and `unconfirmed'");
      }
      if (table === 'expect' && (command1 === 'update' || command1 === 'add')) {
        throw new CtParameterError(`Can't do --${command1} on expectations`);
      }
      if (command !== undefined) throw new CtParameterError('Invalid commands combination');
      command = command1;
      args.table = table;
      return;
    }
    const mark = (name: OptionName) => given.add(name);
    switch (key) {
      case 's': case 'd': case 'r': case 'q': {
        const dir = key === 's' || key === 'd' ? args.original : args.reply;
        const end = key === 's' || key === 'r' ? 'src' : 'dst';
        const name = ({ s: 'src', d: 'dst', r: 'reply-src', q: 'reply-dst' } as const)[key];
        const parsed = address(need(), name, key === 's' || key === 'd');
        dir[end] = parsed.address;
        if (parsed.prefix !== undefined) {
          dir[`${end}Prefix`] = parsed.prefix;
          if (parsed.prefix < fullPrefix(parsed.address)) maskWrites.push({ end, prefix: parsed.prefix, fromMaster: true });
        }
        mark(name);
        return;
      }
      case '{': case '}': {
        const text = need();
        address(text, key === '{' ? 'mask-src' : 'mask-dst', false);
        if (key === '{') masks = { ...masks, src: text };
        else masks = { ...masks, dst: text };
        maskWrites.push({ end: key === '{' ? 'src' : 'dst', text });
        mark(key === '{' ? 'mask-src' : 'mask-dst');
        return;
      }
      case '[': case ']': {
        const end = key === '[' ? 'src' : 'dst';
        const parsed = address(need(), `tuple-${end}`, true);
        args.expect.tuple[end] = parsed.address;
        if (parsed.prefix !== undefined && parsed.prefix < fullPrefix(parsed.address)) maskWrites.push({ end, prefix: parsed.prefix });
        mark(key === '[' ? 'tuple-src' : 'tuple-dst');
        return;
      }
      case 'p': {
        args.protocol = findProtocol(need());
        handlerOptions = PROTOCOL_HANDLERS[args.protocol.name]?.options ?? [];
        mark('protonum');
        return;
      }
      case 't': {
        args.timeout = decimal(need(), 0xffffffff, 'timeout');
        mark('timeout');
        return;
      }
      case 'u': {
        const status = args.status ?? { set: [], unset: [] };
        for (const raw of need().split(',')) {
          if (raw === '' || raw === '!') throw new CtParameterError(`Bad parameter \`${value}'`);
          const negated = raw.startsWith('!');
          const word = negated ? raw.slice(1) : raw;
          if (!negated && word.startsWith('UNREPLIED')) {
            status.unset.push('SEEN_REPLY');
            continue;
          }
          if (/^(SRC|DST)_NAT$/i.test(word)) {
            args.warnings.push(`WARNING: ignoring ${word.toUpperCase()}, use --${word.slice(0, 3).toLowerCase()}-nat instead`);
            continue;
          }
          const [flag] = parseList(word, STATUS_NAMES);
          if (flag !== undefined) (negated ? status.unset : status.set).push(flag);
        }
        args.status = status;
        mark('status');
        return;
      }
      case 'e':
        args.events = [...new Set(parseList(need(), EVENT_NAMES).flat())];
        mark('event-mask');
        return;
      case 'o': {
        for (const word of need().split(',')) {
          if (word === 'json' || word === 'jsonl') args.output.add(word);
          else for (const name of parseList(word, OUTPUT_NAMES.map((n) => [n, n] as [string, OutputName]))) args.output.add(name);
        }
        if (args.output.has('save') && args.output.size > 1) {
          throw new CtFailure('cannot combine save output with any other output type, use -o save only');
        }
        if (args.output.has('json') && args.output.has('jsonl')) throw new CtParameterError('-o json and -o jsonl exclude each other');
        mark('output');
        return;
      }
      case 'z':
        args.zero = true;
        mark('zero');
        return;
      case 'n': case 'g': case 'j': {
        const spec = nat(value ?? optionalWord());
        if (key === 'n') args.srcNat = spec;
        else if (key === 'g') args.dstNat = spec;
        else args.anyNat = spec;
        mark(({ n: 'src-nat', g: 'dst-nat', j: 'any-nat' } as const)[key]);
        return;
      }
      case 'w': case '(': case ')': {
        const v = cNumber(need(), 0xffff);
        if (v === undefined) throw new CtFailure(`unexpected value '${value}' with -${key} option`);
        if (key === 'w') args.zone = v;
        else if (key === '(') args.origZone = v;
        else args.replyZone = v;
        mark(({ w: 'zone', '(': 'orig-zone', ')': 'reply-zone' } as const)[key]);
        return;
      }
      case 'c': case 'i': {
        const v = cNumber(need(), 0xffffffff);
        if (v === undefined) throw new CtFailure(`unexpected value '${value}' with -${key} option`);
        if (key === 'c') args.secmark = v;
        else args.id = v;
        mark(key === 'c' ? 'secmark' : 'id');
        return;
      }
      case 'm': {
        const [v, m, extra] = need().split('/');
        const markValue = cNumber(v ?? '', 0xffffffff);
        const markMask = m === undefined ? 0xffffffff : cNumber(m, 0xffffffff);
        if (markValue === undefined || markMask === undefined || extra !== undefined) {
          throw new CtFailure(`unexpected value '${value}' with -m option`);
        }
        args.mark = { value: markValue, mask: markMask };
        mark('mark');
        return;
      }
      case 'l': case '<': case '>': {
        const kind = key === 'l' ? 'label' : key === '<' ? 'add' : 'del';
        mark(({ label: 'label', add: 'label-add', del: 'label-del' } as const)[kind]);
        if (given.has('label-add') && given.has('label-del')) throw new CtFailure('cannot use --label-add and --label-del at the same time');
        const word = key === '>' ? value ?? optionalWord() : need();
        if (word === undefined) args.labelDel = 'all';
        else labelWords.push({ text: word, kind });
        return;
      }
      case 'a':
        need();
        args.warnings.push('WARNING: ignoring -a, deprecated option.');
        return;
      case 'f': {
        const text = need();
        if (text.startsWith('ipv4')) setFamily(4);
        else if (text.startsWith('ipv6')) setFamily(6);
        else throw new CtParameterError(`\`${text}' unsupported protocol`);
        mark('family');
        return;
      }
      case 'b': {
        args.bufferSize = decimal(need(), Number.MAX_SAFE_INTEGER, 'buffer size');
        mark('buffer-size');
        return;
      }
      case 'netns':
        args.netns = need();
        return;
      // Protocol options.
      case 'sport': case 'dport': case 'reply-sport': case 'reply-dport':
      case 'mask-port-src': case 'mask-port-dst': case 'tuple-port-src': case 'tuple-port-dst': {
        const port = decimal(need(), 65535, 'port');
        if (key === 'sport') args.original.sport = port;
        else if (key === 'dport') args.original.dport = port;
        else if (key === 'reply-sport') args.reply.sport = port;
        else if (key === 'reply-dport') args.reply.dport = port;
        else if (key === 'mask-port-src') args.expect.mask.sport = port;
        else if (key === 'mask-port-dst') args.expect.mask.dport = port;
        else if (key === 'tuple-port-src') args.expect.tuple.sport = port;
        else args.expect.tuple.dport = port;
        protoGiven.add(key);
        return;
      }
      case 'state': {
        const state = need();
        if (!TCP_STATE_NAMES.includes(state) || args.protocol?.number !== 6) {
          if (args.protocol?.number === 6) throw new CtParameterError(`unknown TCP state \`${state}'`);
          throw new CtFailure(`--state for ${args.protocol?.name ?? 'this protocol'} is not supported by this command (TCP states only)`);
        }
        args.state = state;
        protoGiven.add('state');
        return;
      }
      case 'icmp-type': case 'icmp-code': case 'icmp-id': {
        const v = decimal(need(), key === 'icmp-id' ? 65535 : 255, key);
        if (key === 'icmp-type') args.icmp.type = v;
        else if (key === 'icmp-code') args.icmp.code = v;
        else args.icmp.id = v;
        protoGiven.add(key);
        return;
      }
      default:
        // vtag, role, gre-key: see the README's limits.
        throw new CtFailure(`\`${shown}' is not supported by this command (see its README: what is left out)`);
    }
  };

  while (i < argv.length) {
    const word = argv[i++] as string;
    if (word === '--') throw new CtParameterError(`unexpected argument \`${argv[i] ?? ''}'`);
    if (word.startsWith('--')) {
      const eq = word.indexOf('=');
      const name = word.slice(2, eq < 0 ? undefined : eq);
      const inline = eq < 0 ? undefined : word.slice(eq + 1);
      const options = [...GLOBAL_OPTIONS, ...handlerOptions];
      let option = options.find((o) => o.name === name);
      if (option === undefined && name !== '') {
        const candidates = options.filter((o) => o.name.startsWith(name));
        // getopt_long: a unique prefix, or several prefixes that all mean the same option.
        if (candidates.length > 0 && candidates.every((o) => o.key === candidates[0]?.key && o.arg === candidates[0]?.arg)) option = candidates[0];
      }
      if (option === undefined) throw new CtParameterError(`unknown option \`${word}'`);
      if (option.arg === 0 && inline !== undefined) throw new CtParameterError(`unknown option \`${word}'`);
      let value = inline;
      if (value === undefined && option.arg === 1) {
        value = argv[i];
        if (value === undefined) throw new CtParameterError(`option \`${word}' requires an argument`);
        i++;
      }
      apply(option.key, value, word);
      continue;
    }
    if (word.startsWith('-') && word.length > 1) {
      // Short options may share a word (-Lz), and one that takes an argument may carry it (-ptcp).
      for (let k = 1; k < word.length; k++) {
        const c = word[k] as string;
        const takes = SHORT_ARGS[c];
        if (takes === undefined) throw new CtParameterError(`unknown option \`${word}'`);
        if (takes === 0) {
          apply(c, undefined, `-${c}`);
          continue;
        }
        let value: string | undefined = word.slice(k + 1) || undefined;
        if (value === undefined && takes === 1) {
          value = argv[i];
          if (value === undefined) throw new CtParameterError(`option \`-${c}' requires an argument`);
          i++;
        }
        apply(c, value, `-${c}`);
        break;
      }
      continue;
    }
    throw new CtParameterError(`unexpected argument \`${word}'`);
  }

  args.command = command ?? 'help';
  args.family = family === 4 ? 'ipv4' : family === 6 ? 'ipv6' : undefined;

  if (args.table === 'expect') {
    // The expectation's mask; -s/-d are the master's addresses, their prefix only sets the mask.
    for (const write of maskWrites) {
      args.expect.mask[write.end] = write.text ?? netmaskText(write.prefix as number, family ?? 4);
      given.add(write.end === 'src' ? 'mask-src' : 'mask-dst');
      if (write.fromMaster) delete args.original[`${write.end}Prefix`];
    }
  } else if (masks.src !== undefined || masks.dst !== undefined) {
    for (const [end, text] of [['src', masks.src], ['dst', masks.dst]] as const) {
      if (text === undefined) continue;
      if (args.original[end] === undefined) throw new CtParameterError(`Can't use --mask-${end} without --${end}`);
      args.original[`${end}Prefix`] = netmaskPrefix(text, family ?? 4);
    }
  }

  if (given.has('label') || given.has('label-add') || given.has('label-del') || args.output.has('labels')) {
    args.labelNames = readLabelMap();
    if (args.labelNames === undefined) args.warnings.push('nfct_labelmap_new: No such file or directory');
    const bitOf = (name: string): number => {
      for (const [bit, label] of args.labelNames ?? []) if (label === name) return bit;
      // Ours: a bit number works without a label map.
      if (/^\d+$/.test(name) && Number(name) < 128) return Number(name);
      throw new CtParameterError(`unknown label '${name}'`);
    };
    for (const { text, kind } of labelWords) {
      const bits = text.split(',').map(bitOf);
      if (kind === 'label') args.label = [...(args.label ?? []), ...bits];
      else if (kind === 'add') args.labelAdd = [...(args.labelAdd ?? []), ...bits];
      else if (args.labelDel !== 'all') args.labelDel = [...(args.labelDel ?? []), ...bits];
    }
  }

  if (given.has('any-nat') && (given.has('src-nat') || given.has('dst-nat'))) {
    throw new CtParameterError("cannot specify `--src-nat' or `--dst-nat' with `--any-nat'");
  }
  checkLegal(args, given, protoGiven);
  return args;
}

/** 32 for an IPv4 address, 128 for IPv6. */
function fullPrefix(address: string): number {
  return isIPv4(address) ? 32 : 128;
}

/** A prefix length as a netmask address: 24 → 255.255.255.0, 64 → ffff:ffff:ffff:ffff:0:0:0:0. */
export function netmaskText(prefix: number, family: 4 | 6): string {
  const bits = family === 4 ? 32 : 128;
  const ones = '1'.repeat(prefix) + '0'.repeat(bits - prefix);
  if (family === 4) return [0, 8, 16, 24].map((i) => Number.parseInt(ones.slice(i, i + 8), 2)).join('.');
  return Array.from({ length: 8 }, (_, g) => Number.parseInt(ones.slice(g * 16, g * 16 + 16), 2).toString(16)).join(':');
}

/** conntrack-tools' per-protocol check of the expectation commands (its EXP_* rows of tcp_commands_v_options). */
function checkExpectPorts(args: CtArgs, protoGiven: Set<string>): void {
  const row = PORT_LEGAL_EXPECT[args.command];
  if (row === undefined || args.protocol === undefined || !PORT_PROTOCOL_NUMBERS.has(args.protocol.number)) return;
  PORT_OPTION_ORDER.forEach(([name, key], bit) => {
    if (!protoGiven.has(key)) {
      if (row[bit] === '1') throw new CtParameterError(`You need to supply the \`--${name}' option for this command`);
    } else if (row[bit] === '0') {
      throw new CtParameterError(`Illegal option \`--${name}' with this command`);
    }
  });
}

function checkLegal(args: CtArgs, given: Set<OptionName>, protoGiven: Set<string>): void {
  const table = args.table === 'expect' ? LEGAL_EXPECT[args.command] ?? LEGAL[args.command] : LEGAL[args.command];
  const row = table ?? '';
  let pair = false;
  OPTION_NAMES.forEach((name, bit) => {
    const rule = row[bit];
    if (!given.has(name)) {
      if (rule === '1') throw new CtParameterError(`You need to supply the \`--${name}' option for this command`);
    } else if (rule === '0' || rule === undefined) {
      throw new CtParameterError(`Illegal option \`--${name}' with this command`);
    }
    if (rule === '3') pair = true;
  });
  if (pair) {
    const orig = given.has('src') && given.has('dst');
    const reply = given.has('reply-src') && given.has('reply-dst');
    if (!orig && !reply) {
      const partialReply = !given.has('src') && !given.has('dst') && (given.has('reply-src') || given.has('reply-dst'));
      throw new CtParameterError(partialReply ? "you have to specify `--reply-src' and `--reply-dst'" : "you have to specify `--src' and `--dst'");
    }
  }
  if (args.table === 'expect') {
    checkExpectPorts(args, protoGiven);
    return;
  }
  for (const name of EXPECT_ONLY_PORT_OPTIONS) {
    if (protoGiven.has(name)) throw new CtParameterError(`Illegal option \`--${name}' with this command`);
  }
  if (args.command !== 'create' && args.command !== 'get' && args.command !== 'add') return;
  const proto = args.protocol?.number;
  if (proto === 6 && args.command !== 'get' && !protoGiven.has('state')) {
    throw new CtParameterError("You need to supply the `--state' option for this command");
  }
  if (proto !== undefined && [6, 17, 136, 132, 33].includes(proto)) {
    const orig = protoGiven.has('sport') && protoGiven.has('dport');
    const reply = protoGiven.has('reply-sport') && protoGiven.has('reply-dport');
    if (!orig && !reply) {
      const partialReply = !protoGiven.has('sport') && !protoGiven.has('dport') && (protoGiven.has('reply-sport') || protoGiven.has('reply-dport'));
      throw new CtParameterError(partialReply ? "you have to specify `--reply-port-src' and `--reply-port-dst'" : "you have to specify `--sport' and `--dport'");
    }
  }
  if (proto === 1 || proto === 58) {
    const p = proto === 1 ? 'icmp' : 'icmpv6';
    if (!protoGiven.has('icmp-type')) throw new CtParameterError(`You need to supply the \`--${p}-type' option for this command`);
    if (!protoGiven.has('icmp-code')) throw new CtParameterError(`You need to supply the \`--${p}-code' option for this command`);
  }
}
