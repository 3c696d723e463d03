/**
 * Table values as fixed-point integers (docs/table-format.md §4). Every output value was
 * rounded to its manifest's `digits` (src/model/decoding.ts), so value × 10^digits is an
 * exact integer: a table stores, per column, that integer minus the table's minimum, in
 * as few bits as the table's range needs. A prediction maps to columns in output order:
 * one per probability/regression output; for a classes output, one per class probability
 * (label order) then the top label's index. Browser-safe.
 */
import type { ClassesValue, Prediction } from "../model/decoding.ts";
import type { OutputDefinition } from "../model/manifest.ts";

export interface ColumnSpec {
  /** number: a probability/regression output; class: one class probability; label: the label index. */
  kind: "number" | "class" | "label";
  /** 10^digits (1 for a label index): value = integer / scale. */
  scale: number;
}

/** A packed column as the header states it: the table's minimum integer and the field width. */
export interface PackedColumn {
  min: number;
  bits: number;
}

export const MAX_COLUMN_BITS = 53;
const TWO_32 = 4294967296;

/**
 * The columns of these outputs, or undefined when their values cannot be packed at all
 * (a classes output whose labels repeat: its probabilities object could not hold them).
 */
export function columnSpecs(outputs: readonly OutputDefinition[]): ColumnSpec[] | undefined {
  const specs: ColumnSpec[] = [];
  for (const output of outputs) {
    const scale = 10 ** output.digits;
    if (output.kind !== "classes") {
      specs.push({ kind: "number", scale });
      continue;
    }
    const labels = output.labels ?? [];
    if (labels.length === 0 || new Set(labels).size !== labels.length) return undefined;
    for (let k = 0; k < labels.length; k++) specs.push({ kind: "class", scale });
    specs.push({ kind: "label", scale: 1 });
  }
  return specs;
}

/** Two tables' values can be re-based onto each other when their columns mean the same. */
export function sameColumns(a: readonly ColumnSpec[], b: readonly ColumnSpec[]): boolean {
  return (
    a.length === b.length && a.every((s, i) => s.kind === b[i]?.kind && s.scale === b[i].scale)
  );
}

