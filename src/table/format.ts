/**
 * The lookup table file: a frozen slice of one model version's predictions that an app
 * can open and query without the model. Browser-safe. Layout of version 2 (all framing
 * integers little-endian; docs/table-format.md is the reference):
 *
 *   0   8  magic 89 50 43 54 0D 0A 1A 0A  ("\x89PCT\r\n\x1a\n")
 *   8   2  format version (2; version 1 files are still read)
 *   10  2  flags (0; a reader refuses others: they would mean a layout it does not know)
 *   12  4  header length H
 *   16  H  header: msgpack map (model, encoding, outputs, entryCount, layout…)
 *   …      zero padding to a multiple of 4
 *   I      directory u32[2^d + 1]: the first entry of each bucket of the top d hash bits
 *          keys u32[n]: the next 32 bits of each entry's 56-bit hash, ascending per bucket
 *          (msgpack values without a stride only) value offsets u32[n + 1]
 *          key bytes u8[n × (24 − d) / 8]: the hash's last 24 − d bits; zero padding to 4
 *   V      values: packed fixed-point integers (or msgpack arrays, the fallback)
 *   end−32 SHA-256 of every byte before it
 */
import { sha256 as sha256Js } from "@noble/hashes/sha2.js";
import { bytesToHex } from "@noble/hashes/utils.js";
import { FLOAT32_OPTIONS, Packr } from "msgpackr";
import * as z from "zod/mini";
import type { OutputValue, Prediction } from "../model/decoding.ts";
import { encodingSchema, outputsSchema } from "../model/manifest.ts";
import { compareHash } from "./key-hash.ts";
import {
  type ColumnSpec,
  columnFits,
  columnSpecs,
  fromColumns,
  type PackedColumn,
  packColumns,
  packedColumns,
  packedWordCount,
  readField,
  toColumns,
} from "./values.ts";

export const TABLE_MAGIC = Uint8Array.of(0x89, 0x50, 0x43, 0x54, 0x0d, 0x0a, 0x1a, 0x0a);
export const TABLE_FORMAT_VERSION = 2;
const PREAMBLE = 16;
const TRAILER = 32;
const KEY_HASH = "murmur3_32(seed 0x9747b28c) << 32 | fnv1a_32, over UTF-8";
/** The directory sizes a writer may pick (bits of the hash the directory stands for). */
const DIRECTORY_BITS = [0, 8, 16, 24];
const LITTLE_ENDIAN = new Uint8Array(Uint16Array.of(1).buffer)[0] === 1;

/** Values keep float32 where it round-trips to the same decimal (the manifest rounds outputs). */
export const valuePackr = new Packr({ useRecords: false, useFloat32: FLOAT32_OPTIONS.DECIMAL_FIT });
const headerPackr = new Packr({ useRecords: false });

/**
 * One entry's value as msgpack (the fallback value encoding, and version 1's): an array
 * of the outputs in manifest order. Numbers are written as float32 whenever that decodes
 * back to the same number, whole numbers included, else float64; class labels are packed
 * by msgpackr as they come.
 */
export function packValue(outputs: readonly unknown[]): Uint8Array {
  if (outputs.length > 15 || !outputs.every((v) => typeof v === "number"))
    return valuePackr.pack(outputs);
  const bytes = new Uint8Array(1 + 9 * outputs.length);
  const view = new DataView(bytes.buffer);
  bytes[0] = 0x90 | outputs.length; // fixarray
  let at = 1;
  for (const value of outputs as number[]) {
    bytes[at] = 0xca;
    view.setFloat32(at + 1, value);
    if (Object.is(valuePackr.unpack(bytes.subarray(at, at + 5)), value)) {
      at += 5;
    } else {
      bytes[at] = 0xcb;
      view.setFloat64(at + 1, value);
      at += 9;
    }
  }
  return bytes.slice(0, at);
}

const headerStart = {
  format: z.literal("predcache-table"),
  model: z.string(),
  modelVersion: z.string(),
  encodingHash: z.string(),
  inputSchema: encodingSchema,
  outputs: outputsSchema,
  created: z.string(),
  generation: z.string(),
  source: z.string(),
  /** The manifest's main output and confidence bar, so a reader flags lowConfidence as the API does (absent in older tables). */
  mainOutput: z.optional(z.string()),
  confidenceThreshold: z.optional(z.number()),
};
const count = z.int().check(z.gte(0));

/** Version 2's header (what this writer writes). */
export const tableHeaderSchema = z.object({
  ...headerStart,
  keyHash: z.literal(KEY_HASH),
  entryCount: count,
  /** d: the directory has 2^d + 1 entries, one per value of the hash's top d bits. */
  directoryBits: count,
  valueEncoding: z.enum(["packed", "msgpack"]),
  /** packed: one per value column, in order; msgpack: empty. */
  columns: z.array(z.object({ min: z.int(), bits: count })),
  /** msgpack only: > 0 when every value has this many bytes (no offsets array). */
  valueStride: count,
  indexOffset: count,
  valuesOffset: count,
  valuesLength: count,
});
export type TableHeader = z.infer<typeof tableHeaderSchema>;

/** Version 1's header (still read: tables published before version 2). */
export const tableHeaderSchemaV1 = z.object({
  ...headerStart,
  keyHash: z.literal(KEY_HASH),
  entryCount: count,
  valueStride: count,
  indexOffset: count,
  valuesOffset: count,
  valuesLength: count,
});
export type TableHeaderV1 = z.infer<typeof tableHeaderSchemaV1>;
export type AnyTableHeader = TableHeader | TableHeaderV1;

