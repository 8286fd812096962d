/**
 * Whether this run loads the addon built with ASan and UBSan (scripts/test-asan.sh sets
 * CONNTRACK_SANITIZERS=1). Tests that repeat one operation hundreds of times to catch a leak or a
 * rare race run fewer rounds there: every path is still taken, under instrumentation that makes
 * each round several times slower, and leaks are measured on the plain build.
 */
export const UNDER_SANITIZERS = process.env.CONNTRACK_SANITIZERS === '1';

/** `plain` rounds on the plain build, `sanitized` under the sanitizers. */
export function rounds(plain: number, sanitized: number): number {
  return UNDER_SANITIZERS ? sanitized : plain;
}
