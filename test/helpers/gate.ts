/**
 * Decides whether integration tests can run on this machine, and says why not when they cannot.
 * In CI a missing prerequisite is a failure, never a silent skip.
 */
import { accessSync, constants, readFileSync } from 'node:fs';
import { describe, it } from 'vitest';
import { findTool, PACKAGE_OF, REQUIRED_TOOLS } from './tools.js';

export { findTool, requireTool, REQUIRED_TOOLS } from './tools.js';

export type GateResult = { ok: true } | { ok: false; reason: string };

/** Capability bit numbers (include/uapi/linux/capability.h). */
const CAP_NET_ADMIN = 12;
const CAP_SYS_ADMIN = 21;

/** The effective capability set of this process, from /proc/self/status. */
export function effectiveCapabilities(statusText = readFileSync('/proc/self/status', 'utf8')): bigint {
  const match = /^CapEff:\s*([0-9a-fA-F]+)$/m.exec(statusText);
  return match?.[1] === undefined ? 0n : BigInt(`0x${match[1]}`);
}

function hasCapability(caps: bigint, bit: number): boolean {
  return (caps & (1n << BigInt(bit))) !== 0n;
}

/**
 * Every prerequisite of the integration tests, checked in the order a person would fix them.
 * `extraTools` names tools a particular test file needs beyond REQUIRED_TOOLS.
 */
export function integrationGate(extraTools: readonly string[] = []): GateResult {
  if (process.platform !== 'linux') {
    return { ok: false, reason: `integration tests need Linux (this is ${process.platform})` };
  }
  // uid 0 is not enough (capabilities can be dropped) and not required (capabilities suffice):
  // what ctnetlink and setns check is the effective set.
  const caps = effectiveCapabilities();
  const missingCaps = [
    hasCapability(caps, CAP_NET_ADMIN) ? undefined : 'CAP_NET_ADMIN',
    hasCapability(caps, CAP_SYS_ADMIN) ? undefined : 'CAP_SYS_ADMIN',
  ].filter((c): c is string => c !== undefined);
  if (missingCaps.length > 0) {
    const uid = process.getuid?.() ?? -1;
    const missing = missingCaps.join(' + ');
    return {
      ok: false,
      reason: uid === 0
        ? `integration tests need ${missing}, which this root process lacks (capabilities dropped: ` +
          'a container without --cap-add NET_ADMIN --cap-add SYS_ADMIN, or setpriv/capsh)'
        : `integration tests need root (or ${missing}); running as uid ${uid}: ` +
          'run them as root, e.g. sudo npx vitest run --project integration',
    };
  }
  const missingTools = [...REQUIRED_TOOLS, ...extraTools].filter((tool) => findTool(tool) === undefined);
  if (missingTools.length > 0) {
    const packages = [...new Set(missingTools.map((tool) => PACKAGE_OF[tool] ?? tool))];
    return {
      ok: false,
      reason: `missing tools: ${missingTools.join(', ')} (apt-get install ${packages.join(' ')}, ` +
        `or run scripts/test-all.sh, which installs them)`,
    };
  }
  try {
    accessSync('/proc/sys/net/netfilter/nf_conntrack_max', constants.R_OK);
  } catch {
    return {
      ok: false,
      reason: 'the kernel has no connection tracking (/proc/sys/net/netfilter/nf_conntrack_max is ' +
        'missing): load it with `modprobe nf_conntrack` or use a kernel with CONFIG_NF_CONNTRACK',
    };
  }
  return { ok: true };
}

/**
 * Whether this run is CI. CI services set CI to "true", "1", "yes" or their own name; any value
 * but empty, "false" or "0" counts, so a runner that spells it differently still fails instead of
 * skipping.
 */
export function isCI(env: Readonly<Record<string, string | undefined>> = process.env): boolean {
  const value = env.CI;
  if (value === undefined) return false;
  const normalized = value.trim().toLowerCase();
  return normalized !== '' && normalized !== 'false' && normalized !== '0';
}

const warned = new Set<string>();

export interface DescribeIntegrationOptions {
  /** Tools this file needs beyond ip, nft and conntrack. */
  tools?: readonly string[];
}

/**
 * `describe` for tests that need the real kernel. When the gate fails: in CI (see isCI) a test that
 * fails with the reason is registered, so a misconfigured runner cannot pass by skipping; elsewhere
 * the suite is skipped and the reason printed once, so a non-root developer sees why.
 */
export function describeIntegration(
  name: string,
  fn: () => void,
  options: DescribeIntegrationOptions = {},
): void {
  const gate = integrationGate(options.tools ?? []);
  if (gate.ok) {
    describe(name, fn);
    return;
  }
  if (isCI()) {
    describe(name, () => {
      it(`has what integration tests need (CI=${process.env.CI}, so this is a failure, not a skip)`, () => {
        throw new Error(`integration prerequisites missing: ${gate.reason}`);
      });
    });
    return;
  }
  if (!warned.has(gate.reason)) {
    warned.add(gate.reason);
    console.warn(`[integration] skipping: ${gate.reason}`);
  }
  describe.skip(name, fn);
}