/** What the writer is told; it works out the layout fields itself. */
export type TableDescription = Pick<
  TableHeader,
  | "model"
  | "modelVersion"
  | "encodingHash"
  | "inputSchema"
  | "outputs"
  | "created"
  | "generation"
  | "source"
>;

export class TableFormatError extends Error {
  override readonly name = "TableFormatError";
  readonly code = "table_corrupt";
  constructor(
    message: string,
    /** Byte offset the problem was found at. */
    readonly offset: number,
    /** True when the bytes end early (a download cut short) rather than being wrong. */
    readonly incomplete = false,
  ) {
    super(`${message} (at byte ${offset})`);
  }
}

// ---------------------------------------------------------------------------- hashes

/**
 * Orders two 64-bit key hashes by their top 56 bits (the table hash): hi, then lo >>> 8.
 * The low 8 bits of lo are not stored in a version 2 table and never compared.
 */
export function compareTableHash(aHi: number, aLo: number, bHi: number, bLo: number): number {
  return compareHash(aHi, aLo >>> 8, bHi, bLo >>> 8);
}

/** The directory bits the writer picks for n entries: the smallest file (§3). */
export function directoryBitsFor(n: number): number {
  return n >= 2 ** 26 ? 24 : n >= 2 ** 18 ? 16 : n >= 1024 ? 8 : 0;
}

// ---------------------------------------------------------------------------- entries

/** Values of entries in one of the two encodings, in entry order. */
export type EntryValues =
  /** Entry i's column c is the integer ints[i × columns + c] (values.ts). */
  | { kind: "packed"; columns: number; ints: Float64Array }
  /** Entry i's value is bytes[offsets[i] .. offsets[i + 1]): a msgpack array. */
  | { kind: "msgpack"; bytes: Uint8Array; offsets: Uint32Array };

/** Entries as parallel arrays, sorted by table hash: what the writer takes. */
export interface TableEntries {
  /** Key hashes; only the top 56 bits count (hi, and lo >>> 8). */
  hi: Uint32Array;
  lo: Uint32Array;
  values: EntryValues;
}

function align4(n: number): number {
  return Math.ceil(n / 4) * 4;
}

/**
 * The order that sorts n hashes by table hash, then input position: equal table hashes
 * end up next to each other, in input order.
 */
export function hashOrder(hi: Uint32Array, lo: Uint32Array, n = hi.length): Uint32Array {
  const order = new Uint32Array(n);
  for (let i = 0; i < n; i++) order[i] = i;
  order.sort(
    (a, b) =>
      compareTableHash(hi[a] as number, lo[a] as number, hi[b] as number, lo[b] as number) || a - b,
  );
  return order;
}

/** The entries at `order` (positions in `entries`), in that order. */
export function pickEntries(entries: TableEntries, order: Uint32Array): TableEntries {
  const n = order.length;
  const hi = new Uint32Array(n);
  const lo = new Uint32Array(n);
  for (let to = 0; to < n; to++) {
    const from = order[to] as number;
    hi[to] = entries.hi[from] as number;
    lo[to] = entries.lo[from] as number;
  }
  const values = entries.values;
  if (values.kind === "packed") {
    const width = values.columns;
    const ints = new Float64Array(n * width);
    for (let to = 0; to < n; to++) {
      const from = order[to] as number;
      for (let c = 0; c < width; c++)
        ints[to * width + c] = values.ints[from * width + c] as number;
    }
    return { hi, lo, values: { kind: "packed", columns: width, ints } };
  }
  const offsets = new Uint32Array(n + 1);
  for (let to = 0; to < n; to++) {
    const from = order[to] as number;
    offsets[to + 1] =
      (offsets[to] as number) +
      (values.offsets[from + 1] as number) -
      (values.offsets[from] as number);
  }
  const bytes = new Uint8Array(offsets[n] as number);
  for (let to = 0; to < n; to++) {
    const from = order[to] as number;
    bytes.set(
      values.bytes.subarray(values.offsets[from] as number, values.offsets[from + 1] as number),
      offsets[to] as number,
    );
  }
  return { hi, lo, values: { kind: "msgpack", bytes, offsets } };
}

/** Sorts msgpack-valued entries by table hash, refusing two entries with one 56-bit hash. */
export function sortEntries(hi: Uint32Array, lo: Uint32Array, values: Uint8Array[]): TableEntries {
  const offsets = new Uint32Array(values.length + 1);
  values.forEach((v, i) => {
    offsets[i + 1] = (offsets[i] as number) + v.length;
  });
  const bytes = new Uint8Array(offsets[values.length] as number);
  for (const [i, v] of values.entries()) bytes.set(v, offsets[i] as number);
  const order = hashOrder(hi, lo);
  for (let i = 1; i < order.length; i++) {
    const a = order[i - 1] as number;
    const b = order[i] as number;
    if (compareTableHash(hi[a] as number, lo[a] as number, hi[b] as number, lo[b] as number) === 0)
      throw new Error("two keys of the table share one 56-bit hash");
  }
  return pickEntries({ hi, lo, values: { kind: "msgpack", bytes, offsets } }, order);
}