/** The integer I with I / scale === value exactly (I safe, no −0), or undefined. */
export function fixedPoint(value: unknown, scale: number): number | undefined {
  if (typeof value !== "number" || !Number.isFinite(value) || Object.is(value, -0))
    return undefined;
  const i = Math.round(value * scale);
  if (!Number.isSafeInteger(i) || i / scale !== value) return undefined;
  return i === 0 ? 0 : i; // Math.round(-0.4) is −0
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function sameKeys(object: Record<string, unknown>, keys: readonly string[]): boolean {
  const own = Object.keys(object);
  return own.length === keys.length && own.every((k, i) => k === keys[i]);
}

const CLASSES_KEYS = ["label", "probabilities"];

/**
 * Writes the columns of one prediction's output values (in output order) at `into[at…]`.
 * False when a value cannot be stored exactly as fixed-point (the table then keeps msgpack
 * values): not a finite number with at most `digits` decimals, an unsafe integer, −0, or a
 * classes value that is not exactly `{label, probabilities: {<each label, in order>}}`.
 */
export function toColumns(
  outputs: readonly OutputDefinition[],
  values: readonly unknown[],
  into: Float64Array,
  at: number,
): boolean {
  let c = at;
  for (let k = 0; k < outputs.length; k++) {
    const output = outputs[k] as OutputDefinition;
    const value = values[k];
    const scale = 10 ** output.digits;
    if (output.kind !== "classes") {
      const i = fixedPoint(value, scale);
      if (i === undefined) return false;
      into[c++] = i;
      continue;
    }
    const labels = output.labels ?? [];
    if (!isPlainObject(value) || !sameKeys(value, CLASSES_KEYS)) return false;
    const probabilities = value.probabilities;
    if (!isPlainObject(probabilities) || !sameKeys(probabilities, labels)) return false;
    for (const label of labels) {
      const i = fixedPoint(probabilities[label], scale);
      if (i === undefined) return false;
      into[c++] = i;
    }
    const index = typeof value.label === "string" ? labels.indexOf(value.label) : -1;
    if (index < 0) return false;
    into[c++] = index;
  }
  return true;
}

/** The prediction columns `from[at…]` stand for (the inverse of toColumns). */
export function fromColumns(
  outputs: readonly OutputDefinition[],
  from: ArrayLike<number>,
  at: number,
): Prediction {
  const prediction: Prediction = {};
  let c = at;
  for (const output of outputs) {
    const scale = 10 ** output.digits;
    if (output.kind !== "classes") {
      prediction[output.name] = (from[c++] as number) / scale;
      continue;
    }
    const labels = output.labels ?? [];
    const probabilities: Record<string, number> = {};
    for (const label of labels) probabilities[label] = (from[c++] as number) / scale;
    const value: ClassesValue = { label: labels[from[c++] as number] as string, probabilities };
    prediction[output.name] = value;
  }
  return prediction;
}

/** Bits needed for integers 0 … span (span a safe integer ≥ 0). */
export function bitLength(span: number): number {
  if (span < TWO_32) return 32 - Math.clz32(span);
  return 64 - Math.clz32(Math.floor(span / TWO_32));
}

/**
 * The columns a table of these values states: per column the minimum and the bits of
 * (maximum − minimum). Undefined when one would not fit the format's limits (then the
 * table keeps msgpack values): a field wider than 53 bits, or min + 2^bits − 1 unsafe.
 */
export function packedColumns(
  ints: Float64Array,
  count: number,
  columns: number,
): PackedColumn[] | undefined {
  const out: PackedColumn[] = [];
  for (let c = 0; c < columns; c++) {
    let min = count > 0 ? (ints[c] as number) : 0;
    let max = min;
    for (let i = 1; i < count; i++) {
      const v = ints[i * columns + c] as number;
      if (v < min) min = v;
      else if (v > max) max = v;
    }
    const span = max - min;
    if (!Number.isSafeInteger(span)) return undefined;
    const bits = bitLength(span);
    if (!columnFits(min, bits)) return undefined;
    out.push({ min, bits });
  }
  return out;
}

/** The format's limit on a column (§2): every field value decodes to a safe integer. */
export function columnFits(min: number, bits: number): boolean {
  return (
    Number.isSafeInteger(min) &&
    Number.isInteger(bits) &&
    bits >= 0 &&
    bits <= MAX_COLUMN_BITS &&
    min >= -Number.MAX_SAFE_INTEGER &&
    min <= Number.MAX_SAFE_INTEGER - (2 ** bits - 1)
  );
}

/** u32 words of a packed values section of `count` records of `recordBits` bits (§4). */
export function packedWordCount(count: number, recordBits: number): number {
  return Math.ceil((count * recordBits) / 32) + 1;
}

/** Writes the low `bits` (≤ 32) bits of `value` at bit `p` of the LSB-first stream. */
function writeSmall(words: Uint32Array, p: number, bits: number, value: number): void {
  if (bits === 0) return;
  const s = p & 31;
  const w = (p - s) / 32;
  words[w] = (words[w] as number) | (value << s);
  if (s + bits > 32) words[w + 1] = (words[w + 1] as number) | (value >>> (32 - s));
}

/** Reads `bits` (≤ 32) bits at bit `p` of the LSB-first stream, as an unsigned number. */
export function readSmall(words: Uint32Array, p: number, bits: number): number {
  if (bits === 0) return 0;
  const s = p & 31;
  const w = (p - s) / 32;
  let v = (words[w] as number) >>> s;
  if (s + bits > 32) v |= (words[w + 1] as number) << (32 - s);
  return bits === 32 ? v >>> 0 : v & ((1 << bits) - 1); // bits 31: the mask wraps to 0x7fffffff
}

/** Writes a field of up to 53 bits. */
export function writeField(words: Uint32Array, p: number, bits: number, value: number): void {
  if (bits <= 32) {
    writeSmall(words, p, bits, value);
    return;
  }
  writeSmall(words, p, 32, value % TWO_32);
  writeSmall(words, p + 32, bits - 32, Math.floor(value / TWO_32));
}

/** Reads a field of up to 53 bits. */
export function readField(words: Uint32Array, p: number, bits: number): number {
  if (bits <= 32) return readSmall(words, p, bits);
  return readSmall(words, p, 32) + readSmall(words, p + 32, bits - 32) * TWO_32;
}

/**
 * Packs `count` rows of integer columns into a values section: record i at bit
 * i × Σbits, its fields in column order, each (value − min) LSB first; zero padding.
 * Throws when a value is outside its column (a caller's mistake, or a bad delta).
 */
export function packColumns(
  ints: Float64Array,
  count: number,
  columns: readonly PackedColumn[],
): Uint32Array {
  const recordBits = columns.reduce((sum, c) => sum + c.bits, 0);
  const words = new Uint32Array(packedWordCount(count, recordBits));
  const width = columns.length;
  for (let i = 0; i < count; i++) {
    let p = i * recordBits;
    for (let c = 0; c < width; c++) {
      const { min, bits } = columns[c] as PackedColumn;
      const field = (ints[i * width + c] as number) - min;
      if (!(field >= 0 && field <= 2 ** bits - 1))
        throw new RangeError(`value ${ints[i * width + c]} does not fit column ${c}`);
      writeField(words, p, bits, field);
      p += bits;
    }
  }
  return words;
}
