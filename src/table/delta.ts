/**
 * Deltas between two generations of a table with the same encoding: the hashes removed,
 * the entries added or changed, and the target's head (preamble + header) as raw bytes,
 * so a rebuild never depends on re-encoding the header the same way. Applying a delta to
 * the source rebuilds the target byte for byte, verified against the target's checksum.
 * Both tables must be version 2 with the same value layout (deltaBlocker); otherwise
 * there is no delta and the client downloads the full table. Browser-safe.
 */
import { Packr } from "msgpackr";
import {
  columnsOf,
  compareTableHash,
  concatBytes,
  type EntryValues,
  msgpackValueAt,
  parseHead,
  sha256,
  storedChecksum,
  type TableEntries,
  TableFormatError,
  type TableHeader,
  type TableView,
  tableSections,
} from "./format.ts";
import { columnSpecs, packColumns, packedWordCount, readField, sameColumns } from "./values.ts";

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
  /** Added or changed entries: hashes as above, then their values in the target's encoding. */
  upsertedCount: number;
  upserted: Uint8Array;
}

/** No delta can turn one of the two tables into the other: download the full table. */
export class DeltaUnavailableError extends Error {
  override readonly name = "DeltaUnavailableError";
}

/**
 * Why no delta can rebuild `to` from `from`, or undefined when one can: both must be
 * version 2 tables with the same value encoding, and packed values need columns of the
 * same kinds and scales (so a source value re-bases exactly onto the target's minimums).
 */
export function deltaBlocker(
  from: Pick<TableView, "version" | "header">,
  to: Pick<TableView, "version" | "header">,
): string | undefined {
  if (from.version !== 2 || to.version !== 2) return "deltas join version 2 tables only";
  const a = from.header as TableHeader;
  const b = to.header as TableHeader;
  if (a.valueEncoding !== b.valueEncoding) return "the two tables encode their values differently";
  if (a.valueEncoding === "packed") {
    const specsA = columnSpecs(a.outputs);
    const specsB = columnSpecs(b.outputs);
    if (!specsA || !specsB || !sameColumns(specsA, specsB))
      return "the two tables have different value columns";
  }
  return undefined;
}

function u32s(values: ArrayLike<number>): Uint8Array {
  const bytes = new Uint8Array(values.length * 4);
  const view = new DataView(bytes.buffer);
  for (let i = 0; i < values.length; i++) view.setUint32(i * 4, values[i] as number, true);
  return bytes;
}