/** Decodes one msgpack value in place (no subarray: msgpackr keeps its per-buffer state). */
function unpackValue(bytes: Uint8Array, start: number, end: number): unknown {
  return (valuePackr.unpack as (b: Uint8Array, o: object) => unknown)(bytes, { start, end });
}

/**
 * The packed form of msgpack values, when every value can be stored exactly as fixed-point
 * columns of these outputs (values.ts); else undefined and the table keeps msgpack.
 */
export function packedFromMsgpack(
  outputs: TableHeader["outputs"],
  values: Extract<EntryValues, { kind: "msgpack" }>,
): Extract<EntryValues, { kind: "packed" }> | undefined {
  const specs = columnSpecs(outputs);
  if (!specs) return undefined;
  const n = values.offsets.length - 1;
  const width = specs.length;
  const ints = new Float64Array(n * width);
  for (let i = 0; i < n; i++) {
    let value: unknown;
    try {
      value = unpackValue(
        values.bytes,
        values.offsets[i] as number,
        values.offsets[i + 1] as number,
      );
    } catch {
      return undefined;
    }
    if (!Array.isArray(value) || value.length !== outputs.length) return undefined;
    if (!toColumns(outputs, value, ints, i * width)) return undefined;
  }
  return { kind: "packed", columns: width, ints };
}

// ---------------------------------------------------------------------------- writer

/** Where the sections of a version 2 table go, from its header's counts (§1). */
interface Layout {
  buckets: number;
  /** Bytes per entry of the key's last bits: (24 − d) / 8. */
  keyBytes: number;
  directoryAt: number;
  keysAt: number;
  /** −1 when there is no offsets array. */
  offsetsAt: number;
  keyBytesAt: number;
  /** Where the key bytes end (then zero padding up to valuesOffset). */
  indexEnd: number;
  valuesOffset: number;
}

function layoutOf(
  header: Pick<
    TableHeader,
    "entryCount" | "directoryBits" | "valueEncoding" | "valueStride" | "indexOffset"
  >,
): Layout {
  const n = header.entryCount;
  const buckets = 2 ** header.directoryBits;
  const keyBytes = (24 - header.directoryBits) / 8;
  const directoryAt = header.indexOffset;
  const keysAt = directoryAt + 4 * (buckets + 1);
  const hasOffsets = header.valueEncoding === "msgpack" && header.valueStride === 0;
  const offsetsAt = hasOffsets ? keysAt + 4 * n : -1;
  const keyBytesAt = keysAt + 4 * n + (hasOffsets ? 4 * (n + 1) : 0);
  const indexEnd = keyBytesAt + keyBytes * n;
  return {
    buckets,
    keyBytes,
    directoryAt,
    keysAt,
    offsetsAt,
    keyBytesAt,
    indexEnd,
    valuesOffset: align4(indexEnd),
  };
}

function leBytes(array: Uint32Array): Uint8Array {
  if (LITTLE_ENDIAN) return new Uint8Array(array.buffer, array.byteOffset, array.byteLength);
  const bytes = new Uint8Array(array.length * 4);
  const view = new DataView(bytes.buffer);
  for (let i = 0; i < array.length; i++) view.setUint32(i * 4, array[i] as number, true);
  return bytes;
}

/**
 * Everything after a version 2 table's head (its first indexOffset bytes), as the header
 * says: directory, keys, offsets, key bytes and padding, values. The entries must be
 * sorted by table hash, unique, and in the header's value encoding. Shared by the writer
 * and the delta applier, so both produce the same bytes.
 */
export function tableSections(header: TableHeader, entries: TableEntries): Uint8Array[] {
  const n = entries.hi.length;
  const { hi, lo } = entries;
  const layout = layoutOf(header);
  const d = header.directoryBits;
  const directory = new Uint32Array(layout.buckets + 1);
  const keys = new Uint32Array(n);
  const keyBytes = new Uint8Array(layout.valuesOffset - layout.keyBytesAt);
  const kb = layout.keyBytes;
  const lowMask = 2 ** (24 - d) - 1;
  for (let i = 0; i < n; i++) {
    const h = hi[i] as number;
    const l = lo[i] as number;
    if (
      i > 0 &&
      compareTableHash(hi[i - 1] as number, lo[i - 1] as number, h, l) >= 0 // sorted, unique
    )
      throw new Error("table entries are not sorted by hash, or two share one 56-bit hash");
    const bucket = d === 0 ? 0 : h >>> (32 - d);
    directory[bucket + 1] = (directory[bucket + 1] as number) + 1;
    keys[i] = d === 0 ? h : ((h << d) | (l >>> (32 - d))) >>> 0;
    const rest = (l >>> 8) & lowMask;
    for (let k = 0; k < kb; k++) keyBytes[i * kb + k] = (rest >>> (8 * k)) & 0xff;
  }
  for (let b = 1; b <= layout.buckets; b++)
    directory[b] = (directory[b] as number) + (directory[b - 1] as number);
  const parts = [leBytes(directory), leBytes(keys)];
  const values = entries.values;
  if (header.valueEncoding === "packed") {
    if (values.kind !== "packed" || values.columns !== header.columns.length)
      throw new Error("entries are not in the header's value encoding");
    parts.push(keyBytes, leBytes(packColumns(values.ints, n, header.columns)));
  } else {
    if (values.kind !== "msgpack")
      throw new Error("entries are not in the header's value encoding");
    if (layout.offsetsAt >= 0) parts.push(leBytes(values.offsets));
    parts.push(keyBytes, values.bytes.subarray(0, values.offsets[n] as number));
  }
  return parts;
}

