/** Hashes shared by every runtime (browser-safe: no node:crypto). */
import { sha256 } from "@noble/hashes/sha2.js";
import { bytesToHex } from "@noble/hashes/utils.js";

const utf8 = new TextEncoder();

export function sha256Hex(data: string | Uint8Array): string {
  return bytesToHex(sha256(typeof data === "string" ? utf8.encode(data) : data));
}

/**
 * FNV-1a, 32 bits, over the UTF-8 bytes: the hashing trick for string features, and
 * Redis buckets (which may share a hash; an ETag may not: src/api/reply.ts). ASCII
 * (every canonical key in practice) is hashed straight from the string, without
 * encoding it first; anything else goes through TextEncoder.
 */
export function fnv1a32(text: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) {
    const code = text.charCodeAt(i);
    if (code >= 0x80) return fnvBytes(h, utf8.encode(text.slice(i)));
    h = Math.imul(h ^ code, 0x01000193);
  }
  return h >>> 0;
}

function fnvBytes(seed: number, bytes: Uint8Array): number {
  let h = seed;
  for (const byte of bytes) h = Math.imul(h ^ byte, 0x01000193);
  return h >>> 0;
}
