/**
 * An addon built from other sources (a stale build or prebuild) may lack a constant the
 * TypeScript reads: decoding must then refuse with a clear, typed error instead of misreading
 * records. Its own file, since the module remembers the problem for the rest of the process.
 */
import { describe, expect, it } from 'vitest';

import { checkLayout, layoutConstant } from '../../../lib/binding/layout.js';
import { binding } from '../../../lib/binding/native.js';
import { decodeBatch } from '../../../lib/table/records.js';

describe('an addon whose layout lacks a constant', () => {
  it('decodes nothing and says to rebuild', () => {
    expect(() => checkLayout()).not.toThrow();
    expect(layoutConstant('slot', 'notInTheAddon' as 'id')).toBe(0);
    const batch = binding().decode(new Uint8Array(0), null);
    expect(() => decodeBatch(batch)).toThrow(expect.objectContaining({
      code: 'ERR_CONNTRACK_UNAVAILABLE',
      message: expect.stringMatching(/record layout has no slot\.notInTheAddon.*npm run build:native/),
    }));
  });
});
