/**
 * The lookup table file: a frozen slice of one model version's predictions that an app
 * can open and query without the model. Browser-safe. Layout (all integers little-endian;
 * docs/table-format.md is the reference):
 *
 *   0   8  magic 89 50 43 54 0D 0A 1A 0A  ("\x89PCT\r\n\x1a\n")
 *   8   2  format version (1)
 *   10  2  flags (0; a reader refuses others: they would mean a layout it does not know)
 *   12  4  header length H
 *   16  H  header: msgpack map (model, modelVersion, encodingHash, inputSchema, outputs,
 *          entryCount, section offsets…)
 *   …      zero padding to a multiple of 4
 *   I      index: hashHi u32[n], hashLo u32[n], sorted by (hi, lo) as an unsigned 64-bit number;
 *          then, unless the header's valueStride > 0, valueOffsets u32[n + 1]
 *   V      values: msgpack arrays of the outputs in manifest order, concatenated
 *   end−32 SHA-256 of every byte before it
 */
import { sha256 as sha256Js } from "@noble/hashes/sha2.js";
import { bytesToHex } from "@noble/hashes/utils.js";
import { FLOAT32_OPTIONS, Packr } from "msgpackr";
import * as z from "zod/mini";
import { encodingSchema, outputsSchema } from "../model/manifest.ts";
import { compareHash } from "./key-hash.ts";

export const TABLE_MAGIC = Uint8Array.of(0x89, 0x50, 0x43, 0x54, 0x0d, 0x0a, 0x1a, 0x0a);
export const TABLE_FORMAT_VERSION = 1;
const PREAMBLE = 16;
const TRAILER = 32;

/** Values keep float32 where it round-trips to the same decimal (the manifest rounds outputs). */
export const valuePackr = new Packr({ useRecords: false, useFloat32: FLOAT32_OPTIONS.DECIMAL_FIT });
const headerPackr = new Packr({ useRecords: false });

/**
 * One entry's value: a msgpack array of the outputs in manifest order. Numbers are written
 * as float32 whenever that decodes back to the same number (the manifest rounds outputs,
 * so it nearly always does), whole numbers included, else float64: values of a numeric
 * model then all have one width and the table needs no offsets array (4 bytes an entry).
 * Other outputs (class labels) are packed by msgpackr as they come.
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

export const tableHeaderSchema = z.object({
  format: z.literal("predcache-table"),
  model: z.string(),
  modelVersion: z.string(),
  encodingHash: z.string(),
  inputSchema: encodingSchema,
  outputs: outputsSchema,
  created: z.string(),
  generation: z.string(),
  source: z.string(),
  entryCount: z.int().check(z.gte(0)),
  keyHash: z.literal("murmur3_32(seed 0x9747b28c) << 32 | fnv1a_32, over UTF-8"),
  /** > 0: every value has this many bytes and there is no offsets array. */
  valueStride: z.int().check(z.gte(0)),
  indexOffset: z.int().check(z.gte(0)),
  valuesOffset: z.int().check(z.gte(0)),
  valuesLength: z.int().check(z.gte(0)),
});
export type TableHeader = z.infer<typeof tableHeaderSchema>;
/** What the writer is told; it works out the layout fields itself. */
export type TableDescription = Omit<
  TableHeader,
  | "format"
  | "keyHash"
  | "entryCount"
  | "valueStride"
  | "indexOffset"
  | "valuesOffset"
  | "valuesLength"
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

/** Entries as parallel arrays, sorted by hash: what the writer takes and the reader exposes. */
export interface TableEntries {
  hi: Uint32Array;
  lo: Uint32Array;
  /** Value i is values[offsets[i] .. offsets[i + 1]). */
  values: Uint8Array;
  offsets: Uint32Array;
}

function align4(n: number): number {
  return (n + 3) & ~3;
}

/** Sorts entries by hash, refusing two entries with one hash. */
export function sortEntries(hi: Uint32Array, lo: Uint32Array, values: Uint8Array[]): TableEntries {
  const offsets = new Uint32Array(values.length + 1);
  values.forEach((v, i) => {
    offsets[i + 1] = (offsets[i] as number) + v.length;
  });
  const blob = new Uint8Array(offsets[values.length] as number);
  for (const [i, v] of values.entries()) blob.set(v, offsets[i] as number);
  return sortPacked({ hi, lo, values: blob, offsets });
}