/** The head (preamble, header, padding) of a table with this header; settles its offsets. */
function encodeHead(header: TableHeader): { header: TableHeader; head: Uint8Array } {
  // The header holds its own section offsets, which depend on its length: encode until stable.
  let current = { ...header, indexOffset: 0, valuesOffset: 0 };
  let headerBytes = headerPackr.pack(current);
  let settled = false;
  for (let attempt = 0; attempt < 4 && !settled; attempt++) {
    const indexOffset = align4(PREAMBLE + headerBytes.length);
    const { valuesOffset } = layoutOf({ ...current, indexOffset });
    const next = { ...current, indexOffset, valuesOffset };
    const nextBytes = headerPackr.pack(next);
    current = next;
    settled = nextBytes.length === headerBytes.length;
    headerBytes = nextBytes;
  }
  if (!settled) throw new Error("table header length did not settle"); // cannot happen: offsets only grow
  const head = new Uint8Array(current.indexOffset);
  head.set(TABLE_MAGIC, 0);
  const view = new DataView(head.buffer);
  view.setUint16(8, TABLE_FORMAT_VERSION, true);
  view.setUint16(10, 0, true);
  view.setUint32(12, headerBytes.length, true);
  head.set(headerBytes, PREAMBLE);
  return { header: current, head };
}

/**
 * The file's bytes except the trailing checksum, in parts (so a writer can stream them).
 * Values are packed as fixed-point columns when every value allows it (msgpack values
 * are converted), else written as msgpack.
 */
export function encodeTableBody(
  description: TableDescription,
  entries: TableEntries,
): Uint8Array[] {
  const n = entries.hi.length;
  let values = entries.values;
  if (values.kind === "msgpack") values = packedFromMsgpack(description.outputs, values) ?? values;
  let columns: PackedColumn[] | undefined;
  if (values.kind === "packed") {
    columns = packedColumns(values.ints, n, values.columns);
    if (!columns) {
      // A column too wide for the format: back to msgpack (exact, just larger).
      const bytes: Uint8Array[] = [];
      for (let i = 0; i < n; i++) {
        const prediction = fromColumns(description.outputs, values.ints, i * values.columns);
        bytes.push(packValue(description.outputs.map((o) => prediction[o.name])));
      }
      values = msgpackValues(bytes);
    }
  }
  let stride = 0;
  if (values.kind === "msgpack") {
    stride = n > 0 ? (values.offsets[1] as number) - (values.offsets[0] as number) : 0;
    for (let i = 1; i < n && stride > 0; i++) {
      if ((values.offsets[i + 1] as number) - (values.offsets[i] as number) !== stride) stride = 0;
    }
  }
  const recordBits = (columns ?? []).reduce((sum, c) => sum + c.bits, 0);
  const { header, head } = encodeHead({
    format: "predcache-table",
    ...description,
    keyHash: KEY_HASH,
    entryCount: n,
    directoryBits: directoryBitsFor(n),
    valueEncoding: columns ? "packed" : "msgpack",
    columns: columns ?? [],
    valueStride: stride,
    indexOffset: 0,
    valuesOffset: 0,
    valuesLength:
      values.kind === "packed" ? 4 * packedWordCount(n, recordBits) : (values.offsets[n] as number),
  });
  return [head, ...tableSections(header, { ...entries, values })];
}

/** Values one after another, with their offsets. */
export function msgpackValues(bytes: Uint8Array[]): Extract<EntryValues, { kind: "msgpack" }> {
  const offsets = new Uint32Array(bytes.length + 1);
  bytes.forEach((v, i) => {
    offsets[i + 1] = (offsets[i] as number) + v.length;
  });
  const blob = new Uint8Array(offsets[bytes.length] as number);
  for (const [i, v] of bytes.entries()) blob.set(v, offsets[i] as number);
  return { kind: "msgpack", bytes: blob, offsets };
}

export function concatBytes(parts: readonly Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const part of parts) {
    out.set(part, at);
    at += part.length;
  }
  return out;
}

/** SHA-256: WebCrypto where it exists (fast, native), a pure-JS fallback elsewhere. */
export async function sha256(bytes: Uint8Array): Promise<Uint8Array> {
  const subtle = globalThis.crypto?.subtle;
  if (subtle)
    return new Uint8Array(await subtle.digest("SHA-256", bytes as Uint8Array<ArrayBuffer>));
  return sha256Js(bytes);
}

/** A whole table file from its entries. */
export async function encodeTable(
  description: TableDescription,
  entries: TableEntries,
): Promise<Uint8Array> {
  const body = concatBytes(encodeTableBody(description, entries));
  return concatBytes([body, await sha256(body)]);
}

/** The checksum stored in a table's last 32 bytes, as hex: the table's content hash. */
export function storedChecksum(bytes: Uint8Array): string {
  return bytesToHex(bytes.subarray(bytes.length - TRAILER));
}

// ---------------------------------------------------------------------------- reader

/** A packed values section as read: columns, their meaning, the bit stream. */
export interface PackedValuesView {
  kind: "packed";
  specs: ColumnSpec[];
  columns: PackedColumn[];
  recordBits: number;
  words: Uint32Array;
}

/** A msgpack values section as read: value i is bytes[start(i), end(i)). */
export interface MsgpackValuesView {
  kind: "msgpack";
  bytes: Uint8Array;
  start(i: number): number;
  end(i: number): number;
}

