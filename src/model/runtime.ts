/**
 * One onnxruntime-node session per model version, run on batches of feature rows and
 * decoded per the manifest. Counts its runs and rows, so tests and metrics can tell how
 * many inferences the cache actually saved.
 */
import * as ort from "onnxruntime-node";
import { decodeRow, type Prediction } from "./decoding.ts";
import type { Manifest } from "./manifest.ts";

export interface RuntimeOptions {
  /** Threads inside one run; 1 keeps single-row latency predictable on small machines. */
  intraOpThreads?: number;
}

export interface RuntimeStats {
  runs: number;
  rows: number;
}

/**
 * How every session is made, here and in inference threads (./inference-thread.ts).
 * onnxruntime logs only what is fatal: a run that fails rejects with its message, which
 * the worker's JSON log carries; onnxruntime's own lines on stderr would sit between
 * those, in another format.
 */
export function sessionOptions(intraOpThreads: number | undefined) {
  return {
    ...(intraOpThreads === undefined ? {} : { intraOpNumThreads: intraOpThreads }),
    interOpNumThreads: 1,
    executionMode: "sequential",
    graphOptimizationLevel: "all",
    logSeverityLevel: 4,
  } satisfies ort.InferenceSession.SessionOptions;
}

export class ModelRuntime {
  readonly stats: RuntimeStats = { runs: 0, rows: 0 };

  private constructor(
    readonly manifest: Manifest,
    private readonly session: ort.InferenceSession,
  ) {}

  static async load(
    manifest: Manifest,
    model: Uint8Array,
    options: RuntimeOptions = {},
  ): Promise<ModelRuntime> {
    const session = await ort.InferenceSession.create(
      model,
      sessionOptions(options.intraOpThreads ?? 1),
    );
    // That the manifest fits the model was checked when its version was loaded
    // (onnx-signature.ts): names, element type and width of the input, the outputs.
    return new ModelRuntime(manifest, session);
  }

  /** The input tensor for rows, laid out [N, features] in the manifest's dtype. */
  inputTensor(rows: readonly (readonly number[])[]): ort.Tensor {
    const width = this.manifest.encoding.features.length;
    const flat = rows.flat();
    if (flat.length !== rows.length * width) throw new Error(`every row must have ${width} values`);
    return this.manifest.encoding.input.dtype === "int64"
      ? new ort.Tensor(
          "int64",
          BigInt64Array.from(flat, (v) => BigInt(v)),
          [rows.length, width],
        )
      : new ort.Tensor("float32", Float32Array.from(flat), [rows.length, width]);
  }

  /** Runs every row in one inference call; returns one prediction per row, in order. */
  async run(rows: readonly (readonly number[])[]): Promise<Prediction[]> {
    if (rows.length === 0) return [];
    const outputs = await this.session.run({
      [this.manifest.encoding.input.name]: this.inputTensor(rows),
    });
    this.stats.runs++;
    this.stats.rows += rows.length;
    const tensors: Record<string, { data: ArrayLike<number>; width: number }> = {};
    for (const [name, tensor] of Object.entries(outputs)) {
      const data = tensor.data;
      if (typeof data === "string" || (Array.isArray(data) && typeof data[0] === "string"))
        continue;
      tensors[name] = { data: data as ArrayLike<number>, width: tensor.dims[1] ?? 1 };
    }
    return rows.map((_, i) => decodeRow(this.manifest, tensors, i));
  }

  async close(): Promise<void> {
    await this.session.release();
  }
}
