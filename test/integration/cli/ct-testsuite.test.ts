/**
 * conntrack-tools' own command-line test cases (its tests/conntrack/testsuite: create, delete,
 * filter, zone), restated here: each sequence runs against conntrack-tools and against our
 * command, each in a fresh namespace, and every step must give the same OK (exit 0) or BAD
 * (non-zero) as the suite expects, with the same exit status as conntrack-tools.
 */
import { afterAll, beforeAll, expect, it } from 'vitest';
import { describeIntegration } from '../../helpers/gate.js';
import { BUILT_CLI } from '../../helpers/cli.js';
import { createNetns, destroyAllNetns, type Netns } from '../../helpers/netns.js';
import { requireTool } from '../../helpers/tools.js';

type Step = [what: string, args: string, expected: 'OK' | 'BAD'];

const ENTRY = '-s 1.1.1.1 -d 2.2.2.2 -p tcp --sport 10 --dport 20 --state LISTEN -u SEEN_REPLY -t 50';

/** The four sequences, in our words; each step depends on the ones before it. */
const SEQUENCES: Record<string, Step[]> = {
  create: [
    ['no destination address', '-I -s 1.1.1.1 -p tcp --sport 10 --dport 20 --state LISTEN -u SEEN_REPLY -t 50', 'BAD'],
    ['no source address', '-I -d 2.2.2.2 -p tcp --sport 10 --dport 20 --state LISTEN -u SEEN_REPLY -t 50', 'BAD'],
    ['no protocol', '-I -s 1.1.1.1 -d 2.2.2.2 --sport 10 --dport 20 --state LISTEN -u SEEN_REPLY -t 50', 'BAD'],
    ['no source port', '-I -s 1.1.1.1 -d 2.2.2.2 -p tcp --dport 20 --state LISTEN -u SEEN_REPLY -t 50', 'BAD'],
    ['no timeout', '-I -s 1.1.1.1 -d 2.2.2.2 -p tcp --sport 10 --dport 20 --state LISTEN -u SEEN_REPLY', 'BAD'],
    ['a complete entry', `-I ${ENTRY}`, 'OK'],
    ['the same entry again', `-I ${ENTRY}`, 'BAD'],
    ['delete it by its original tuple', '-D -s 1.1.1.1 -d 2.2.2.2 -p tcp --sport 10 --dport 20', 'OK'],
    ['an entry from its reply tuple alone', '-I -r 2.2.2.2 -q 1.1.1.1 -p tcp --reply-port-src 11 --reply-port-dst 21 --state LISTEN -u SEEN_REPLY -t 50', 'OK'],
    ['delete it by its reply tuple', '-D -r 2.2.2.2 -q 1.1.1.1 -p tcp --reply-port-src 11 --reply-port-dst 21', 'OK'],
  ],
  delete: [
    ['an entry to delete', `-I ${ENTRY}`, 'OK'],
    ['delete with a source it does not have', '-D -s 2.2.2.2 -p tcp --sport 10 --dport 20', 'BAD'],
    ['delete by source address only', '-D -s 1.1.1.1', 'OK'],
  ],
  filter: [
    ['an entry to find', `-I ${ENTRY}`, 'OK'],
    ['list by source', '-L -s 1.1.1.1', 'OK'],
    ['list by destination', '-L -d 2.2.2.2', 'OK'],
    ['list by protocol', '-L -p tcp', 'OK'],
    ['list by status', '-L -u SEEN_REPLY', 'OK'],
    ['list by TCP state (LISTEN)', '-L -p tcp --state LISTEN', 'OK'],
    ['set the mark of what has this source', '-U -s 1.1.1.1 -m 1', 'OK'],
    ['list by that mark', '-L -m 1', 'OK'],
    ['list by family', '-L -f ipv4', 'OK'],
    ['list by mark 0', '-L --mark 0', 'OK'],
    ['list by mark 0 with a full mask', '-L --mark 0/0xffffffff', 'OK'],
    ['delete by destination', '-D -d 2.2.2.2', 'OK'],
  ],
  zone: [
    ['an entry in zone 1', `-I ${ENTRY} --zone 1`, 'OK'],
    ['list zone 1', '-L --zone 1', 'OK'],
    ['list zone 0', '-L --zone 0', 'OK'],
    ['delete what zone 1 holds', '-D --zone 1', 'OK'],
  ],
};

async function status(ns: Netns, command: string, args: string[]): Promise<number | null> {
  const child = ns.spawn(command, args, { stdio: 'ignore' });
  return new Promise((resolve, reject) => {
    child.on('error', reject);
    child.on('close', (code) => resolve(code));
  });
}

describeIntegration("conntrack-tools' testsuite cases against our command", () => {
  const results: Record<string, Array<{ step: Step; theirs: number | null; ours: number | null }>> = {};

  beforeAll(async () => {
    const conntrack = requireTool('conntrack');
    for (const [name, steps] of Object.entries(SEQUENCES)) {
      const theirsNs = await createNetns(`suite-${name}-theirs`);
      const oursNs = await createNetns(`suite-${name}-ours`);
      results[name] = [];
      for (const step of steps) {
        const args = step[1].split(' ');
        const theirs = await status(theirsNs, conntrack, args);
        const ours = await status(oursNs, process.execPath, [BUILT_CLI, ...args]);
        results[name]?.push({ step, theirs, ours });
      }
    }
  }, 120_000);

  afterAll(async () => {
    await destroyAllNetns();
  });

  for (const [name, steps] of Object.entries(SEQUENCES)) {
    it(`${name}: ${steps.length} steps give the expected OK/BAD, with conntrack-tools' exit statuses`, () => {
      const rows = results[name] ?? [];
      expect(rows).toHaveLength(steps.length);
      const verdict = (code: number | null) => (code === 0 ? 'OK' : 'BAD');
      const table = rows.map(({ step, theirs, ours }) => ({ step: step[0], expected: step[2], theirs: verdict(theirs), ours: verdict(ours), theirsCode: theirs, oursCode: ours }));
      // conntrack-tools itself meets its suite here; ours must give the same verdicts and statuses.
      expect(table.map((r) => [r.step, r.theirs])).toEqual(table.map((r) => [r.step, r.expected]));
      expect(table.map((r) => [r.step, r.ours, r.oursCode])).toEqual(table.map((r) => [r.step, r.expected, r.theirsCode]));
    });
  }

  it('has all 29 cases of the four files', () => {
    expect(Object.values(SEQUENCES).flat()).toHaveLength(29);
  });
});
