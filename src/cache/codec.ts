/**
 * Cached prediction values: msgpack of the output values in manifest order, so a stored
 * value carries no field names (they come from the manifest). Browser-safe.
 */
import { Packr } from "msgpackr";
import type { ClassesValue, OutputValue, Prediction } from "../model/decoding.ts";
import type { Manifest, OutputDefinition } from "../model/manifest.ts";

const packr = new Packr({ useRecords: false, variableMapSize: true });

export function encodePrediction(manifest: Manifest, prediction: Prediction): Buffer {
  return packr.pack(manifest.outputs.map((o) => prediction[o.name]));
}

/** A stored value that is not a prediction of this manifest (damaged bytes, another layout). */
export class CorruptEntryError extends TypeError {
  override readonly name = "CorruptEntryError";
}

/** Throws CorruptEntryError unless `bytes` hold one value of the right type per output. */
export function decodePrediction(manifest: Manifest, bytes: Uint8Array): Prediction {
  let values: unknown;
  try {
    values = packr.unpack(bytes);
  } catch (error) {
    throw new CorruptEntryError(`cached value is not msgpack: ${(error as Error).message}`);
  }
  if (!Array.isArray(values) || values.length !== manifest.outputs.length) {
    throw new CorruptEntryError("cached value does not match the manifest's outputs");
  }
  const prediction: Prediction = {};
  manifest.outputs.forEach((o, i) => {
    const value: unknown = values[i];
    if (!fits(o, value))
      throw new CorruptEntryError(`cached value of output ${o.name} is not a ${o.kind} value`);
    prediction[o.name] = value;
  });
  return prediction;
}

/** Whether `value` has the shape decoding.ts gives this output (a number, or label and probabilities). */
function fits(output: OutputDefinition, value: unknown): value is OutputValue {
  if (output.kind !== "classes") return typeof value === "number";
  if (typeof value !== "object" || value === null) return false;
  const { label, probabilities } = value as Partial<ClassesValue>;
  const labels = output.labels ?? [];
  if (typeof label !== "string" || !labels.includes(label)) return false;
  if (typeof probabilities !== "object" || probabilities === null) return false;
  const given = Object.keys(probabilities);
  return (
    given.length === labels.length &&
    labels.every((l) => typeof (probabilities as Record<string, unknown>)[l] === "number")
  );
}
