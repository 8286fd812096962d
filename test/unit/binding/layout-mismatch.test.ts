/**
 * An addon built from other sources (a stale build/ after a pull, a prebuild of another version)
 * may number the record layout differently from the constants compiled into the TypeScript:
 * decoding must then refuse with a clear, typed error instead of misreading records. Its own file,
 * since the module remembers an unknown constant for the rest of the process.
 */
import { describe, expect, it } from 'vitest';

import { checkLayout, layoutConstant, layoutProblem } from '../../../lib/binding/layout.js';
import { binding } from '../../../lib/binding/native.js';
import { decodeBatch } from '../../../lib/table/records.js';

describe('an addon whose layout differs from the compiled-in one', () => {
  it('is named by the first constant that differs', () => {
    const exported = structuredClone(binding().layout) as unknown as Record<string, Record<string, number>>;
    expect(layoutProblem(exported)).toBeUndefined();
    (exported.slot as Record<string, number>).id = 63;
    expect(layoutProblem(exported)).toMatch(/built from other sources.*slot\.id: 63 in the addon, \d+ here.*npm run build:native/);
    delete (exported.slot as Record<string, number>).id;
    expect(layoutProblem(exported)).toMatch(/slot\.id: undefined in the addon/);
  });

  it('decodes nothing after a constant the layout lacks was read, and says to rebuild', () => {
    expect(layoutConstant('slot', 'notInTheAddon' as 'id')).toBe(0);
    const batch = binding().decode(new Uint8Array(0), null);
    expect(() => decodeBatch(batch)).toThrow(expect.objectContaining({
      code: 'ERR_CONNTRACK_UNAVAILABLE',
      message: expect.stringMatching(/record layout has no slot\.notInTheAddon.*npm run build:native/),
    }));
    expect(() => checkLayout()).toThrow(/notInTheAddon/);
  });
});