/** A parsed table: header and index over the bytes; values are decoded on demand. */
export interface TableView {
  version: 1 | 2;
  header: AnyTableHeader;
  bytes: Uint8Array;
  checksum: string;
  size: number;
  /**
   * The entry a key's 64-bit hash finds, or −1: version 2 compares the top 56 bits (all
   * it stores), version 1 all 64.
   */
  find(hi: number, lo: number): number;
  /** The entry with this table hash (top 56 bits, for every version), or −1. */
  findTableHash(hi: number, lo: number): number;
  /** Every entry's hash, in order: version 2 has lo's low 8 bits 0 (not stored). */
  hashes(): { hi: Uint32Array; lo: Uint32Array };
  values: PackedValuesView | MsgpackValuesView;
  /** Entry i's prediction; throws TableFormatError for a value that does not decode. */
  prediction(i: number): Prediction;
}

function u32View(bytes: Uint8Array, offset: number, count: number): Uint32Array {
  const at = bytes.byteOffset + offset;
  // Typed-array views need 4-byte alignment (a Buffer slice may not have it): copy then.
  if (LITTLE_ENDIAN && at % 4 === 0) return new Uint32Array(bytes.buffer, at, count);
  const out = new Uint32Array(count);
  const view = new DataView(bytes.buffer, at, count * 4);
  for (let i = 0; i < count; i++) out[i] = view.getUint32(i * 4, true);
  return out;
}

/** The format version of a table's bytes (after checking magic and length). */
function readVersion(bytes: Uint8Array): number {
  if (bytes.length < PREAMBLE)
    throw new TableFormatError("too short to be a table", bytes.length, true);
  for (let i = 0; i < TABLE_MAGIC.length; i++) {
    if (bytes[i] !== TABLE_MAGIC[i])
      throw new TableFormatError("not a predcache table (bad magic)", i);
  }
  const version = (bytes[8] as number) | ((bytes[9] as number) << 8);
  if (version !== 1 && version !== 2)
    throw new TableFormatError(`unsupported table format version ${version}`, 8);
  return version;
}

/**
 * Checks magic, version and header, and that the sections fit a file of `fileLength`
 * bytes (unchecked when undefined). `bytes` needs to hold only the preamble and the header.
 */
export function parseHeader(bytes: Uint8Array, fileLength?: number): AnyTableHeader {
  return parseHead(bytes, fileLength).header;
}

type ParsedHead = { version: 1; header: TableHeaderV1 } | { version: 2; header: TableHeader };

/** parseHeader, telling the versions apart. */
export function parseHead(bytes: Uint8Array, fileLength?: number): ParsedHead {
  const version = readVersion(bytes);
  const flags = (bytes[10] as number) | ((bytes[11] as number) << 8);
  if (flags !== 0) throw new TableFormatError(`unknown table flags 0x${flags.toString(16)}`, 10);
  const headerLength =
    ((bytes[12] as number) |
      ((bytes[13] as number) << 8) |
      ((bytes[14] as number) << 16) |
      ((bytes[15] as number) << 24)) >>>
    0;
  if (PREAMBLE + headerLength > bytes.length)
    throw new TableFormatError("header runs past the end", PREAMBLE, true);
  let raw: unknown;
  try {
    raw = headerPackr.unpack(bytes.subarray(PREAMBLE, PREAMBLE + headerLength));
  } catch (error) {
    throw new TableFormatError(`header is not msgpack: ${(error as Error).message}`, PREAMBLE);
  }
  const parsed = (version === 1 ? tableHeaderSchemaV1 : tableHeaderSchema).safeParse(raw);
  if (!parsed.success) {
    // The field named: "Invalid input" alone did not say which of the header's it was.
    const issue = parsed.error.issues[0];
    const field = issue?.path.map(String).join(".") || "(the header itself)";
    throw new TableFormatError(`header is invalid at ${field}: ${issue?.message}`, PREAMBLE);
  }
  const head = { version, header: parsed.data } as ParsedHead;
  const n = head.header.entryCount;
  let valuesOffset: number;
  if (head.version === 1) {
    const h = head.header;
    valuesOffset = h.indexOffset + 8 * n + (h.valueStride > 0 ? 0 : 4 * (n + 1));
    if (h.indexOffset < PREAMBLE + headerLength || h.indexOffset % 4 !== 0)
      throw new TableFormatError("section offsets are inconsistent", PREAMBLE);
  } else {
    const h = head.header;
    if (!DIRECTORY_BITS.includes(h.directoryBits))
      throw new TableFormatError("directory bits are not 0, 8, 16 or 24", PREAMBLE);
    checkColumns(h);
    if (h.indexOffset < PREAMBLE + headerLength || h.indexOffset % 4 !== 0)
      throw new TableFormatError("section offsets are inconsistent", PREAMBLE);
    valuesOffset = layoutOf(h).valuesOffset;
  }
  const h = head.header;
  if (h.valuesOffset !== valuesOffset)
    throw new TableFormatError("section offsets are inconsistent", PREAMBLE);
  const packed = head.version === 2 && head.header.valueEncoding === "packed";
  if (packed) {
    const bits = (head.header as TableHeader).columns.reduce((sum, c) => sum + c.bits, 0);
    if (h.valuesLength !== 4 * packedWordCount(n, bits))
      throw new TableFormatError("packed values do not match the values section", PREAMBLE);
  } else if (h.valueStride > 0 && h.valueStride * n !== h.valuesLength) {
    throw new TableFormatError("value stride does not match the values section", PREAMBLE);
  }
  if (fileLength === undefined) return head;
  const end = h.valuesOffset + h.valuesLength;
  if (end + TRAILER > fileLength)
    throw new TableFormatError(
      `file ends at ${fileLength}, expected ${end + TRAILER} bytes`,
      fileLength,
      true,
    );
  if (end + TRAILER < fileLength)
    throw new TableFormatError("trailing bytes after the checksum", end + TRAILER);
  return head;
}

