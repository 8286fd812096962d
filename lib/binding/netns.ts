/** The netns option shared by every API: a namespace file path or a pid. */
import { isAbsolute, normalize } from 'node:path';

import { invalidArgument } from '../base/errors.js';
import type { NetnsSpec } from '../base/types.js';

/** Turns a NetnsSpec into the path of a namespace file, validating it. */
export function netnsPath(spec: NetnsSpec): string {
  if (typeof spec === 'number') {
    if (!Number.isSafeInteger(spec) || spec < 1) throw invalidArgument(`netns pid must be a positive integer, got ${spec}`);
    return `/proc/${spec}/ns/net`;
  }
  if (typeof spec !== 'string' || spec.length === 0 || spec.includes('\0') || !isAbsolute(spec) || normalize(spec) !== spec) {
    throw invalidArgument(`netns must be an absolute, normalised path such as /run/netns/NAME or /proc/PID/ns/net, or a pid; got ${JSON.stringify(spec)}`);
  }
  return spec;
}
