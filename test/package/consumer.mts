// The TypeScript consumer, type-checked (tsc --noEmit) against the types the package ships.
import { Conntrack, ConntrackError, kernelDefaults, type ConntrackEntry, type ConntrackErrorCode, type Count } from 'conntrack';

export async function firstEntries(netns: string, limit: number): Promise<ConntrackEntry[]> {
  const found: ConntrackEntry[] = [];
  await using ct = await Conntrack.open({ netns });
  const count: Count = await ct.count();
  for await (const entry of ct.entries({ protocol: 'tcp' })) {
    found.push(entry);
    if (found.length >= Math.min(limit, count.entries)) break;
  }
  return found;
}

export function isMissingAddon(err: unknown): boolean {
  const code: ConntrackErrorCode = 'ERR_CONNTRACK_NATIVE';
  return err instanceof ConntrackError && err.code === code;
}

export const defaults: number = kernelDefaults({ kernelRelease: '6.1.0', memoryBytes: 2 ** 33 }).max;

// The shipped types are real, not `any`: each line below must be a type error.
// @ts-expect-error count() takes no argument
void Conntrack.prototype.count.call(undefined as unknown as Conntrack, 1);
// @ts-expect-error no such error code
export const wrong: ConntrackErrorCode = 'ERR_CONNTRACK_NOPE';
