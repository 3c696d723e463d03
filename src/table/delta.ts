/**
 * Deltas between two generations of a table with the same encoding: the hashes removed,
 * the entries added or changed, and the target's head (preamble + header) as raw bytes,
 * so a rebuild never depends on re-encoding the header the same way. Applying a delta to
 * the source rebuilds the target byte for byte, verified against the target's checksum.
 * Browser-safe.
 */
import { Packr } from "msgpackr";
import {
  concatBytes,
  entriesOf,
  indexBytes,
  parseHeader,
  sha256,
  storedChecksum,
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
  /** The target file's first indexOffset bytes: magic, version, flags, header, padding. */
  toHead: Uint8Array;
  /** Hashes (hi, lo as u32 little-endian pairs) present in the source only. */
  removed: Uint8Array;
  /** Added or changed entries: hashes as above, then u32 value offsets (n + 1), then values. */
  upsertedCount: number;
  upserted: Uint8Array;
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
    toHead: to.bytes.subarray(0, to.header.indexOffset),
    removed: u32s(removed),
    upsertedCount: upValues.length,
    upserted,
  };
  return packr.pack(delta);
}

export function decodeDelta(bytes: Uint8Array): TableDelta {
  let delta: TableDelta;
  try {
    delta = packr.unpack(bytes) as TableDelta;
  } catch (error) {
    throw new TableFormatError(`not a table delta: ${(error as Error).message}`, 0);
  }
  const blobs = [delta?.toHead, delta?.removed, delta?.upserted];
  if (
    delta?.format !== "predcache-table-delta" ||
    typeof delta.fromChecksum !== "string" ||
    typeof delta.toChecksum !== "string" ||
    !Number.isInteger(delta.upsertedCount) ||
    delta.upsertedCount < 0 ||
    !blobs.every((b) => b instanceof Uint8Array) ||
    delta.removed.length % 8 !== 0 ||
    delta.upserted.length < 12 * delta.upsertedCount + 4
  ) {
    throw new TableFormatError("not a table delta, or an incomplete one", 0);
  }
  return delta;
}

/**
 * Applies a delta to its source table and returns the target's bytes, verified against
 * the target's checksum. Throws TableFormatError on any mismatch (the caller then
 * downloads the full table).
 */
export async function applyDelta(from: TableView, deltaBytes: Uint8Array): Promise<Uint8Array> {
  try {
    return await rebuild(from, decodeDelta(deltaBytes));
  } catch (error) {
    if (error instanceof TableFormatError) throw error;
    throw new TableFormatError(`the delta does not apply: ${(error as Error).message}`, 0);
  }
}

async function rebuild(from: TableView, delta: TableDelta): Promise<Uint8Array> {
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
  // The target's own head says where its sections go; the rebuilt sections must fill them.
  const head = delta.toHead;
  const header = parseHeader(head);
  if (header.indexOffset !== head.length || header.entryCount !== values.length)
    throw new TableFormatError("the delta's head does not describe the rebuilt entries", 0);
  const entries = { hi: Uint32Array.from(hi), lo: Uint32Array.from(lo), values: blob, offsets };
  const body = concatBytes([head, ...indexBytes(entries, header.valueStride > 0), blob]);
  if (body.length !== header.valuesOffset + header.valuesLength)
    throw new TableFormatError("the rebuilt table does not have its stated length", body.length);
  const bytes = concatBytes([body, await sha256(body)]);
  if (storedChecksum(bytes) !== delta.toChecksum)
    throw new TableFormatError(
      "the table rebuilt from the delta does not match its checksum",
      bytes.length - 32,
    );
  return bytes;
}
