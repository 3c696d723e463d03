/**
 * Cached prediction values: msgpack of the output values in manifest order, so a stored
 * value carries no field names (they come from the manifest). Browser-safe.
 */
import { Packr } from "msgpackr";
import type { OutputValue, Prediction } from "../model/decoding.ts";
import type { Manifest } from "../model/manifest.ts";

const packr = new Packr({ useRecords: false, variableMapSize: true });

export function encodePrediction(manifest: Manifest, prediction: Prediction): Buffer {
  return packr.pack(manifest.outputs.map((o) => prediction[o.name]));
}

export function decodePrediction(manifest: Manifest, bytes: Uint8Array): Prediction {
  const values: unknown = packr.unpack(bytes);
  if (!Array.isArray(values) || values.length !== manifest.outputs.length) {
    throw new TypeError("cached value does not match the manifest's outputs");
  }
  const prediction: Prediction = {};
  manifest.outputs.forEach((o, i) => {
    prediction[o.name] = values[i] as OutputValue;
  });
  return prediction;
}