/** The header's value columns against its outputs (§2). */
function checkColumns(header: TableHeader): void {
  const fail = () => {
    throw new TableFormatError("value columns do not match the outputs", PREAMBLE);
  };
  if (header.valueEncoding === "msgpack") {
    if (header.columns.length !== 0) fail();
    return;
  }
  const specs = columnSpecs(header.outputs);
  if (!specs || specs.length !== header.columns.length || header.valueStride !== 0) fail();
  for (const column of header.columns) if (!columnFits(column.min, column.bits)) fail();
}

/**
 * Parses a table: magic, version, header, section bounds, index order. Throws
 * TableFormatError with the byte offset, telling a truncated file (`incomplete`) from a
 * corrupt one. Does not check the checksum: verifyTable does.
 */
/** msgpack values: at explicit offsets, or at a fixed stride when the table has none. */
function msgpackView(
  blob: Uint8Array,
  stride: number,
  offsets: Uint32Array | undefined,
): MsgpackValuesView {
  if (offsets)
    return {
      kind: "msgpack",
      bytes: blob,
      start: (i) => offsets[i] as number,
      end: (i) => offsets[i + 1] as number,
    };
  return { kind: "msgpack", bytes: blob, start: (i) => i * stride, end: (i) => (i + 1) * stride };
}

export function parseTable(bytes: Uint8Array): TableView {
  const head = parseHead(bytes, bytes.length);
  return head.version === 1 ? parseV1(bytes, head.header) : parseV2(bytes, head.header);
}

function checkOffsets(offsets: Uint32Array, n: number, valuesLength: number, at: number): void {
  if (offsets[0] !== 0) throw new TableFormatError("value offsets do not start at 0", at);
  for (let i = 1; i <= n; i++) {
    if ((offsets[i] as number) < (offsets[i - 1] as number))
      throw new TableFormatError(`value offsets decrease at entry ${i}`, at + 4 * i);
  }
  if ((offsets[n] as number) !== valuesLength)
    throw new TableFormatError("value offsets do not match the values section", at + 4 * n);
}

function parseV2(bytes: Uint8Array, header: TableHeader): TableView {
  const n = header.entryCount;
  const d = header.directoryBits;
  const layout = layoutOf(header);
  const { buckets, keyBytes: kb } = layout;
  const directory = u32View(bytes, layout.directoryAt, buckets + 1);
  const keys = u32View(bytes, layout.keysAt, n);
  const low = bytes.subarray(layout.keyBytesAt, layout.keyBytesAt + kb * n);
  const offsets = layout.offsetsAt >= 0 ? u32View(bytes, layout.offsetsAt, n + 1) : undefined;

  // Directory: from 0, never decreasing, up to n (§7 step 12).
  if (directory[0] !== 0)
    throw new TableFormatError("directory does not start at 0", layout.directoryAt);
  for (let b = 1; b <= buckets; b++) {
    if ((directory[b] as number) < (directory[b - 1] as number))
      throw new TableFormatError(`directory decreases at bucket ${b}`, layout.directoryAt + 4 * b);
  }
  if (directory[buckets] !== n)
    throw new TableFormatError(
      "directory does not end at the entry count",
      layout.directoryAt + 4 * buckets,
    );
  // Within each bucket, (key, key bytes) strictly ascending (step 13).
  const lowAt =
    kb === 0
      ? () => 0
      : kb === 1
        ? (i: number) => low[i] as number
        : kb === 2
          ? (i: number) => (low[2 * i] as number) | ((low[2 * i + 1] as number) << 8)
          : (i: number) =>
              (low[3 * i] as number) |
              ((low[3 * i + 1] as number) << 8) |
              ((low[3 * i + 2] as number) << 16);
  for (let b = 0; b < buckets; b++) {
    const end = directory[b + 1] as number;
    for (let i = (directory[b] as number) + 1; i < end; i++) {
      const k = keys[i] as number;
      const p = keys[i - 1] as number;
      if (k < p || (k === p && lowAt(i) <= lowAt(i - 1)))
        throw new TableFormatError(
          `index not in ascending order at entry ${i}`,
          layout.keysAt + 4 * i,
        );
    }
  }
  if (offsets) checkOffsets(offsets, n, header.valuesLength, layout.offsetsAt);
  // Padding is zero: between the key bytes and the values (step 17)…
  for (let at = layout.indexEnd; at < layout.valuesOffset; at++)
    if (bytes[at] !== 0) throw new TableFormatError("padding is not zero", at);

  const valuesEnd = header.valuesOffset + header.valuesLength;
  let values: PackedValuesView | MsgpackValuesView;
  let prediction: (i: number) => Prediction;
  if (header.valueEncoding === "packed") {
    const words = u32View(bytes, header.valuesOffset, header.valuesLength / 4);
    const specs = columnSpecs(header.outputs) as ColumnSpec[];
    const recordBits = header.columns.reduce((sum, c) => sum + c.bits, 0);
    // … and so are the bits after the last record.
    const used = n * recordBits;
    for (let p = used; p < words.length * 32; ) {
      const take = Math.min(32 - (p % 32), words.length * 32 - p);
      if (readField(words, p, take) !== 0)
        throw new TableFormatError(
          "packed values have bits set after the last entry",
          header.valuesOffset + 4 * Math.floor(p / 32),
        );
      p += take;
    }
    values = { kind: "packed", specs, columns: header.columns, recordBits, words };
    prediction = packedDecoder(header, values);
  } else {
    const msgpack = msgpackView(
      bytes.subarray(header.valuesOffset, valuesEnd),
      header.valueStride,
      offsets,
    );
    values = msgpack;
    prediction = msgpackDecoder(header, msgpack);
  }

  const shift = 32 - d;
  const lowMask = 2 ** (24 - d) - 1;
  const find = (h: number, l: number): number => {
    const bucket = d === 0 ? 0 : h >>> shift;
    const key = d === 0 ? h : ((h << d) | (l >>> shift)) >>> 0;
    const rest = (l >>> 8) & lowMask;
    let lo = directory[bucket] as number;
    let hi = (directory[bucket + 1] as number) - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >>> 1;
      const k = keys[mid] as number;
      if (k < key) lo = mid + 1;
      else if (k > key) hi = mid - 1;
      else {
        const r = kb === 1 ? (low[mid] as number) : lowAt(mid);
        if (r === rest) return mid;
        if (r < rest) lo = mid + 1;
        else hi = mid - 1;
      }
    }
    return -1;
  };
  return {
    version: 2,
    header,
    bytes,
    checksum: storedChecksum(bytes),
    size: n,
    find,
    findTableHash: find,
    hashes() {
      const hi = new Uint32Array(n);
      const lo = new Uint32Array(n);
      for (let b = 0; b < buckets; b++) {
        const end = directory[b + 1] as number;
        for (let i = directory[b] as number; i < end; i++) {
          const k = keys[i] as number;
          const r = lowAt(i);
          hi[i] = d === 0 ? k : ((b << shift) | (k >>> d)) >>> 0;
          lo[i] = (d === 0 ? r << 8 : (k << shift) | (r << 8)) >>> 0;
        }
      }
      return { hi, lo };
    },
    values,
    prediction,
  };
}

