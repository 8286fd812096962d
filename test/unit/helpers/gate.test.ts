/**
 * The CI switch of the integration gate: any CI service's spelling of "yes" must turn skips into
 * failures; only an absent, empty, "false" or "0" value lets a suite skip.
 */
import { describe, expect, it } from 'vitest';
import { isCI } from '../../helpers/gate.js';

describe('isCI', () => {
  it.each(['true', 'TRUE', '1', 'yes', 'Yes', 'woodpecker', ' true '])('CI=%j is CI', (value) => {
    expect(isCI({ CI: value })).toBe(true);
  });

  it.each([undefined, '', ' ', 'false', 'FALSE', '0'])('CI=%j is not CI', (value) => {
    expect(isCI({ CI: value })).toBe(false);
  });
});
