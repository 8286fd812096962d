/**
 * ct.text()'s renderer (lines written from records) against the entry renderer the CLI uses for
 * events and -G, on the recorded kernel dump: every layout gives the same lines. Both are held to
 * conntrack-tools' own output by test/integration/cli/ct-output.test.ts.
 */

import { describe, expect, it } from 'vitest';

import { binding } from '../../../lib/binding/native.js';
import { decodeBatch } from '../../../lib/table/records.js';
import { renderBatchText } from '../../../lib/table/text.js';
import { formatLine } from '../../../lib/cli/ct-format.js';
import { readCapture } from '../../helpers/captures.js';

const datagrams = readCapture('dump.bin');

describe('conntrack -L lines from records', () => {
  const now = 2_000_000_000;
  for (const layout of [{}, { extended: true }, { id: true }, { extended: true, id: true }]) {
    it(`match the entry renderer with ${JSON.stringify(layout)}`, () => {
      let lines = 0;
      for (const datagram of datagrams) {
        const batch = binding().decode(datagram, null);
        const chunk = renderBatchText(batch, layout, now);
        const expected = decodeBatch(batch).map((e) => formatLine(e, { layer3: layout.extended === true, id: layout.id === true, ktimestamp: false, labelNames: undefined }, now));
        expect(chunk.count).toBe(expected.length);
        expect(chunk.text.toString('latin1')).toBe(expected.map((l) => `${l}\n`).join(''));
        lines += expected.length;
      }
      expect(lines).toBeGreaterThan(5);
    });
  }
});
