/**
 * bcrypt password checking for the exporter's basic authentication: the hashes of an
 * exporter-toolkit web configuration (`$2a$`, `$2b$`, `$2y$`, as `htpasswd -B` writes them), with
 * no dependency. bcrypt is Blowfish with an expensive key schedule (EksBlowfish, Provos and
 * Mazières 1999): the state starts from the hex digits of pi, which are computed here (Machin's
 * formula in BigInt, about 40 ms, once) instead of carried as a table of 1,042 constants.
 *
 * A check costs 2^cost key expansions (about 60 ms at cost 10 on this project's machine), so it
 * yields to the event loop every few expansions: scrapes and other requests go on while a password
 * is checked.
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import { setImmediate as yieldToEventLoop } from 'node:timers/promises';

/** bcrypt's own base64 alphabet (not RFC 4648's order). */
const ALPHABET = './ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789';
const HASH_SHAPE = /^\$2([aby])\$(\d{2})\$([./A-Za-z0-9]{22})([./A-Za-z0-9]{31})$/;
/** "OrpheanBeholderScryDoubt", the text bcrypt encrypts 64 times. */
const MAGIC = Buffer.from('OrpheanBeholderScryDoubt', 'latin1');
/** Key expansions between two yields to the event loop. */
const EXPANSIONS_PER_SLICE = 16;

export interface ParsedBcryptHash {
  /** 'a', 'b' or 'y': the same algorithm for passwords under 255 bytes. */
  variant: string;
  cost: number;
  salt: Buffer;
  /** The 23 bytes of the hash proper. */
  digest: Buffer;
}

/** Fractional hex digits of pi: 18 words for P, then 4 × 256 for the S-boxes. */
function piWords(count: number): Uint32Array {
  const digits = count * 8;
  const guard = 64n;
  const bits = BigInt(digits * 4) + guard;
  const one = 1n << bits;
  const atanOfInverse = (x: number): bigint => {
    const xSquared = BigInt(x * x);
    let term = one / BigInt(x);
    let sum = term;
    for (let k = 1n; term !== 0n; k++) {
      term /= xSquared;
      sum += (k % 2n === 1n ? -term : term) / (2n * k + 1n);
    }
    return sum;
  };
  const pi = 16n * atanOfInverse(5) - 4n * atanOfInverse(239);
  const hex = ((pi - 3n * one) >> guard).toString(16).padStart(digits, '0');
  const words = new Uint32Array(count);
  for (let i = 0; i < count; i++) words[i] = Number.parseInt(hex.slice(i * 8, i * 8 + 8), 16);
  return words;
}

let initialState: Uint32Array | undefined;

/** P (18 words) then S0..S3 (256 words each), as Blowfish starts. */
function blowfishInitialState(): Uint32Array {
  initialState ??= piWords(18 + 1024);
  return initialState;
}

function decodeBase64(text: string, bytes: number): Buffer {
  const out = Buffer.alloc(bytes);
  let bits = 0;
  let acc = 0;
  let n = 0;
  for (const c of text) {
    acc = (acc << 6) | ALPHABET.indexOf(c);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      if (n < bytes) out[n++] = (acc >> bits) & 0xff;
    }
  }
  return out;
}

/** Parses `$2b$10$<22 salt chars><31 hash chars>`; undefined when it is no bcrypt hash this can check. */
export function parseBcryptHash(hash: string): ParsedBcryptHash | undefined {
  const match = HASH_SHAPE.exec(hash);
  if (match === null) return undefined;
  const cost = Number(match[2]);
  if (cost < 4 || cost > 31) return undefined;
  return { variant: match[1] as string, cost, salt: decodeBase64(match[3] as string, 16), digest: decodeBase64(match[4] as string, 23) };
}

/** The Blowfish state and its cipher, on typed arrays (P at 0, S-boxes from 18). */
class Blowfish {
  readonly state = new Uint32Array(blowfishInitialState());
  #l = 0;
  #r = 0;

