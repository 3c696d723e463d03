/**
 * The 64-bit hash a lookup table indexes keys by: hi = MurmurHash3 x86_32 (seed
 * 0x9747b28c), lo = FNV-1a 32, both over the key's UTF-8 bytes. Two well-known 32-bit
 * hashes, so a reader in any language can reproduce it. Browser-safe, allocation-free
 * for ASCII keys (every key of a categorical/integer schema).
 */
const utf8 = new TextEncoder();
const SEED = 0x9747b28c;

export interface KeyHash {
  hi: number;
  lo: number;
}

const C1 = 0xcc9e2d51;
const C2 = 0x1b873593;
const FNV_OFFSET = 0x811c9dc5;
const FNV_PRIME = 0x01000193;

/** One 4-byte block of MurmurHash3 x86_32 (small enough for V8 to inline). */
function mixBlock(h: number, block: number): number {
  let k = Math.imul(block, C1);
  k = (k << 15) | (k >>> 17);
  const m = h ^ Math.imul(k, C2);
  return (Math.imul((m << 13) | (m >>> 19), 5) + 0xe6546b64) | 0;
}

/** MurmurHash3's tail and finalizer; stores both hashes in out[0] (hi) and out[1] (lo). */
function finish(h: number, tail: number, length: number, f: number, out: Uint32Array): void {
  let m = h;
  if (length & 3) {
    let k = Math.imul(tail, C1);
    k = (k << 15) | (k >>> 17);
    m ^= Math.imul(k, C2);
  }
  m ^= length;
  m ^= m >>> 16;
  m = Math.imul(m, 0x85ebca6b);
  m ^= m >>> 13;
  m = Math.imul(m, 0xc2b2ae35);
  m ^= m >>> 16;
  out[0] = m;
  out[1] = f;
}

/** Both hashes in one pass over UTF-8 bytes (MurmurHash3 x86_32 blocks are little-endian). */
function hashBytes(bytes: Uint8Array, out: Uint32Array): void {
  let h = SEED;
  let f = FNV_OFFSET;
  let k = 0;
  for (let i = 0; i < bytes.length; i++) {
    const b = bytes[i] as number;
    f = Math.imul(f ^ b, FNV_PRIME);
    k |= b << ((i & 3) << 3);
    if ((i & 3) === 3) {
      h = mixBlock(h, k);
      k = 0;
    }
  }
  finish(h, k, bytes.length, f, out);
}

/**
 * The hot path (every table lookup): hashes a key into out[0] (hi) and out[1] (lo). For
 * ASCII keys the string's char codes are its UTF-8 bytes, so both hashes run in one loop
 * with no allocation; any other key is encoded first.
 */
export function keyHashInto(key: string, out: Uint32Array): void {
  let h = SEED;
  let f = FNV_OFFSET;
  let k = 0;
  const n = key.length;
  for (let i = 0; i < n; i++) {
    const c = key.charCodeAt(i);
    if (c > 0x7f) {
      hashBytes(utf8.encode(key), out);
      return;
    }
    f = Math.imul(f ^ c, FNV_PRIME);
    k |= c << ((i & 3) << 3);
    if ((i & 3) === 3) {
      h = mixBlock(h, k);
      k = 0;
    }
  }
  finish(h, k, n, f, out);
}

const scratch = new Uint32Array(2);

/** The 64-bit hash of a key, as its two halves. */
export function keyHash(key: string): KeyHash {
  keyHashInto(key, scratch);
  return { hi: scratch[0] as number, lo: scratch[1] as number };
}

/** Orders hashes as unsigned 64-bit numbers (hi, then lo). */
export function compareHash(aHi: number, aLo: number, bHi: number, bLo: number): number {
  return aHi !== bHi ? (aHi < bHi ? -1 : 1) : aLo !== bLo ? (aLo < bLo ? -1 : 1) : 0;
}
