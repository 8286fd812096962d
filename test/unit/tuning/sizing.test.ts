import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { sizeCommand } from '../../../lib/cli/tuning.js';
import { ConntrackError } from '../../../lib/base/errors.js';
import {
  DEFAULT_OBJECT_SIZE,
  INT_MAX,
  MAX_BUCKETS,
  kernelDefaults,
  memoryCost,
  parseKernelRelease,
  parseSlabObjectSize,
  readSlabObjectSize,
  recommend,
} from '../../../lib/tuning/sizing.js';
import { runCommand } from '../../helpers/cli.js';

const KiB = 1024;
const MiB = 1024 * KiB;
const GiB = 1024 * MiB;

/*
 * Source lines the expectations come from (net/netfilter/nf_conntrack_core.c, nf_conntrack_init_start):
 *   5.15+ (d532bcd0b269):
 *     nf_conntrack_htable_size = (((nr_pages << PAGE_SHIFT) / 16384) / sizeof(struct hlist_head));
 *     if (BITS_PER_LONG >= 64 && nr_pages > (4 * (1024 * 1024 * 1024 / PAGE_SIZE))) size = 262144;
 *     else if (nr_pages > (1024 * 1024 * 1024 / PAGE_SIZE)) size = 65536;
 *     if (size < 1024) size = 1024;  max_factor = 1;
 *   4.0 .. 5.14 (Marcelo Leitner, 2014-12-23):
 *     if (nr_pages > 4 GiB worth) size = 65536; else if (> 1 GiB) size = 16384; if (size < 32) size = 32; max_factor = 4;
 *   < 4.0: only "> 1 GiB -> 16384", floor 32, max_factor 4.
 *   hashsize given: max_factor stays 8.
 *   nf_ct_alloc_hashtable: *sizep = roundup(*sizep, PAGE_SIZE / sizeof(struct hlist_nulls_head));
 *   4.7+: nf_conntrack_max = max_factor * nf_conntrack_htable_size after that allocation.
 *   nf_conntrack_expect_init: hsize = htable_size / 256 (at least 1); nf_ct_expect_max = hsize * 4.
 */
