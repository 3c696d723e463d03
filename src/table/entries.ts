/**
 * Collects a table's entries in input order as typed arrays (no object per entry): the
 * key hashes, and the values as fixed-point integer columns as long as every value allows
 * it, else as msgpack (the whole table then falls back). What the table builder and the
 * table bench fill before sorting. Browser-safe.
 */
import type { OutputDefinition } from "../model/manifest.ts";
import {
  columnsOf,
  compareTableHash,
  type EntryValues,
  hashOrder,
  msgpackValueAt,
  packValue,
  type TableEntries,
  type TableView,
  valuePackr,
} from "./format.ts";
import { columnSpecs, fromColumns, sameColumns, toColumns } from "./values.ts";

function grow<T extends Uint32Array | Float64Array | Uint8Array>(array: T, length: number): T {
  const bigger = new (array.constructor as new (n: number) => T)(length);
  bigger.set(array);
  return bigger;
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

export class EntryCollector {
  private readonly width: number;
  private hi = new Uint32Array(1024);
  private lo = new Uint32Array(1024);
  /** Packed mode: entry i's columns at ints[i × width …]. Undefined once values fell back. */
  private ints: Float64Array | undefined;
  private bytes: Uint8Array | undefined;
  private offsets: Uint32Array | undefined;
  private readonly row: Float64Array;
  count = 0;

  constructor(private readonly outputs: readonly OutputDefinition[]) {
    const specs = columnSpecs(outputs);
    this.width = specs?.length ?? 0;
    this.row = new Float64Array(this.width);
    if (specs) this.ints = new Float64Array(1024 * this.width);
    else this.fallBack();
  }

  /** True while every value so far packs as fixed-point columns. */
  get packed(): boolean {
    return this.ints !== undefined;
  }

  private room(): void {
    if (this.count < this.hi.length) return;
    this.hi = grow(this.hi, this.hi.length * 2);
    this.lo = grow(this.lo, this.lo.length * 2);
    if (this.ints) this.ints = grow(this.ints, this.hi.length * this.width);
    if (this.offsets) this.offsets = grow(this.offsets, this.hi.length + 1);
  }

  private pushHash(hi: number, lo: number): void {
    this.hi[this.count] = hi;
    this.lo[this.count] = lo;
    this.count++;
  }

  /** Adds an entry: its key hash and its output values in output order. */
  push(hi: number, lo: number, values: readonly unknown[]): void {
    this.room();
    if (this.ints && toColumns(this.outputs, values, this.ints, this.count * this.width)) {
      this.pushHash(hi, lo);
      return;
    }
    this.pushBytes(hi, lo, packValue(values));
  }

  /** Adds an entry from its msgpack value (a version 1 or msgpack table's). */
  pushMsgpack(hi: number, lo: number, value: Uint8Array): void {
    this.room();
    if (this.ints) {
      let decoded: unknown;
      try {
        decoded = valuePackr.unpack(value);
      } catch {
        decoded = undefined;
      }
      if (
        Array.isArray(decoded) &&
        decoded.length === this.outputs.length &&
        toColumns(this.outputs, decoded, this.ints, this.count * this.width)
      ) {
        this.pushHash(hi, lo);
        return;
      }
    }
    this.pushBytes(hi, lo, value);
  }

  /** Adds an entry from integer columns (a packed table's, with the same columns). */
  pushColumns(hi: number, lo: number, ints: Float64Array, at: number): void {
    this.room();
    if (this.ints) {
      this.ints.set(ints.subarray(at, at + this.width), this.count * this.width);
      this.pushHash(hi, lo);
      return;
    }
    for (let c = 0; c < this.width; c++) this.row[c] = ints[at + c] as number;
    const prediction = fromColumns(this.outputs, this.row, 0);
    this.pushBytes(hi, lo, packValue(this.outputs.map((o) => prediction[o.name])));
  }

  /** Adds every entry of a table (a builder's base), with the hashes it stores. */
  pushTable(table: TableView): void {
    const { hi, lo } = table.hashes();
    const values = table.values;
    const specs = columnSpecs(this.outputs);
    if (values.kind === "packed" && specs && sameColumns(values.specs, specs)) {
      const ints = columnsOf(values, table.size);
      for (let i = 0; i < table.size; i++)
        this.pushColumns(hi[i] as number, lo[i] as number, ints, i * values.columns.length);
    } else if (values.kind === "msgpack") {
      for (let i = 0; i < table.size; i++)
        this.pushMsgpack(hi[i] as number, lo[i] as number, msgpackValueAt(values, i));
    } else {
      for (let i = 0; i < table.size; i++) {
        const prediction = table.prediction(i);
        this.push(
          hi[i] as number,
          lo[i] as number,
          this.outputs.map((o) => prediction[o.name]),
        );
      }
    }
  }

  private pushBytes(hi: number, lo: number, value: Uint8Array): void {
    if (this.ints) this.fallBack();
    const offsets = this.offsets as Uint32Array;
    const at = offsets[this.count] as number;
    let bytes = this.bytes as Uint8Array;
    if (at + value.length > bytes.length)
      bytes = this.bytes = grow(bytes, Math.max(bytes.length * 2, at + value.length));
    bytes.set(value, at);
    offsets[this.count + 1] = at + value.length;
    this.pushHash(hi, lo);
  }

  /** A value cannot be packed: every value so far becomes msgpack, and so will the rest. */
  private fallBack(): void {
    const ints = this.ints;
    this.ints = undefined;
    this.offsets = new Uint32Array(this.hi.length + 1);
    this.bytes = new Uint8Array(16 * 1024);
    const n = this.count;
    this.count = 0;
    for (let i = 0; i < n && ints; i++) {
      const prediction = fromColumns(this.outputs, ints, i * this.width);
      this.pushBytes(
        this.hi[i] as number,
        this.lo[i] as number,
        packValue(this.outputs.map((o) => prediction[o.name])),
      );
    }
  }

  /** Whether entries a and b (positions) hold the same value. */
  sameValue(a: number, b: number): boolean {
    const ints = this.ints;
    if (ints) {
      for (let c = 0; c < this.width; c++)
        if (ints[a * this.width + c] !== ints[b * this.width + c]) return false;
      return true;
    }
    const offsets = this.offsets as Uint32Array;
    const bytes = this.bytes as Uint8Array;
    const value = (i: number) => bytes.subarray(offsets[i] as number, offsets[i + 1] as number);
    return sameBytes(value(a), value(b));
  }

  hashHi(i: number): number {
    return this.hi[i] as number;
  }

  hashLo(i: number): number {
    return this.lo[i] as number;
  }

  /** The entries collected, in input order (views over the collector's arrays). */
  entries(): TableEntries {
    const n = this.count;
    const values: EntryValues = this.ints
      ? { kind: "packed", columns: this.width, ints: this.ints.subarray(0, n * this.width) }
      : {
          kind: "msgpack",
          bytes: (this.bytes as Uint8Array).subarray(0, (this.offsets as Uint32Array)[n]),
          offsets: (this.offsets as Uint32Array).subarray(0, n + 1),
        };
    return { hi: this.hi.subarray(0, n), lo: this.lo.subarray(0, n), values };
  }
}

/**
 * Which collected entries the table keeps, in table-hash order. Entries sharing a 56-bit
 * table hash (docs/table-format.md §3) are settled here, without a set of keys:
 * - run entries with one 64-bit hash are one key read twice: one value, kept once (two
 *   values under one 64-bit hash are two keys: the build fails, as before);
 * - run entries with different 64-bit hashes are different keys the table cannot tell
 *   apart: none of them is kept, nor the previous table's entry (they are left to the
 *   server, always correctly);
 * - a run entry replaces the previous table's entry with its table hash (the base stores
 *   56 bits only: a different key there collides exactly as an uncovered lookup would);
 * - two previous entries with one table hash (a version 1 base) are both dropped.
 */
export function settleEntries(
  collected: EntryCollector,
  baseCount: number,
  generation: string,
): { order: Uint32Array; changed: boolean; dropped: Set<string> } {
  const n = collected.count;
  const order = hashOrder(collected.entries().hi, collected.entries().lo, n);
  const kept = new Uint32Array(n);
  const dropped = new Set<string>();
  let count = 0;
  let changed = false;
  for (let g = 0; g < n; ) {
    const first = order[g] as number;
    let end = g + 1;
    while (
      end < n &&
      compareTableHash(
        collected.hashHi(first),
        collected.hashLo(first),
        collected.hashHi(order[end] as number),
        collected.hashLo(order[end] as number),
      ) === 0
    )
      end++;
    // Positions ascend within a group: base entries (< baseCount) come first.
    let bases = 0;
    let run = -1;
    let keys = 0;
    for (let k = g; k < end; k++) {
      const at = order[k] as number;
      if (at < baseCount) {
        bases++;
        continue;
      }
      if (run < 0 || collected.hashLo(at) !== collected.hashLo(run)) keys++;
      else if (!collected.sameValue(run, at))
        throw new Error(`table ${generation}: two keys share one 64-bit hash`);
      run = at;
    }
    if (keys > 1 || (keys === 0 && bases > 1)) {
      dropped.add(`${collected.hashHi(first)}:${collected.hashLo(first) >>> 8}`);
      changed = true;
    } else if (run >= 0) {
      if (bases === 0 || !collected.sameValue(first, run)) changed = true;
      kept[count++] = run;
    } else {
      kept[count++] = first;
    }
    g = end;
  }
  return { order: kept.slice(0, count), changed, dropped };
}