function readU32s(bytes: Uint8Array, at: number, count: number): Uint32Array {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const out = new Uint32Array(count);
  for (let i = 0; i < count; i++) out[i] = view.getUint32(at + i * 4, true);
  return out;
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/** Entry values of a parsed version 2 table, comparable across two tables of one layout. */
interface Values {
  same(i: number, other: Values, j: number): boolean;
  packed?: { ints: Float64Array; width: number };
  msgpack?: (i: number) => Uint8Array;
}

function valuesOf(table: TableView): Values {
  const v = table.values;
  if (v.kind === "packed") {
    const ints = columnsOf(v, table.size);
    const width = v.columns.length;
    return {
      packed: { ints, width },
      same(i, other, j) {
        const theirs = (other.packed as { ints: Float64Array }).ints;
        for (let c = 0; c < width; c++)
          if (ints[i * width + c] !== theirs[j * width + c]) return false;
        return true;
      },
    };
  }
  const at = (i: number) => msgpackValueAt(v, i);
  return {
    msgpack: at,
    same: (i, other, j) => sameBytes(at(i), (other.msgpack as (j: number) => Uint8Array)(j)),
  };
}

export function computeDelta(from: TableView, to: TableView): Uint8Array {
  if (from.header.encodingHash !== to.header.encodingHash) {
    throw new TableFormatError("a delta needs two tables of the same encoding", 16);
  }
  const blocker = deltaBlocker(from, to);
  if (blocker) throw new DeltaUnavailableError(blocker);
  const target = to.header as TableHeader;
  const a = from.hashes();
  const b = to.hashes();
  const va = valuesOf(from);
  const vb = valuesOf(to);
  const removed: number[] = [];
  const upHashes: number[] = [];
  const upEntries: number[] = []; // positions in `to`
  let i = 0;
  let j = 0;
  while (i < a.hi.length || j < b.hi.length) {
    const c =
      i >= a.hi.length
        ? 1
        : j >= b.hi.length
          ? -1
          : compareTableHash(
              a.hi[i] as number,
              a.lo[i] as number,
              b.hi[j] as number,
              b.lo[j] as number,
            );
    if (c < 0) {
      removed.push(a.hi[i] as number, a.lo[i] as number);
      i++;
    } else {
      if (c > 0 || !va.same(i, vb, j)) {
        upHashes.push(b.hi[j] as number, b.lo[j] as number);
        upEntries.push(j);
      }
      if (c === 0) i++;
      j++;
    }
  }
  const u = upEntries.length;
  let upValues: Uint8Array[];
  if (vb.packed) {
    const { ints, width } = vb.packed;
    const picked = new Float64Array(u * width);
    upEntries.forEach((from, to) => {
      picked.set(ints.subarray(from * width, (from + 1) * width), to * width);
    });
    upValues = [u32s(packColumns(picked, u, target.columns))];
  } else {
    const at = vb.msgpack as (i: number) => Uint8Array;
    const values = upEntries.map(at);
    const offsets = [0];
    for (const v of values) offsets.push((offsets.at(-1) as number) + v.length);
    upValues = [u32s(offsets), ...values];
  }
  const delta: TableDelta = {
    format: "predcache-table-delta",
    fromGeneration: from.header.generation,
    fromChecksum: from.checksum,
    toGeneration: to.header.generation,
    toChecksum: to.checksum,
    toHead: to.bytes.subarray(0, target.indexOffset),
    removed: u32s(removed),
    upsertedCount: u,
    upserted: concatBytes([u32s(upHashes), ...upValues]),
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
    delta.upserted.length < 8 * delta.upsertedCount
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

/** The upserted entries' values, in the target's encoding, or a TableFormatError. */
function upsertedValues(delta: TableDelta, header: TableHeader): EntryValues {
  const u = delta.upsertedCount;
  const at = 8 * u;
  const blob = delta.upserted;
  const bad = () => new TableFormatError("the delta's upserted values do not fit its head", 0);
  if (header.valueEncoding === "packed") {
    const recordBits = header.columns.reduce((sum, c) => sum + c.bits, 0);
    const words = packedWordCount(u, recordBits);
    if (blob.length !== at + 4 * words) throw bad();
    const stream = readU32s(blob, at, words);
    const width = header.columns.length;
    const ints = new Float64Array(u * width);
    for (let i = 0; i < u; i++) {
      let p = i * recordBits;
      for (let c = 0; c < width; c++) {
        const { min, bits } = header.columns[c] as { min: number; bits: number };
        ints[i * width + c] = min + readField(stream, p, bits);
        p += bits;
      }
    }
    return { kind: "packed", columns: width, ints };
  }
  if (blob.length < at + 4 * (u + 1)) throw bad();
  const offsets = readU32s(blob, at, u + 1);
  const valuesAt = at + 4 * (u + 1);
  if (offsets[0] !== 0 || offsets[u] !== blob.length - valuesAt) throw bad();
  for (let i = 1; i <= u; i++) if ((offsets[i] as number) < (offsets[i - 1] as number)) throw bad();
  return { kind: "msgpack", bytes: blob.subarray(valuesAt), offsets };
}

async function rebuild(from: TableView, delta: TableDelta): Promise<Uint8Array> {
  if (delta.fromChecksum !== from.checksum)
    throw new TableFormatError("the delta was made from another table", 0);
  // The target's own head says where its sections go and how its values are encoded.
  const head = delta.toHead;
  const parsed = parseHead(head);
  if (parsed.version !== 2 || parsed.header.indexOffset !== head.length)
    throw new TableFormatError("the delta's head does not describe the rebuilt entries", 0);
  const header = parsed.header;
  const blocker = deltaBlocker(from, parsed);
  if (blocker) throw new TableFormatError(`the delta cannot apply to this table: ${blocker}`, 0);
  const upValues = upsertedValues(delta, header);
  const u = delta.upsertedCount;
  const up = readU32s(delta.upserted, 0, 2 * u);
  const removed = readU32s(delta.removed, 0, delta.removed.length / 4);
  const source = from.hashes();
  const n = source.hi.length;
  const sourceValues = valuesOf(from);

  // Merge: source entries not removed, upserted ones added or replacing (all ascending).
  const hi: number[] = [];
  const lo: number[] = [];
  const picks: number[] = []; // ≥ 0: a source entry; < 0: upserted entry −1 − k
  let i = 0;
  let r = 0;
  let k = 0;
  const ascending = (list: Uint32Array, at: number) =>
    at === 0 ||
    compareTableHash(
      list[2 * at - 2] as number,
      list[2 * at - 1] as number,
      list[2 * at] as number,
      list[2 * at + 1] as number,
    ) < 0;
  while (i < n || k < u) {
    if (i < n && r < removed.length / 2) {
      const c = compareTableHash(
        removed[2 * r] as number,
        removed[2 * r + 1] as number,
        source.hi[i] as number,
        source.lo[i] as number,
      );
      if (c < 0 || !ascending(removed, r))
        throw new TableFormatError("the delta removes entries the source does not have", 0);
      if (c === 0) {
        i++;
        r++;
        continue;
      }
    }
    const c =
      i >= n
        ? 1
        : k >= u
          ? -1
          : compareTableHash(
              source.hi[i] as number,
              source.lo[i] as number,
              up[2 * k] as number,
              up[2 * k + 1] as number,
            );
    if (c < 0) {
      hi.push(source.hi[i] as number);
      lo.push(source.lo[i] as number);
      picks.push(i++);
    } else {
      if (!ascending(up, k)) throw new TableFormatError("the delta's entries are out of order", 0);
      hi.push(up[2 * k] as number);
      lo.push(up[2 * k + 1] as number);
      picks.push(-1 - k++);
      if (c === 0) i++;
    }
  }
  if (r !== removed.length / 2)
    throw new TableFormatError("the delta removes entries the source does not have", 0);
  if (header.entryCount !== picks.length)
    throw new TableFormatError("the delta's head does not describe the rebuilt entries", 0);

  let values: EntryValues;
  const count = picks.length;
  if (upValues.kind === "packed") {
    const width = upValues.columns;
    const mine = (sourceValues.packed as { ints: Float64Array }).ints;
    const ints = new Float64Array(count * width);
    picks.forEach((pick, to) => {
      const [list, at] = pick >= 0 ? [mine, pick] : [upValues.ints, -1 - pick];
      ints.set(list.subarray(at * width, (at + 1) * width), to * width);
    });
    values = { kind: "packed", columns: width, ints };
  } else {
    const parts = picks.map((pick) =>
      pick >= 0
        ? (sourceValues.msgpack as (i: number) => Uint8Array)(pick)
        : upValues.bytes.subarray(
            upValues.offsets[-1 - pick] as number,
            upValues.offsets[-pick] as number,
          ),
    );
    const offsets = new Uint32Array(count + 1);
    parts.forEach((p, to) => {
      offsets[to + 1] = (offsets[to] as number) + p.length;
    });
    values = { kind: "msgpack", bytes: concatBytes(parts), offsets };
  }
  const entries: TableEntries = { hi: Uint32Array.from(hi), lo: Uint32Array.from(lo), values };
  const body = concatBytes([head, ...tableSections(header, entries)]);
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