const cases: Array<{
  label: string;
  kernelRelease: string;
  memoryBytes: number;
  hashsizeParam?: number;
  pointerSize?: 8 | 4;
  buckets: number;
  max: number;
  expectMax: number;
  rule: RegExp;
}> = [
  {
    label: 'this machine: 6.18, 24 GiB MemTotal (KERNEL-NOTES: 262144 / 262144, expect_max 4096)',
    kernelRelease: '6.18.44-fc-v782', memoryBytes: 24683620 * KiB,
    buckets: 262144, max: 262144, expectMax: 4096, rule: /RAM > 4 GiB on a 64-bit kernel: 262144/,
  },
  {
    label: '5.15, exactly 4 GiB is not "> 4 GiB": 65536',
    kernelRelease: '5.15.0-91-generic', memoryBytes: 4 * GiB,
    buckets: 65536, max: 65536, expectMax: 1024, rule: /RAM > 1 GiB: 65536/,
  },
  {
    label: '5.15, one page over 4 GiB: 262144',
    kernelRelease: '5.15.0', memoryBytes: 4 * GiB + 4096,
    buckets: 262144, max: 262144, expectMax: 4096, rule: /262144/,
  },
  {
    label: '6.1 32-bit, 8 GiB: the 262144 rule needs BITS_PER_LONG >= 64',
    kernelRelease: '6.1.0', memoryBytes: 8 * GiB, pointerSize: 4,
    buckets: 65536, max: 65536, expectMax: 1024, rule: /RAM > 1 GiB: 65536/,
  },
  {
    label: '6.1, 512 MiB: 512 MiB / 16384 / 8 = 4096',
    kernelRelease: '6.1.0', memoryBytes: 512 * MiB,
    buckets: 4096, max: 4096, expectMax: 64, rule: /RAM \/ 16384 \/ 8/,
  },
  {
    label: '6.1, exactly 1 GiB: proportional 8192 (not "> 1 GiB")',
    kernelRelease: '6.1.0', memoryBytes: GiB,
    buckets: 8192, max: 8192, expectMax: 128, rule: /RAM \/ 16384 \/ 8/,
  },
  {
    label: '6.1, 64 MiB: 512 is below the 1024 floor',
    kernelRelease: '6.1.0', memoryBytes: 64 * MiB,
    buckets: 1024, max: 1024, expectMax: 16, rule: /below the floor: 1024/,
  },
  {
    label: '6.1, 1000 MiB: 8000 rounded up to whole pages (8192), max follows the rounded size',
    kernelRelease: '6.1.0', memoryBytes: 1000 * MiB,
    buckets: 8192, max: 8192, expectMax: 128, rule: /rounds 8000 up to 8192/,
  },
  {
    label: '5.10, 16 GiB: 65536 buckets, max 4 x 65536',
    kernelRelease: '5.10.0-28-amd64', memoryBytes: 16 * GiB,
    buckets: 65536, max: 262144, expectMax: 1024, rule: /4\.0 \.\. 5\.14\): RAM > 4 GiB: 65536/,
  },
  {
    label: '5.4, 2 GiB: 16384 buckets, max 65536',
    kernelRelease: '5.4.0-150-generic', memoryBytes: 2 * GiB,
    buckets: 16384, max: 65536, expectMax: 256, rule: /RAM > 1 GiB: 16384/,
  },
  {
    label: '4.19, exactly 4 GiB: 16384 buckets',
    kernelRelease: '4.19.0', memoryBytes: 4 * GiB,
    buckets: 16384, max: 65536, expectMax: 256, rule: /RAM > 1 GiB: 16384/,
  },
  {
    label: '4.19, 512 MiB: 4096 buckets, max 16384',
    kernelRelease: '4.19.0', memoryBytes: 512 * MiB,
    buckets: 4096, max: 16384, expectMax: 64, rule: /RAM \/ 16384 \/ 8/,
  },
  {
    label: '4.19 32-bit, 256 MiB: 256 MiB / 16384 / 4 = 4096',
    kernelRelease: '4.19.0', memoryBytes: 256 * MiB, pointerSize: 4,
    buckets: 4096, max: 16384, expectMax: 64, rule: /RAM \/ 16384 \/ 4/,
  },
  {
    label: '4.19 32-bit, 8 GiB: before 5.15 the 4 GiB rule has no word-size check',
    kernelRelease: '4.19.0', memoryBytes: 8 * GiB, pointerSize: 4,
    buckets: 65536, max: 262144, expectMax: 1024, rule: /RAM > 4 GiB: 65536/,
  },
  {
    label: '3.10, 8 GiB: before 4.0 the cap is 16384',
    kernelRelease: '3.10.0-1160.el7.x86_64', memoryBytes: 8 * GiB,
    buckets: 16384, max: 65536, expectMax: 256, rule: /< 4\.0\): RAM > 1 GiB: 16384/,
  },
  {
    label: '3.10, 1000 MiB: table rounded to 8192 but max from the unrounded 8000 (per-netns allocation before 4.7)',
    kernelRelease: '3.10.0', memoryBytes: 1000 * MiB,
    buckets: 8192, max: 32000, expectMax: 124, rule: /unrounded/,
  },
  {
    label: '6.18, hashsize=100000 given: rounded to 100352, max 8 x buckets',
    kernelRelease: '6.18.0', memoryBytes: 24 * GiB, hashsizeParam: 100000,
    buckets: 100352, max: 802816, expectMax: 1568, rule: /hashsize=100000 given/,
  },
  {
    label: '4.19, hashsize=16384 given: max 8 x 16384',
    kernelRelease: '4.19.0', memoryBytes: 2 * GiB, hashsizeParam: 16384,
    buckets: 16384, max: 131072, expectMax: 256, rule: /8 x buckets/,
  },
];

describe('kernelDefaults', () => {
  it.each(cases)('$label', ({ kernelRelease, memoryBytes, hashsizeParam, pointerSize, buckets, max, expectMax, rule }) => {
    const result = kernelDefaults({
      kernelRelease,
      memoryBytes,
      ...(hashsizeParam === undefined ? {} : { hashsizeParam }),
      ...(pointerSize === undefined ? {} : { pointerSize }),
    });
    expect(result.buckets).toBe(buckets);
    expect(result.max).toBe(max);
    expect(result.expectMax).toBe(expectMax);
    expect(result.rule).toMatch(rule);
  });

  it('names the kernel version in the rule', () => {
    expect(kernelDefaults({ kernelRelease: '5.4.0-150-generic', memoryBytes: 2 * GiB }).rule).toContain('Linux 5.4');
  });

  it('treats hashsize 0 as "not given"', () => {
    expect(kernelDefaults({ kernelRelease: '6.1.0', memoryBytes: 8 * GiB, hashsizeParam: 0 }).max).toBe(262144);
  });

  it('rounds to the page granule of larger pages', () => {
    // 16 KiB pages: PAGE_SIZE / 8 = 2048 buckets per page.
    const result = kernelDefaults({ kernelRelease: '6.1.0', memoryBytes: 24 * GiB, hashsizeParam: 3000, pageSize: 16384 });
    expect(result.buckets).toBe(4096);
  });

  it.each([
    ['not a release', 'linux'],
    ['empty', ''],
    ['missing minor', '6'],
  ])('rejects a kernel release that is %s', (_label, kernelRelease) => {
    expect(() => kernelDefaults({ kernelRelease, memoryBytes: GiB })).toThrow(ConntrackError);
  });

  it.each([0, -1, 1.5, Number.NaN, Number.POSITIVE_INFINITY])('rejects memoryBytes %s', (memoryBytes) => {
    expect(() => kernelDefaults({ kernelRelease: '6.1.0', memoryBytes })).toThrow(/memoryBytes/);
  });

  it('rejects a hashsize the kernel cannot allocate', () => {
    expect(() => kernelDefaults({ kernelRelease: '6.1.0', memoryBytes: GiB, hashsizeParam: MAX_BUCKETS + 1 })).toThrow(/hashsizeParam/);
  });
});

