/**
 * Output decoding: raw output tensors → the named prediction a client sees, per the
 * manifest. Pure and browser-safe; the runtime, the table reader and tests share it.
 */
import type { MainOutputSpec, Manifest, OutputDefinition } from "./manifest.ts";
import { mainOutputOf } from "./manifest.ts";

export interface ClassesValue {
  label: string;
  probabilities: Record<string, number>;
}
export type OutputValue = number | ClassesValue;
export type Prediction = Record<string, OutputValue>;

/** Output tensor data by tensor name, each laid out [N, width]. */
export type OutputTensors = Record<string, { data: ArrayLike<number>; width: number }>;

function roundTo(value: number, digits: number): number {
  const f = 10 ** digits;
  const rounded = Math.round(value * f) / f;
  return rounded === 0 ? 0 : rounded; // no -0 in cached values
}

function decodeOne(
  output: OutputDefinition,
  tensor: OutputTensors[string],
  row: number,
): OutputValue {
  if (output.kind === "classes") {
    const labels = output.labels ?? [];
    const probabilities: Record<string, number> = {};
    let best = 0;
    labels.forEach((label, k) => {
      const p = Number(tensor.data[row * tensor.width + k]);
      probabilities[label] = roundTo(p, output.digits);
      if (p > Number(tensor.data[row * tensor.width + best])) best = k;
    });
    return { label: labels[best] ?? String(best), probabilities };
  }
  return roundTo(Number(tensor.data[row * tensor.width]), output.digits);
}

/** Decodes row `row` of a batch into a prediction. */
export function decodeRow(manifest: Manifest, tensors: OutputTensors, row: number): Prediction {
  const prediction: Prediction = {};
  for (const output of manifest.outputs) {
    const tensor = tensors[output.tensor];
    if (!tensor) throw new Error(`model produced no output tensor ${output.tensor}`);
    prediction[output.name] = decodeOne(output, tensor, row);
  }
  return prediction;
}

/**
 * The main output as one number, for distributions and comparisons: the value itself,
 * or the top class's probability for classes.
 */
export function mainValueOf(manifest: Manifest, prediction: Prediction): number | undefined {
  const value = prediction[mainOutputOf(manifest).name];
  if (typeof value === "number") return Number.isFinite(value) ? value : undefined;
  if (value && typeof value === "object") return Math.max(...Object.values(value.probabilities));
  return undefined;
}

/** Confidence of the main output: max(p, 1 − p) for a probability, the top class's probability for classes. */
export function confidenceOf(manifest: MainOutputSpec, prediction: Prediction): number | undefined {
  const main = mainOutputOf(manifest);
  const value = prediction[main.name];
  if (main.kind === "probability" && typeof value === "number") return Math.max(value, 1 - value);
  if (main.kind === "classes" && value && typeof value === "object") {
    return Math.max(...Object.values(value.probabilities));
  }
  return undefined;
}

/** True when the manifest sets a threshold and the main output's confidence is below it. */
export function isLowConfidence(manifest: MainOutputSpec, prediction: Prediction): boolean {
  if (manifest.confidenceThreshold === undefined) return false;
  const confidence = confidenceOf(manifest, prediction);
  return confidence !== undefined && confidence < manifest.confidenceThreshold;
}

/** Whether two predictions hold the same outputs (a prediction read again need not be rebuilt into a reply). */
export function samePrediction(a: Prediction, b: Prediction): boolean {
  if (a === b) return true;
  const names = Object.keys(a);
  if (names.length !== Object.keys(b).length) return false;
  for (const name of names) {
    const x = a[name];
    const y = b[name];
    if (typeof x === "number" || typeof y === "number") {
      if (x !== y) return false;
    } else if (!x || !y || !sameClasses(x, y)) return false;
  }
  return true;
}

function sameClasses(a: ClassesValue, b: ClassesValue): boolean {
  if (a.label !== b.label) return false;
  const labels = Object.keys(a.probabilities);
  if (labels.length !== Object.keys(b.probabilities).length) return false;
  return labels.every((label) => a.probabilities[label] === b.probabilities[label]);
}