/**
 * Which of two entries with one hash to keep (their positions in the input), or throw.
 * The default refuses: two keys of one table sharing a 64-bit hash.
 */
export type DuplicateHash = (earlier: number, later: number) => number;

const refuseDuplicates: DuplicateHash = () => {
  throw new Error("two keys of the table share one 64-bit hash");
};

/** Sorts packed entries (values in one blob) by hash; `duplicate` settles equal hashes. */
export function sortPacked(entries: TableEntries, duplicate = refuseDuplicates): TableEntries {
  const { hi, lo, values, offsets } = entries;
  const n = hi.length;
  const order = new Uint32Array(n);
  for (let i = 0; i < n; i++) order[i] = i;
  // By hash, then by input position, so duplicates meet in input order.
  order.sort(
    (a, b) =>
      compareHash(hi[a] as number, lo[a] as number, hi[b] as number, lo[b] as number) || a - b,
  );
  let kept = 0;
  for (let i = 0; i < n; i++) {
    const from = order[i] as number;
    const last = kept > 0 ? (order[kept - 1] as number) : -1;
    if (last >= 0 && hi[last] === hi[from] && lo[last] === lo[from]) {
      order[kept - 1] = duplicate(last, from);
    } else {
      order[kept++] = from;
    }
  }
  const sortedHi = new Uint32Array(kept);
  const sortedLo = new Uint32Array(kept);
  const sortedOffsets = new Uint32Array(kept + 1);
  let size = 0;
  for (let to = 0; to < kept; to++) {
    const from = order[to] as number;
    size += (offsets[from + 1] as number) - (offsets[from] as number);
  }
  const blob = new Uint8Array(size);
  let at = 0;
  for (let to = 0; to < kept; to++) {
    const from = order[to] as number;
    sortedHi[to] = hi[from] as number;
    sortedLo[to] = lo[from] as number;
    const value = values.subarray(offsets[from] as number, offsets[from + 1] as number);
    sortedOffsets[to] = at;
    blob.set(value, at);
    at += value.length;
  }
  sortedOffsets[kept] = at;
  return { hi: sortedHi, lo: sortedLo, values: blob, offsets: sortedOffsets };
}

/** The file's bytes except the trailing checksum, in parts (so a writer can stream them). */
export function encodeTableBody(
  description: TableDescription,
  entries: TableEntries,
): Uint8Array[] {
  const n = entries.hi.length;
  let stride = n > 0 ? (entries.offsets[1] as number) - (entries.offsets[0] as number) : 0;
  for (let i = 1; i < n && stride > 0; i++) {
    if ((entries.offsets[i + 1] as number) - (entries.offsets[i] as number) !== stride) stride = 0;
  }
  // The header holds its own section offsets, which depend on its length: encode until stable.
  let header: TableHeader = {
    format: "predcache-table",
    ...description,
    keyHash: "murmur3_32(seed 0x9747b28c) << 32 | fnv1a_32, over UTF-8",
    entryCount: n,
    valueStride: stride,
    indexOffset: 0,
    valuesOffset: 0,
    valuesLength: entries.values.length,
  };
  let headerBytes = headerPackr.pack(header);
  let settled = false;
  for (let attempt = 0; attempt < 4 && !settled; attempt++) {
    const indexOffset = align4(PREAMBLE + headerBytes.length);
    const indexLength = 8 * n + (stride > 0 ? 0 : 4 * (n + 1));
    const next = { ...header, indexOffset, valuesOffset: indexOffset + indexLength };
    const nextBytes = headerPackr.pack(next);
    header = next;
    settled = nextBytes.length === headerBytes.length;
    headerBytes = nextBytes;
  }
  if (!settled) throw new Error("table header length did not settle"); // cannot happen: offsets only grow

  const preamble = new Uint8Array(header.indexOffset);
  preamble.set(TABLE_MAGIC, 0);
  const view = new DataView(preamble.buffer);
  view.setUint16(8, TABLE_FORMAT_VERSION, true);
  view.setUint16(10, 0, true);
  view.setUint32(12, headerBytes.length, true);
  preamble.set(headerBytes, PREAMBLE);
  return [preamble, ...indexBytes(entries, stride > 0), entries.values];
}