describe('parseKernelRelease', () => {
  it.each([
    ['6.18.44-fc-v782', { major: 6, minor: 18, patch: 44 }],
    ['5.4.0-150-generic', { major: 5, minor: 4, patch: 0 }],
    ['4.19.0', { major: 4, minor: 19, patch: 0 }],
    ['6.8', { major: 6, minor: 8, patch: 0 }],
    ['6.12.0+rpt-rpi-v8', { major: 6, minor: 12, patch: 0 }],
  ])('%s', (release, expected) => {
    expect(parseKernelRelease(release)).toEqual(expected);
  });
});

describe('memoryCost', () => {
  it('1,048,576 entries of 320 bytes are 320 MiB, plus 8 bytes per bucket', () => {
    const cost = memoryCost({ max: 1_048_576, buckets: 1_048_576, objectSize: 320 });
    expect(cost.entriesBytes).toBe(320 * MiB);
    expect(cost.bucketsBytes).toBe(8 * MiB);
    expect(cost.totalBytes).toBe(328 * MiB);
    expect(cost.perEntryBytes).toBe(320);
  });

  it('defaults to the documented object size', () => {
    const cost = memoryCost({ max: 262144, buckets: 262144 });
    expect(cost.perEntryBytes).toBe(DEFAULT_OBJECT_SIZE);
    expect(cost.entriesBytes).toBe(64 * MiB);
    expect(cost.bucketsBytes).toBe(2 * MiB);
  });

  it.each([
    { max: -1, buckets: 1024 },
    { max: 1.5, buckets: 1024 },
    { max: INT_MAX + 1, buckets: 1024 },
    { max: 1024, buckets: 0 },
    { max: 1024, buckets: 1024, objectSize: 8 },
  ])('rejects %o', (input) => {
    expect(() => memoryCost(input)).toThrow(expect.objectContaining({ code: 'ERR_CONNTRACK_INVALID_ARGUMENT' }));
  });
});

