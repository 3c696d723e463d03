/**
 * Deltas between two generations of a table with the same encoding: the hashes removed,
 * and the entries added or changed, plus the target's description. Applying a delta to
 * the source rebuilds the target byte for byte, so the result is verified against the
 * target's checksum. Browser-safe.
 */
import { Packr } from "msgpackr";
import {
  encodeTable,
  entriesOf,
  storedChecksum,
  type TableDescription,
  type TableEntries,
  TableFormatError,
  type TableView,
} from "./format.ts";
import { compareHash } from "./key-hash.ts";

const packr = new Packr({ useRecords: false });

export interface TableDelta {
  format: "predcache-table-delta";
  fromGeneration: string;
  fromChecksum: string;
  toGeneration: string;
  toChecksum: string;
  to: TableDescription;
  /** Hashes (hi, lo as u32 little-endian pairs) present in the source only. */
  removed: Uint8Array;
  /** Added or changed entries: hashes as above, then u32 value offsets (n + 1), then values. */
  upsertedCount: number;
  upserted: Uint8Array;
}

function describe(view: TableView): TableDescription {
  const {
    format: _f,
    keyHash: _k,
    entryCount: _e,
    valueStride: _v,
    indexOffset: _i,
    valuesOffset: _o,
    valuesLength: _l,
    ...description
  } = view.header;
  return description;
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

function u32s(values: readonly number[]): Uint8Array {
  const bytes = new Uint8Array(values.length * 4);
  const view = new DataView(bytes.buffer);
  for (const [i, v] of values.entries()) view.setUint32(i * 4, v, true);
  return bytes;
}

function readU32s(bytes: Uint8Array, at: number, count: number): Uint32Array {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const out = new Uint32Array(count);
  for (let i = 0; i < count; i++) out[i] = view.getUint32(at + i * 4, true);
  return out;
}

export function computeDelta(from: TableView, to: TableView): Uint8Array {
  if (from.header.encodingHash !== to.header.encodingHash) {
    throw new TableFormatError("a delta needs two tables of the same encoding", 16);
  }
  const a = entriesOf(from);
  const b = entriesOf(to);
  const removed: number[] = [];
  const upHashes: number[] = [];
  const upValues: Uint8Array[] = [];
  let i = 0;
  let j = 0;
  const value = (e: TableEntries, k: number) =>
    e.values.subarray(e.offsets[k] as number, e.offsets[k + 1] as number);
  while (i < a.hi.length || j < b.hi.length) {
    const c =
      i >= a.hi.length
        ? 1
        : j >= b.hi.length
          ? -1
          : compareHash(a.hi[i] as number, a.lo[i] as number, b.hi[j] as number, b.lo[j] as number);
    if (c < 0) {
      removed.push(a.hi[i] as number, a.lo[i] as number);
      i++;
    } else if (c > 0) {
      upHashes.push(b.hi[j] as number, b.lo[j] as number);
      upValues.push(value(b, j));
      j++;
    } else {
      if (!sameBytes(value(a, i), value(b, j))) {
        upHashes.push(b.hi[j] as number, b.lo[j] as number);
        upValues.push(value(b, j));
      }
      i++;
      j++;
    }
  }
  const offsets: number[] = [0];
  for (const v of upValues) offsets.push((offsets.at(-1) as number) + v.length);
  const upserted = new Uint8Array(
    upHashes.length * 4 + offsets.length * 4 + (offsets.at(-1) as number),
  );
  upserted.set(u32s(upHashes), 0);
  upserted.set(u32s(offsets), upHashes.length * 4);
  let at = upHashes.length * 4 + offsets.length * 4;
  for (const v of upValues) {
    upserted.set(v, at);
    at += v.length;
  }
  const delta: TableDelta = {
    format: "predcache-table-delta",
    fromGeneration: from.header.generation,
    fromChecksum: from.checksum,
    toGeneration: to.header.generation,
    toChecksum: to.checksum,
    to: describe(to),
    removed: u32s(removed),
    upsertedCount: upValues.length,
    upserted,
  };
  return packr.pack(delta);
}

export function decodeDelta(bytes: Uint8Array): TableDelta {
  const delta = packr.unpack(bytes) as TableDelta;
  if (delta?.format !== "predcache-table-delta") throw new TableFormatError("not a table delta", 0);
  return delta;
}

/**
 * Applies a delta to its source table and returns the target's bytes, verified against
 * the target's checksum. Throws TableFormatError on any mismatch (the caller then
 * downloads the full table).
 */
export async function applyDelta(from: TableView, deltaBytes: Uint8Array): Promise<Uint8Array> {
  const delta = decodeDelta(deltaBytes);
  if (delta.fromChecksum !== from.checksum)
    throw new TableFormatError("the delta was made from another table", 0);
  const a = entriesOf(from);
  const removed = readU32s(delta.removed, 0, delta.removed.length / 4);
  const n = delta.upsertedCount;
  const upHashes = readU32s(delta.upserted, 0, 2 * n);
  const upOffsets = readU32s(delta.upserted, 8 * n, n + 1);
  const upValuesAt = 8 * n + 4 * (n + 1);
  const hi: number[] = [];
  const lo: number[] = [];
  const values: Uint8Array[] = [];
  let i = 0;
  let r = 0;
  let u = 0;
  while (i < a.hi.length || u < n) {
    const ah = a.hi[i] as number;
    const al = a.lo[i] as number;
    if (
      i < a.hi.length &&
      r < removed.length / 2 &&
      removed[2 * r] === ah &&
      removed[2 * r + 1] === al
    ) {
      i++;
      r++;
      continue;
    }
    const c =
      i >= a.hi.length
        ? 1
        : u >= n
          ? -1
          : compareHash(ah, al, upHashes[2 * u] as number, upHashes[2 * u + 1] as number);
    if (c <= 0 && i < a.hi.length && !(c === 0)) {
      hi.push(ah);
      lo.push(al);
      values.push(a.values.subarray(a.offsets[i] as number, a.offsets[i + 1] as number));
      i++;
    } else {
      hi.push(upHashes[2 * u] as number);
      lo.push(upHashes[2 * u + 1] as number);
      values.push(
        delta.upserted.subarray(
          upValuesAt + (upOffsets[u] as number),
          upValuesAt + (upOffsets[u + 1] as number),
        ),
      );
      if (c === 0) i++;
      u++;
    }
  }
  const offsets = new Uint32Array(values.length + 1);
  values.forEach((v, k) => {
    offsets[k + 1] = (offsets[k] as number) + v.length;
  });
  const blob = new Uint8Array(offsets[values.length] as number);
  for (const [k, v] of values.entries()) blob.set(v, offsets[k] as number);
  const bytes = await encodeTable(delta.to, {
    hi: Uint32Array.from(hi),
    lo: Uint32Array.from(lo),
    values: blob,
    offsets,
  });
  if (storedChecksum(bytes) !== delta.toChecksum)
    throw new TableFormatError(
      "the table rebuilt from the delta does not match its checksum",
      bytes.length - 32,
    );
  return bytes;
}
