/**
 * The record layout, read from the addon once, when this module loads (native/record_layout.h
 * exports it as `layout`). lib/table/records.ts and summary.ts take every slot, sub-offset, bit,
 * shift and enum value from here into module-level constants, so native code can renumber one
 * without JS misreading records, and decoding pays nothing per entry for it.
 */
import { ConntrackError } from '../base/errors.js';
import { binding, type NativeLayout } from './native.js';

function load(): NativeLayout | undefined {
  try {
    return binding().layout;
  } catch {
    return undefined; // no addon: no batch can arrive either; checkLayout() says so if one does
  }
}

const layout = load();
let problem: string | undefined = layout === undefined ? 'the native addon did not load' : undefined;

/** Every constant read so far, as "group.name" (a unit test checks each against the addon). */
export const layoutConstantsRead = new Set<string>();

/** One constant of the layout; a missing one (an addon built from other sources) fails checkLayout(). */
export function layoutConstant<G extends keyof NativeLayout>(group: G, name: keyof NativeLayout[G] & string): number {
  layoutConstantsRead.add(`${group}.${name}`);
  const value = (layout?.[group] as Record<string, unknown> | undefined)?.[name];
  if (typeof value === 'number') return value;
  problem ??= `the native addon's record layout has no ${group}.${name}: it was built from other sources; rebuild it with "npm run build:native"`;
  return 0;
}

/** Throws when the constants read could not all be taken from the addon. Called once per batch. */
export function checkLayout(): void {
  if (problem !== undefined) throw new ConntrackError('ERR_CONNTRACK_UNAVAILABLE', `conntrack: ${problem}`);
}
