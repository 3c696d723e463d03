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

function isAscii(text: string): boolean {
  for (let i = 0; i < text.length; i++) if (text.charCodeAt(i) > 0x7f) return false;
  return true;
}

function hashBytes(length: number, byteAt: (i: number) => number): KeyHash {
  // MurmurHash3 x86_32
  let h = SEED;
  const blocks = length & ~3;
  for (let i = 0; i < blocks; i += 4) {
    let k = byteAt(i) | (byteAt(i + 1) << 8) | (byteAt(i + 2) << 16) | (byteAt(i + 3) << 24);
    k = Math.imul(k, 0xcc9e2d51);
    k = (k << 15) | (k >>> 17);
    k = Math.imul(k, 0x1b873593);
    h ^= k;
    h = (h << 13) | (h >>> 19);
    h = (Math.imul(h, 5) + 0xe6546b64) | 0;
  }
  const tail = length & 3;
  if (tail > 0) {
    let k = 0;
    if (tail === 3) k ^= byteAt(blocks + 2) << 16;
    if (tail >= 2) k ^= byteAt(blocks + 1) << 8;
    k ^= byteAt(blocks);
    k = Math.imul(k, 0xcc9e2d51);
    k = (k << 15) | (k >>> 17);
    k = Math.imul(k, 0x1b873593);
    h ^= k;
  }
  h ^= length;
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  // FNV-1a 32
  let f = 0x811c9dc5;
  for (let i = 0; i < length; i++) {
    f ^= byteAt(i);
    f = Math.imul(f, 0x01000193);
  }
  return { hi: h >>> 0, lo: f >>> 0 };
}

export function keyHash(key: string): KeyHash {
  if (isAscii(key)) return hashBytes(key.length, (i) => key.charCodeAt(i));
  const bytes = utf8.encode(key);
  return hashBytes(bytes.length, (i) => bytes[i] as number);
}

/** Orders hashes as unsigned 64-bit numbers (hi, then lo). */
export function compareHash(aHi: number, aLo: number, bHi: number, bLo: number): number {
  return aHi !== bHi ? (aHi < bHi ? -1 : 1) : aLo !== bLo ? (aLo < bLo ? -1 : 1) : 0;
}