describe('slab object size', () => {
  const slabinfo = [
    'slabinfo - version: 2.1',
    '# name            <active_objs> <num_objs> <objsize> <objperslab> <pagesperslab> : tunables <limit> <batchcount> <sharedfactor> : slabdata <active_slabs> <num_slabs> <sharedavail>',
    'nf_conntrack_expect      0      0    208   19    1 : tunables    0    0    0 : slabdata      0      0      0',
    'nf_conntrack           512    512    320   25    2 : tunables    0    0    0 : slabdata     20     20      0',
  ].join('\n');

  it('reads the objsize column of the nf_conntrack line, not nf_conntrack_expect', () => {
    expect(parseSlabObjectSize(slabinfo)).toBe(320);
  });

  it('is undefined without an nf_conntrack cache', () => {
    expect(parseSlabObjectSize('slabinfo - version: 2.1\nkmalloc-256 1 1 256 16 1\n')).toBeUndefined();
  });

  it('reads a file, and is undefined when it cannot', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'ct-slab-'));
    try {
      await writeFile(join(dir, 'slabinfo'), slabinfo);
      expect(await readSlabObjectSize(join(dir, 'slabinfo'))).toBe(320);
      expect(await readSlabObjectSize(join(dir, 'missing'))).toBeUndefined();
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe('recommend', () => {
  it('sizes 100,000 connections with the default headroom of 2', () => {
    const result = recommend({ connections: 100_000, objectSize: 256 });
    // 200,000 rounded up to a multiple of 1024; buckets = max (already a multiple of 512).
    expect(result.max).toBe(200_704);
    expect(result.buckets).toBe(200_704);
    expect(result.averageChainLength).toBe(2);
    expect(result.memory.entriesBytes).toBe(200_704 * 256);
    expect(result.sysctl).toEqual({
      'net.netfilter.nf_conntrack_max': 200_704,
      'net.netfilter.nf_conntrack_buckets': 200_704,
    });
    expect(result.commands).toEqual([
      'echo 200704 > /sys/module/nf_conntrack/parameters/hashsize',
      'sysctl -w net.netfilter.nf_conntrack_max=200704',
    ]);
  });

  it('reaches 1,048,576 entries at 320 bytes: about 320 MiB', () => {
    const result = recommend({ connections: 524_288, headroom: 2, objectSize: 320 });
    expect(result.max).toBe(1_048_576);
    expect(result.memory.entriesBytes).toBe(320 * MiB);
    expect(result.memory.totalBytes).toBe(328 * MiB);
    expect(result.reasons.join('\n')).toContain('320.0 MiB');
  });

  it('multiplies flows and headroom, and honours entries per bucket', () => {
    const result = recommend({ connections: 1000, flowsPerConnection: 2, headroom: 1.5, entriesPerBucket: 4 });
    expect(result.max).toBe(3072); // 3000 -> multiple of 1024
    expect(result.buckets).toBe(1024); // 768 -> multiple of 512
    expect(result.averageChainLength).toBe(6); // 2 x 3072 / 1024
  });

  it('never puts more than 8 entries per bucket', () => {
    expect(() => recommend({ connections: 1000, entriesPerBucket: 9 })).toThrow(/entriesPerBucket/);
  });

  it('compares with the kernel default and warns when the table is a large share of RAM', () => {
    const result = recommend({ connections: 4_000_000, kernelRelease: '6.18.0', memoryBytes: 2 * GiB, objectSize: 256 });
    const text = result.reasons.join('\n');
    expect(text).toContain("This kernel's default would be nf_conntrack_max 65536");
    expect(text).toMatch(/Warning: a full table would use \d+ % of RAM/);
  });

  it('notes when the entry size is assumed', () => {
    expect(recommend({ connections: 10 }).reasons.join('\n')).toContain(`assumed ${DEFAULT_OBJECT_SIZE} B`);
  });

  it.each([
    ['non-integer connections', { connections: 1.5 }],
    ['zero connections', { connections: 0 }],
    ['negative connections', { connections: -5 }],
    ['NaN connections', { connections: Number.NaN }],
    ['string connections', { connections: '100' as unknown as number }],
    ['absurd connections', { connections: 2 ** 40 }],
    ['a product above INT_MAX', { connections: 2 ** 30, headroom: 4 }],
    ['headroom below 1', { connections: 10, headroom: 0.5 }],
    ['zero flows', { connections: 10, flowsPerConnection: 0 }],
    ['fractional flows', { connections: 10, flowsPerConnection: 1.5 }],
    ['a tiny object size', { connections: 10, objectSize: 1 }],
    ['a bad kernel release', { connections: 10, kernelRelease: 'x' }],
  ])('rejects %s', (_label, input) => {
    let caught: unknown;
    try {
      recommend(input);
    } catch (error) {
      caught = error;
    }
    expect(caught).toBeInstanceOf(ConntrackError);
    expect((caught as ConntrackError).code).toBe('ERR_CONNTRACK_INVALID_ARGUMENT');
    expect((caught as ConntrackError).message.length).toBeGreaterThan(20);
  });
});

describe('size command', () => {
  it('prints the recommendation as JSON', async () => {
    const { code, out } = await runCommand(sizeCommand, ['--connections', '524288', '--object-size', '320', '--json']);
    expect(code).toBe(0);
    const parsed = JSON.parse(out) as { recommendation: { max: number; buckets: number; memory: { entriesBytes: number } } };
    expect(parsed.recommendation.max).toBe(1_048_576);
    expect(parsed.recommendation.buckets).toBe(1_048_576);
    expect(parsed.recommendation.memory.entriesBytes).toBe(320 * MiB);
  });

  it('prints commands for people', async () => {
    const { code, out } = await runCommand(sizeCommand, ['--connections', '100000', '--object-size', '256']);
    expect(code).toBe(0);
    expect(out).toContain('nf_conntrack_max      200704');
    expect(out).toContain('  sysctl -w net.netfilter.nf_conntrack_max=200704');
    expect(out).toContain('conntrack persist --max 200704 --buckets 200704 --apply --root /');
  });

  it.each([
    [[]],
    [['--connections', 'many']],
    [['--connections', '10', '--bogus']],
    [['--connections', '10', 'extra']],
  ])('exits 2 with usage for %j', async (argv) => {
    const { code, err } = await runCommand(sizeCommand, argv);
    expect(code).toBe(2);
    expect(err).toContain('usage: conntrack size');
  });

  it('exits 1 when the arguments are well-formed but invalid', async () => {
    const { code, err } = await runCommand(sizeCommand, ['--connections', '10', '--headroom', '0.5']);
    expect(code).toBe(1);
    expect(err).toContain('headroom must be a number from 1 to 16');
  });
});
