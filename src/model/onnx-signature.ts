/**
 * What an ONNX model declares it takes and gives (tensor names, element types, shapes),
 * read from its bytes without running it, and checked against the manifest: a version
 * whose manifest does not fit its model is refused when it is loaded, in every process
 * (an API process never starts an inference session), not found out by every miss
 * failing later. Decoding keeps the weights as views of the bytes: no copy.
 */
import onnxProto from "onnx-proto";
import type { Manifest } from "./manifest.ts";

const { onnx } = onnxProto;

export interface TensorSignature {
  name: string;
  /** ONNX's element type name (FLOAT, INT64…); undefined when not a tensor. */
  type: string | undefined;
  /** Each dimension: a size, a symbol (N), or undefined when unknown; undefined: no shape. */
  dims: (number | string | undefined)[] | undefined;
}

export interface OnnxSignature {
  inputs: TensorSignature[];
  outputs: TensorSignature[];
}

function dimOf(dim: onnxProto.onnx.TensorShapeProto.IDimension): number | string | undefined {
  if (dim.dimParam) return dim.dimParam;
  // A Long or a number; null or undefined when the dimension names neither (unknown).
  if (dim.dimValue !== undefined && dim.dimValue !== null) return Number(String(dim.dimValue));
  return undefined;
}

function signatureOf(info: onnxProto.onnx.IValueInfoProto): TensorSignature {
  const tensor = info.type?.tensorType;
  const code = tensor?.elemType;
  return {
    name: info.name ?? "",
    type: tensor && typeof code === "number" ? onnx.TensorProto.DataType[code] : undefined,
    dims: tensor?.shape ? (tensor.shape.dim ?? []).map(dimOf) : undefined,
  };
}

/** Throws when the bytes are not an ONNX model. */
export function onnxSignature(bytes: Uint8Array): OnnxSignature {
  const model = onnx.ModelProto.decode(bytes);
  if (!model.graph) throw new Error("not an ONNX model: no graph");
  // Models of IR < 4 list their weights (initializers) among the inputs too: not inputs
  // anyone feeds.
  const weights = new Set((model.graph.initializer ?? []).map((w) => w.name));
  return {
    inputs: (model.graph.input ?? []).filter((i) => !weights.has(i.name ?? "")).map(signatureOf),
    outputs: (model.graph.output ?? []).map(signatureOf),
  };
}

/** The ONNX element type of each manifest input dtype. */
const DTYPE_ELEMENT: Record<Manifest["encoding"]["input"]["dtype"], string> = {
  int64: "INT64",
  float32: "FLOAT",
};

/** Element types an output can be decoded from (decoding.ts reads them as numbers). */
const NUMERIC = new Set([
  "FLOAT",
  "DOUBLE",
  "FLOAT16",
  "BFLOAT16",
  "INT64",
  "INT32",
  "INT16",
  "INT8",
  "UINT8",
  "UINT16",
  "UINT32",
  "UINT64",
  "BOOL",
]);

/** Where the manifest does not fit the model, one line each; none when it does. */
export function signatureIssues(manifest: Manifest, signature: OnnxSignature): string[] {
  const issues: string[] = [];
  const { name, dtype } = manifest.encoding.input;
  const width = manifest.encoding.features.length;
  const input = signature.inputs.find((i) => i.name === name);
  const names = (list: TensorSignature[]) => list.map((t) => t.name).join(", ") || "none";
  if (!input) {
    issues.push(
      `the model has no input "${name}" (it has ${names(signature.inputs)}): encoding.input.name`,
    );
  } else {
    if (input.type !== DTYPE_ELEMENT[dtype])
      issues.push(
        `input "${name}" is ${input.type ?? "not a tensor"}, the manifest says ${dtype}: encoding.input.dtype`,
      );
    if (input.dims && input.dims.length !== 2)
      issues.push(`input "${name}" has ${input.dims.length} dimensions, not 2 ([rows, features])`);
    const rows = input.dims?.[0];
    // Batches of misses and of precompute rows vary in size: the row count must be free.
    if (input.dims?.length === 2 && typeof rows === "number")
      issues.push(
        `input "${name}" takes exactly ${rows} row${rows === 1 ? "" : "s"} per run: its first dimension must be free (a name like N)`,
      );
    const columns = input.dims?.[1];
    if (input.dims?.length === 2 && typeof columns === "number" && columns !== width)
      issues.push(
        `input "${name}" takes ${columns} features per row, the manifest lists ${width}: encoding.features`,
      );
  }
  for (const output of manifest.outputs) {
    const found = signature.outputs.find((o) => o.name === output.tensor);
    if (!found)
      issues.push(
        `the model has no output "${output.tensor}" (it has ${names(signature.outputs)}): outputs[].tensor`,
      );
    else if (!found.type || !NUMERIC.has(found.type))
      issues.push(`output "${output.tensor}" is ${found.type ?? "not a tensor"}, not numbers`);
  }
  return issues;
}