/**
 * The output names as property keys: strings decoded from the header are not interned,
 * and V8 looks a non-interned key up in its string table on every store (~10× slower).
 * Object.keys returns the interned ones.
 */
function propertyNames(outputs: readonly { name: string }[]): string[] {
  return outputs.map((o) => Object.keys({ [o.name]: 0 })[0] as string);
}

/**
 * Decodes entry i of packed values: per column, the field at bit i × recordBits + offset,
 * plus the column's min, over 10^digits. One object per call and nothing else allocated.
 */
function packedDecoder(header: TableHeader, values: PackedValuesView): (i: number) => Prediction {
  const { words, recordBits, specs } = values;
  const width = header.columns.length;
  const offsets = new Float64Array(width);
  const bits = new Int32Array(width);
  const mins = new Float64Array(width);
  for (let c = 0, at = 0; c < width; c++) {
    const column = header.columns[c] as PackedColumn;
    offsets[c] = at;
    bits[c] = column.bits;
    mins[c] = column.min;
    at += column.bits;
  }
  const outputs = header.outputs;
  if (specs.every((s) => s.kind === "number")) {
    // One column per output (the common case): decode straight into the prediction.
    const names = propertyNames(outputs);
    const scales = Float64Array.from(specs, (s) => s.scale);
    const value = (i: number, c: number): number => {
      const b = bits[c] as number;
      const p = i * recordBits + (offsets[c] as number);
      let field: number;
      if (b <= 32) {
        const s = p & 31;
        const w = (p - s) / 32;
        let v = (words[w] as number) >>> s;
        if (s + b > 32) v |= (words[w + 1] as number) << (32 - s);
        field = b === 32 ? v >>> 0 : v & ((1 << b) - 1);
      } else {
        field = readField(words, p, b);
      }
      return ((mins[c] as number) + field) / (scales[c] as number);
    };
    // An object literal with one computed key per output gives each key its own store
    // site, so every prediction gets one hidden class at once: ~4× faster than a loop of
    // prediction[name] = … (whose one site sees every name). The loop is for 5+ outputs.
    const [n0, n1, n2, n3] = names as [string, string, string, string];
    switch (width) {
      case 1:
        return (i) => ({ [n0]: value(i, 0) });
      case 2:
        return (i) => ({ [n0]: value(i, 0), [n1]: value(i, 1) });
      case 3:
        return (i) => ({ [n0]: value(i, 0), [n1]: value(i, 1), [n2]: value(i, 2) });
      case 4:
        return (i) => ({
          [n0]: value(i, 0),
          [n1]: value(i, 1),
          [n2]: value(i, 2),
          [n3]: value(i, 3),
        });
    }
    return (i) => {
      const prediction: Prediction = {};
      for (let c = 0; c < width; c++) prediction[names[c] as string] = value(i, c);
      return prediction;
    };
  }
  const ints = new Float64Array(width);
  const labelCounts = new Int32Array(width).fill(-1);
  let c = 0;
  for (const output of outputs) {
    if (output.kind !== "classes") c++;
    else {
      c += (output.labels ?? []).length;
      labelCounts[c++] = (output.labels ?? []).length;
    }
  }
  const interned = outputs.map((o) => ({
    ...o,
    name: propertyNames([o])[0] as string,
    ...(o.labels ? { labels: propertyNames(o.labels.map((name) => ({ name }))) } : {}),
  }));
  return (i) => {
    const base = i * recordBits;
    for (let c = 0; c < width; c++) {
      ints[c] =
        (mins[c] as number) + readField(words, base + (offsets[c] as number), bits[c] as number);
      const labels = labelCounts[c] as number;
      if (labels >= 0 && (ints[c] as number) >= labels)
        throw new TableFormatError(
          `value ${i} has label index ${ints[c]} of ${labels} labels`,
          header.valuesOffset + 4 * Math.floor(base / 32),
        );
    }
    return fromColumns(interned, ints, 0);
  };
}

