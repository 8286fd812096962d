/**
 * The record layout: native/record_layout.h is its one source. The addon exports it as `layout`,
 * and scripts/gen-layout.mjs writes that export into layout.generated.ts, so lib/table/records.ts
 * and summary.ts take every slot, sub-offset, bit, shift and enum value into module constants at
 * load time without loading the addon. Before the first batch is decoded, checkLayout() compares
 * every constant read with the loaded addon's own, once: an addon built from other sources (a
 * stale build/ after a pull) is refused with a clear error instead of misread.
 */
import { ConntrackError } from '../base/errors.js';
import { RECORD_LAYOUT } from './layout.generated.js';
import { binding, type NativeLayout } from './native.js';

/** Every constant read so far, as "group.name" (checked against the addon before decoding). */
export const layoutConstantsRead = new Set<string>();
let unknownConstant: string | undefined;
let checked = false;

/** One constant of the layout. A name the layout lacks is remembered, and checkLayout() refuses. */
export function layoutConstant<G extends keyof NativeLayout>(group: G, name: keyof NativeLayout[G] & string): number {
  layoutConstantsRead.add(`${group}.${name}`);
  const value = (RECORD_LAYOUT[group] as Record<string, number> | undefined)?.[name];
  if (typeof value === 'number') return value;
  unknownConstant ??= `${group}.${name}`;
  return 0;
}

/** What is wrong between the constants read and an addon's layout export, or undefined. */
export function layoutProblem(exported: unknown): string | undefined {
  if (unknownConstant !== undefined) {
    return `the record layout has no ${unknownConstant}: rebuild the addon ("npm run build:native"), then run "npm run build:layout"`;
  }
  const groups = (exported ?? {}) as Record<string, Record<string, unknown> | undefined>;
  for (const name of layoutConstantsRead) {
    const [group, key] = name.split('.') as [keyof typeof RECORD_LAYOUT, string];
    const mine = (RECORD_LAYOUT[group] as Record<string, number>)[key];
    const theirs = groups[group]?.[key];
    if (theirs !== mine) {
      return `the native addon was built from other sources than this JavaScript (record layout ${name}: ` +
        `${String(theirs)} in the addon, ${mine} here); rebuild it with "npm run build:native"`;
    }
  }
  return undefined;
}

/** Throws ERR_CONNTRACK_UNAVAILABLE when the addon's layout differs from the one compiled in. */
export function checkLayout(): void {
  if (checked) return;
  const problem = layoutProblem(binding().layout);
  if (problem !== undefined) throw new ConntrackError('ERR_CONNTRACK_UNAVAILABLE', `conntrack: ${problem}`);
  checked = true;
}