  /** Encrypts (l, r) in place: the result is in this.#l, this.#r. */
  #encrypt(l: number, r: number): void {
    const s = this.state;
    for (let i = 0; i < 16; i += 2) {
      l ^= s[i] as number;
      r ^= ((((s[18 + (l >>> 24)] as number) + (s[274 + ((l >>> 16) & 0xff)] as number)) ^ (s[530 + ((l >>> 8) & 0xff)] as number)) + (s[786 + (l & 0xff)] as number)) | 0;
      r ^= s[i + 1] as number;
      l ^= ((((s[18 + (r >>> 24)] as number) + (s[274 + ((r >>> 16) & 0xff)] as number)) ^ (s[530 + ((r >>> 8) & 0xff)] as number)) + (s[786 + (r & 0xff)] as number)) | 0;
    }
    this.#l = (r ^ (s[17] as number)) >>> 0;
    this.#r = (l ^ (s[16] as number)) >>> 0;
  }

  /**
   * The key schedule step of EksBlowfish: P xored with the key (cycled), then the whole state
   * rewritten by encrypting a running block, xored with the salt words in turn when there is a salt.
   */
  expand(key: Uint32Array, salt: Uint32Array | undefined): void {
    const s = this.state;
    for (let i = 0; i < 18; i++) s[i] = ((s[i] as number) ^ (key[i % key.length] as number)) >>> 0;
    let l = 0;
    let r = 0;
    let j = 0;
    for (let i = 0; i < s.length; i += 2) {
      if (salt !== undefined) {
        l ^= salt[j] as number;
        r ^= salt[j + 1] as number;
        j = (j + 2) % salt.length;
      }
      this.#encrypt(l, r);
      l = this.#l;
      r = this.#r;
      s[i] = l;
      s[i + 1] = r;
    }
  }

  /** Encrypts the words of `block` in pairs, in place. */
  encryptBlocks(block: Uint32Array): void {
    for (let i = 0; i < block.length; i += 2) {
      this.#encrypt(block[i] as number, block[i + 1] as number);
      block[i] = this.#l;
      block[i + 1] = this.#r;
    }
  }
}

/** Big-endian words of `bytes`, cycled to `count` words (the key schedule's stream). */
function cyclicWords(bytes: Buffer, count: number): Uint32Array {
  const words = new Uint32Array(count);
  let k = 0;
  for (let i = 0; i < count; i++) {
    let w = 0;
    for (let b = 0; b < 4; b++) {
      w = (w << 8) | (bytes[k] as number);
      k = (k + 1) % bytes.length;
    }
    words[i] = w >>> 0;
  }
  return words;
}

/** The 23-byte bcrypt digest of `password` with `salt` at `cost`. */
export async function bcryptDigest(password: Buffer, salt: Buffer, cost: number): Promise<Buffer> {
  // The key is the password with its terminating NUL, at most 72 bytes ($2b$ semantics).
  const key = cyclicWords(Buffer.concat([password, Buffer.of(0)]).subarray(0, 72), 18);
  const saltWords = cyclicWords(salt, 4);
  const bf = new Blowfish();
  bf.expand(key, saltWords);
  const rounds = 2 ** cost;
  for (let i = 0; i < rounds; i++) {
    bf.expand(key, undefined);
    bf.expand(saltWords, undefined);
    if ((i + 1) % EXPANSIONS_PER_SLICE === 0 && i + 1 < rounds) await yieldToEventLoop();
  }
  const block = cyclicWords(MAGIC, 6);
  for (let i = 0; i < 64; i++) bf.encryptBlocks(block);
  const out = Buffer.alloc(24);
  block.forEach((w, i) => out.writeUInt32BE(w, i * 4));
  return out.subarray(0, 23);
}

/**
 * Whether `password` matches the bcrypt `hash`, compared in constant time. A hash that is not
 * bcrypt is never matched (and costs as much as a check at cost 10, so as not to tell).
 */
export async function verifyBcrypt(password: string | Buffer, hash: string): Promise<boolean> {
  const parsed = parseBcryptHash(hash);
  const bytes = typeof password === 'string' ? Buffer.from(password, 'utf8') : password;
  if (parsed === undefined) {
    await bcryptDigest(bytes, Buffer.alloc(16), 10);
    return false;
  }
  const digest = await bcryptDigest(bytes, parsed.salt, parsed.cost);
  return timingSafeEqual(digest, parsed.digest);
}

/** sha256 of a string: keys of the cache of credentials already checked. */
export function credentialKey(user: string, password: string): Buffer {
  return createHash('sha256').update(user).update('\0').update(password).digest();
}