/** Decodes msgpack value i (version 1, and version 2's fallback), checking its shape (§4). */
function msgpackDecoder(
  header: AnyTableHeader,
  values: MsgpackValuesView,
): (i: number) => Prediction {
  const outputs = header.outputs;
  const names = propertyNames(outputs);
  return (i) => {
    const start = values.start(i);
    const at = header.valuesOffset + start;
    let decoded: OutputValue[];
    try {
      decoded = unpackValue(values.bytes, start, values.end(i)) as OutputValue[];
    } catch (error) {
      throw new TableFormatError(`value ${i} is not msgpack: ${(error as Error).message}`, at);
    }
    if (!Array.isArray(decoded) || decoded.length !== outputs.length)
      throw new TableFormatError(`value ${i} does not hold one value per output`, at);
    const prediction: Prediction = {};
    for (let k = 0; k < names.length; k++)
      prediction[names[k] as string] = decoded[k] as OutputValue;
    return prediction;
  };
}

/** Version 1: hi[n], lo[n] (full 64-bit hashes), offsets unless a stride, msgpack values. */
function parseV1(bytes: Uint8Array, header: TableHeaderV1): TableView {
  const n = header.entryCount;
  const hiAll = u32View(bytes, header.indexOffset, n);
  const loAll = u32View(bytes, header.indexOffset + 4 * n, n);
  const offsetsAt = header.indexOffset + 8 * n;
  const offsets = header.valueStride > 0 ? undefined : u32View(bytes, offsetsAt, n + 1);
  for (let i = 1; i < n; i++) {
    const h = hiAll[i] as number;
    const p = hiAll[i - 1] as number;
    if (h < p || (h === p && (loAll[i] as number) <= (loAll[i - 1] as number)))
      throw new TableFormatError(
        `index not in ascending order at entry ${i}`,
        header.indexOffset + 4 * i,
      );
  }
  if (offsets) checkOffsets(offsets, n, header.valuesLength, offsetsAt);
  const values = msgpackView(
    bytes.subarray(header.valuesOffset, header.valuesOffset + header.valuesLength),
    header.valueStride,
    offsets,
  );
  /** The first entry ≥ (h, l), as a 64-bit number. */
  const lowerBound = (h: number, l: number): number => {
    let lo = 0;
    let hi = n;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (compareHash(hiAll[mid] as number, loAll[mid] as number, h, l) < 0) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  };
  const find = (h: number, l: number): number => {
    const i = lowerBound(h, l);
    return i < n && hiAll[i] === h && loAll[i] === l ? i : -1;
  };
  return {
    version: 1,
    header,
    bytes,
    checksum: storedChecksum(bytes),
    size: n,
    find,
    findTableHash(h, l) {
      // The exact hash if it is there, else the first entry sharing its top 56 bits.
      const exact = find(h, l);
      if (exact >= 0) return exact;
      const i = lowerBound(h, (l & ~0xff) >>> 0);
      return i < n && compareTableHash(hiAll[i] as number, loAll[i] as number, h, l) === 0 ? i : -1;
    },
    hashes: () => ({ hi: hiAll, lo: loAll }),
    values,
    prediction: msgpackDecoder(header, values),
  };
}

/** Checks the trailing SHA-256 against the bytes; throws TableFormatError on mismatch. */
export async function verifyTable(bytes: Uint8Array): Promise<void> {
  if (bytes.length < TRAILER)
    throw new TableFormatError("too short to hold a checksum", bytes.length, true);
  const actual = bytesToHex(await sha256(bytes.subarray(0, bytes.length - TRAILER)));
  if (actual !== storedChecksum(bytes))
    throw new TableFormatError(
      "checksum mismatch: the table is corrupt or incomplete",
      bytes.length - TRAILER,
    );
}

/** The msgpack bytes of entry i of a msgpack values section. */
export function msgpackValueAt(values: MsgpackValuesView, i: number): Uint8Array {
  return values.bytes.subarray(values.start(i), values.end(i));
}

/** Every entry's integer columns (packed values): column c of entry i at [i × width + c]. */
export function columnsOf(values: PackedValuesView, n: number): Float64Array {
  const width = values.columns.length;
  const ints = new Float64Array(n * width);
  for (let i = 0; i < n; i++) {
    let p = i * values.recordBits;
    for (let c = 0; c < width; c++) {
      const { min, bits } = values.columns[c] as PackedColumn;
      ints[i * width + c] = min + readField(values.words, p, bits);
      p += bits;
    }
  }
  return ints;
}
