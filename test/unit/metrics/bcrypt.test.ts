/**
 * bcrypt against hashes made by independent implementations: `htpasswd -nbB` (apache2-utils, the
 * tool the exporter-toolkit documentation suggests) and python3-bcrypt (Debian 3.2.2), recorded
 * once with the commands below, and the published Blowfish constants.
 */
import { describe, expect, it } from 'vitest';
import { parseBcryptHash, verifyBcrypt } from '../../../lib/metrics/bcrypt.js';

/** `htpasswd -nbB -C 4 u PASSWORD` (apache2-utils 2.4.71): [password, hash]. */
const HTPASSWD: ReadonlyArray<readonly [string, string]> = [
  ['a', '$2y$04$3M1E85Q8f/4mJ0HPaX3mD.xjbN.1X0uLGAV74aAH5rlkKzY8leXhq'],
  ['admin:with:colons', '$2y$04$Qw67c63x/ZeHQIZC6AXo1uWhPahSoMuHuuEALylWf.FpgF4pKhBEu'],
  ['Zürich €', '$2y$04$aGpWYCV4epbehTmRFrANweCLoki3CLaEvs1qCEN61W/GN84FbAyhq'],
];

/** python3-bcrypt: `bcrypt.hashpw(bytes.fromhex(HEX), bcrypt.gensalt(rounds=COST, prefix=b'2b' or b'2a'))`. */
const PYTHON_BCRYPT: ReadonlyArray<readonly [string, string]> = [
  ['', '$2b$04$edoB7WQYVfsHic.ykmFUGO2gPkiNDYkCJMNbrDXRUrQDktXhkbCF.'],
  ['636f727265637420686f727365206261747465727920737461706c65', '$2b$05$iAByDPWAOMPZ.v7l1E1.wOIJzeWH0nOpLSSekeS3KgwPoJeXikSC2'],
  ['70c3a4737377c3b6726420e29c93', '$2a$04$UnmZz2nDIwiN.ixqNat.qeQ5GxgjAGtpL6Vj4OTx39wjWR7ishVrW'],
  ['78'.repeat(72), '$2b$04$A78ox7ntBAOuqCTWQdz4HOmLc81MUmBF0K8oVRrEqbRZuLQENahym'],
  ['79'.repeat(100), '$2b$04$1HDkiMDxXpTLOWHSMzp6ZunXSS0WrdEpJ7Me4/Jr8x/86MGazjdKi'],
  ['fffe2062696e617279', '$2a$06$LStuWv4ch0dWW2tFlXfC/ORZLlMacV99eCGhX8TWuksK6RlWgn9om'],
];

describe('verifyBcrypt', () => {
  it('accepts the passwords htpasswd -B hashed ($2y$), and refuses near misses', async () => {
    for (const [password, hash] of HTPASSWD) {
      expect(await verifyBcrypt(password, hash), password).toBe(true);
      expect(await verifyBcrypt(`${password}x`, hash), `${password}x`).toBe(false);
      expect(await verifyBcrypt(password.slice(0, -1), hash), 'one character short').toBe(false);
    }
  });

  it('accepts the passwords python3-bcrypt hashed ($2a$, $2b$; empty, binary, 72 bytes, longer)', async () => {
    for (const [hex, hash] of PYTHON_BCRYPT) {
      const password = Buffer.from(hex, 'hex');
      expect(await verifyBcrypt(password, hash), hex).toBe(true);
      expect(await verifyBcrypt(Buffer.concat([Buffer.from('!'), password]), hash), `!${hex}`).toBe(false);
    }
  });

  it('ignores bytes past the 72nd, as bcrypt does, but not before', async () => {
    const [, hash] = PYTHON_BCRYPT[4] as readonly [string, string];
    expect(await verifyBcrypt('y'.repeat(72), hash)).toBe(true);
    expect(await verifyBcrypt(`${'y'.repeat(72)}anything`, hash)).toBe(true);
    expect(await verifyBcrypt('y'.repeat(71), hash)).toBe(false);
  });

  it('never matches what is not a bcrypt hash it can check', async () => {
    for (const bad of ['', 'plain', '$2x$04$3M1E85Q8f/4mJ0HPaX3mD.xjbN.1X0uLGAV74aAH5rlkKzY8leXhq', '$2y$03$3M1E85Q8f/4mJ0HPaX3mD.xjbN.1X0uLGAV74aAH5rlkKzY8leXhq',
      '$2y$04$3M1E85Q8f/4mJ0HPaX3mD.xjbN.1X0uLGAV74aAH5rlkKzY8leXh', '{SHA}hash', '$apr1$salt$hash']) {
      expect(parseBcryptHash(bad), bad).toBeUndefined();
    }
    expect(await verifyBcrypt('a', 'plain')).toBe(false);
  });

  it('keeps the event loop turning while it works', async () => {
    const [, hash] = PYTHON_BCRYPT[1] as readonly [string, string];
    let turns = 0;
    let running = true;
    const spin = () => {
      turns++;
      if (running) setImmediate(spin);
    };
    setImmediate(spin);
    try {
      // Cost 5 is 32 expansions: two slices, and the loop turns between them.
      expect(await verifyBcrypt(Buffer.from(PYTHON_BCRYPT[1]?.[0] ?? '', 'hex'), hash)).toBe(true);
    } finally {
      running = false;
    }
    expect(turns).toBeGreaterThan(0); // done in one go, it would resolve before any setImmediate ran
  });
});