/** The index section: hashes hi then lo, then value offsets unless values have one stride. */
export function indexBytes(entries: TableEntries, fixedStride: boolean): Uint8Array[] {
  const parts = [leBytes(entries.hi), leBytes(entries.lo)];
  if (!fixedStride) parts.push(leBytes(entries.offsets));
  return parts;
}

function leBytes(array: Uint32Array): Uint8Array {
  const bytes = new Uint8Array(array.length * 4);
  const view = new DataView(bytes.buffer);
  for (let i = 0; i < array.length; i++) view.setUint32(i * 4, array[i] as number, true);
  return bytes;
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

/** A parsed table: header and index views over the bytes; values are decoded on demand. */
export interface TableView {
  header: TableHeader;
  bytes: Uint8Array;
  checksum: string;
  entries:
    | TableEntries
    | { hi: Uint32Array; lo: Uint32Array; values: Uint8Array; offsets: undefined };
  /** Index of the entry with this hash, or −1. */
  find(hi: number, lo: number): number;
  /** The encoded value of entry i. */
  valueBytes(i: number): Uint8Array;
}

function u32View(bytes: Uint8Array, offset: number, count: number): Uint32Array {
  const at = bytes.byteOffset + offset;
  // Typed-array views need 4-byte alignment (a Buffer slice may not have it): copy then.
  if (at % 4 === 0) return new Uint32Array(bytes.buffer, at, count);
  return new Uint32Array(bytes.slice(offset, offset + count * 4).buffer);
}

/**
 * Checks magic, version and header, and that the sections fit a file of `fileLength`
 * bytes (unchecked when undefined). `bytes` needs to hold only the preamble and the header.
 */
export function parseHeader(bytes: Uint8Array, fileLength?: number): TableHeader {
  if (bytes.length < PREAMBLE)
    throw new TableFormatError("too short to be a table", bytes.length, true);
  for (let i = 0; i < TABLE_MAGIC.length; i++) {
    if (bytes[i] !== TABLE_MAGIC[i])
      throw new TableFormatError("not a predcache table (bad magic)", i);
  }
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const version = view.getUint16(8, true);
  if (version !== TABLE_FORMAT_VERSION)
    throw new TableFormatError(`unsupported table format version ${version}`, 8);
  const flags = view.getUint16(10, true);
  if (flags !== 0) throw new TableFormatError(`unknown table flags 0x${flags.toString(16)}`, 10);
  const headerLength = view.getUint32(12, true);
  if (PREAMBLE + headerLength > bytes.length)
    throw new TableFormatError("header runs past the end", PREAMBLE, true);
  let raw: unknown;
  try {
    raw = headerPackr.unpack(bytes.subarray(PREAMBLE, PREAMBLE + headerLength));
  } catch (error) {
    throw new TableFormatError(`header is not msgpack: ${(error as Error).message}`, PREAMBLE);
  }
  const parsed = tableHeaderSchema.safeParse(raw);
  if (!parsed.success)
    throw new TableFormatError(`header is invalid: ${parsed.error.issues[0]?.message}`, PREAMBLE);
  const header = parsed.data;
  const n = header.entryCount;
  const indexLength = 8 * n + (header.valueStride > 0 ? 0 : 4 * (n + 1));
  const end = header.valuesOffset + header.valuesLength;
  if (
    header.indexOffset < PREAMBLE + headerLength ||
    header.indexOffset % 4 !== 0 ||
    header.valuesOffset !== header.indexOffset + indexLength
  ) {
    throw new TableFormatError("section offsets are inconsistent", 16);
  }
  if (header.valueStride > 0 && header.valueStride * n !== header.valuesLength)
    throw new TableFormatError("value stride does not match the values section", 16);
  if (fileLength === undefined) return header;
  if (end + TRAILER > fileLength)
    throw new TableFormatError(
      `file ends at ${fileLength}, expected ${end + TRAILER} bytes`,
      fileLength,
      true,
    );
  if (end + TRAILER < fileLength)
    throw new TableFormatError("trailing bytes after the checksum", end + TRAILER);
  return header;
}

/**
 * The index must be strictly ascending (binary search depends on it; it also means no
 * duplicate hashes) and the value offsets must run from 0 up to the values' length.
 * One pass over typed arrays: a few ms for 1M entries.
 */
function checkIndex(
  header: TableHeader,
  hi: Uint32Array,
  lo: Uint32Array,
  offsets: Uint32Array | undefined,
): void {
  const n = header.entryCount;
  for (let i = 1; i < n; i++) {
    const h = hi[i] as number;
    const p = hi[i - 1] as number;
    if (h < p || (h === p && (lo[i] as number) <= (lo[i - 1] as number)))
      throw new TableFormatError(
        `index not in ascending order at entry ${i}`,
        header.indexOffset + 4 * i,
      );
  }
  if (!offsets) return;
  const at = header.indexOffset + 8 * n;
  if (offsets[0] !== 0) throw new TableFormatError("value offsets do not start at 0", at);
  for (let i = 1; i <= n; i++) {
    if ((offsets[i] as number) < (offsets[i - 1] as number))
      throw new TableFormatError(`value offsets decrease at entry ${i}`, at + 4 * i);
  }
  if ((offsets[n] as number) !== header.valuesLength)
    throw new TableFormatError("value offsets do not match the values section", at + 4 * n);
}

/**
 * Parses a table: magic, version, header, section bounds. Throws TableFormatError with
 * the byte offset, telling a truncated file (`incomplete`) from a corrupt one. Does not
 * check the checksum: verifyTable does.
 */
export function parseTable(bytes: Uint8Array): TableView {
  const header = parseHeader(bytes, bytes.length);
  const n = header.entryCount;
  const end = header.valuesOffset + header.valuesLength;
  const hi = u32View(bytes, header.indexOffset, n);
  const lo = u32View(bytes, header.indexOffset + 4 * n, n);
  const offsets =
    header.valueStride > 0 ? undefined : u32View(bytes, header.indexOffset + 8 * n, n + 1);
  const values = bytes.subarray(header.valuesOffset, end);
  checkIndex(header, hi, lo, offsets);
  const stride = header.valueStride;
  const { directory, shift } = buildDirectory(hi);
  return {
    header,
    bytes,
    checksum: storedChecksum(bytes),
    entries: offsets ? { hi, lo, values, offsets } : { hi, lo, values, offsets: undefined },
    find(h: number, l: number): number {
      // The directory narrows the search to the entries sharing h's top bits (~256).
      const bucket = shift === 32 ? 0 : h >>> shift;
      let low = directory[bucket] as number;
      let high = (directory[bucket + 1] as number) - 1;
      while (low <= high) {
        const mid = (low + high) >>> 1;
        const mh = hi[mid] as number;
        if (mh < h) low = mid + 1;
        else if (mh > h) high = mid - 1;
        else {
          const ml = lo[mid] as number;
          if (ml === l) return mid;
          if (ml < l) low = mid + 1;
          else high = mid - 1;
        }
      }
      return -1;
    },
    valueBytes(i: number): Uint8Array {
      if (offsets) return values.subarray(offsets[i] as number, offsets[i + 1] as number);
      return values.subarray(i * stride, (i + 1) * stride);
    },
  };
}

/**
 * A first-level index over the sorted hashes: entry b is the first entry whose hi has b
 * as its top `bits` bits (hashes are uniform, so ~256 entries per bucket). 16 KiB and
 * ~1 ms at 1M entries; built at open, not stored, so the file format does not change.
 */
function buildDirectory(hi: Uint32Array): { directory: Uint32Array; shift: number } {
  const n = hi.length;
  const bits = Math.max(0, Math.min(20, Math.ceil(Math.log2(Math.max(n, 1))) - 8));
  const shift = 32 - bits;
  const buckets = 2 ** bits;
  const directory = new Uint32Array(buckets + 1);
  let i = 0;
  for (let b = 0; b < buckets; b++) {
    directory[b] = i;
    const next = b + 1;
    // Advance to the first entry of bucket b + 1 (a linear walk: every entry visited once).
    while (i < n && (bits === 0 ? 0 : (hi[i] as number) >>> shift) < next) i++;
  }
  directory[buckets] = n;
  return { directory, shift };
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

/** Entries of a parsed table with explicit offsets (stride tables get them computed). */
export function entriesOf(table: TableView): TableEntries {
  const { hi, lo, values, offsets } = table.entries;
  if (offsets) return { hi, lo, values, offsets };
  const n = hi.length;
  const computed = new Uint32Array(n + 1);
  for (let i = 0; i <= n; i++) computed[i] = i * table.header.valueStride;
  return { hi, lo, values, offsets: computed };
}
