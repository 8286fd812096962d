/**
 * conntrack-tools' view of the expectation table (`conntrack -L expect -o xml`). `conntrack -L`
 * never prints an entry's master tuple; the expectation listing is where the tool shows it, so a
 * test reads the expectation (with its master) before the expected connection arrives, and then
 * checks the new entry's master against it.
 */
import type { Netns } from './netns.js';
import { requireTool } from './tools.js';

export interface OracleTuplePart {
  src: string;
  dst: string;
  protocolNumber: number;
  sport: number | undefined;
  dport: number | undefined;
}

export interface OracleExpectation {
  expected: OracleTuplePart;
  mask: OracleTuplePart;
  master: OracleTuplePart;
  helper: string | undefined;
  timeout: number | undefined;
}

function tag(text: string, name: string): string | undefined {
  return new RegExp(`<${name}>([^<]*)</${name}>`).exec(text)?.[1];
}

function part(layer3: string, layer4: string, protocolNumber: number, which: string): OracleTuplePart {
  const l3 = new RegExp(`<${which}>(.*?)</${which}>`, 's').exec(layer3)?.[1] ?? '';
  const l4 = new RegExp(`<${which}>(.*?)</${which}>`, 's').exec(layer4)?.[1] ?? '';
  const port = (name: string) => {
    const value = tag(l4, name);
    return value === undefined ? undefined : Number(value);
  };
  return { src: tag(l3, 'src') ?? '', dst: tag(l3, 'dst') ?? '', protocolNumber, sport: port('sport'), dport: port('dport') };
}

/** Parses `conntrack -L expect -o xml` output. */
export function parseExpectXml(text: string): OracleExpectation[] {
  const out: OracleExpectation[] = [];
  for (const flow of text.matchAll(/<flow>(.*?)<\/flow>/gs)) {
    const body = flow[1] ?? '';
    const layer3 = /<layer3 [^>]*>(.*?)<\/layer3>/s.exec(body)?.[1] ?? '';
    const layer4Match = /<layer4 protonum="(\d+)"[^>]*>(.*?)<\/layer4>/s.exec(body);
    const protocolNumber = Number(layer4Match?.[1] ?? Number.NaN);
    const layer4 = layer4Match?.[2] ?? '';
    const meta = /<meta>(.*?)<\/meta>/s.exec(body)?.[1] ?? '';
    const timeout = tag(meta, 'timeout');
    out.push({
      expected: part(layer3, layer4, protocolNumber, 'expected'),
      mask: part(layer3, layer4, protocolNumber, 'mask'),
      master: part(layer3, layer4, protocolNumber, 'master'),
      helper: tag(meta, 'helper-name'),
      timeout: timeout === undefined ? undefined : Number(timeout),
    });
  }
  return out;
}

/** The namespace's expectations as conntrack-tools shows them; checks the printed count. */
export async function oracleExpectations(ns: Netns): Promise<OracleExpectation[]> {
  const { stdout, stderr } = await ns.exec(requireTool('conntrack'), ['-L', 'expect', '-o', 'xml']);
  const list = parseExpectXml(stdout);
  const shown = /(\d+) expectations have been shown/.exec(stderr)?.[1];
  if (shown !== undefined && Number(shown) !== list.length) {
    throw new Error(`expect oracle: conntrack printed ${shown} expectations, parsed ${list.length}`);
  }
  return list;
}
