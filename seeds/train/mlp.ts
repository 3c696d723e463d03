/**
 * The demo network: one embedding table shared by all categorical-like columns (each
 * column offset into its own slice), then a ReLU MLP with two heads: a delay logit and
 * a standardized delay in minutes. Two graphs are built from the same weights layout:
 * the inference graph shipped in seeds/models, and a training graph that also returns
 * the gradients (backpropagation written out by hand, so onnxruntime does the heavy
 * matrix work while training and no training framework is needed).
 */
import { GraphBuilder } from "./onnx-graph.ts";

export interface MlpShape {
  /** Vocabulary size of each input column (index 0 of each is its out-of-vocabulary slot). */
  columnSizes: number[];
  embeddingDim: number;
  hidden: number[];
}

export interface MlpWeights {
  embedding: Float32Array;
  layers: { w: Float32Array; b: Float32Array; inDim: number; outDim: number }[];
}

export function columnOffsets(shape: MlpShape): number[] {
  const offsets: number[] = [];
  let total = 0;
  for (const size of shape.columnSizes) {
    offsets.push(total);
    total += size;
  }
  return offsets;
}

export function embeddingRows(shape: MlpShape): number {
  return shape.columnSizes.reduce((a, b) => a + b, 0);
}

/** Deterministic PRNG (mulberry32) so training is reproducible. */
export function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function gaussian(random: () => number): number {
  const u = Math.max(random(), 1e-12);
  return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * random());
}

export function initWeights(shape: MlpShape, seed: number): MlpWeights {
  const random = rng(seed);
  const embedding = new Float32Array(embeddingRows(shape) * shape.embeddingDim);
  for (let i = 0; i < embedding.length; i++) embedding[i] = gaussian(random) * 0.1;
  const dims = [shape.columnSizes.length * shape.embeddingDim, ...shape.hidden, 2];
  const layers = [];
  for (let l = 0; l + 1 < dims.length; l++) {
    const inDim = dims[l] as number;
    const outDim = dims[l + 1] as number;
    const w = new Float32Array(inDim * outDim);
    const scale = Math.sqrt(2 / inDim); // He initialisation for ReLU layers
    for (let i = 0; i < w.length; i++) w[i] = gaussian(random) * scale;
    layers.push({ w, b: new Float32Array(outDim), inDim, outDim });
  }
  return { embedding, layers };
}

/** Embedding lookup + MLP; returns the [N,2] head output. */
function body(
  g: GraphBuilder,
  shape: MlpShape,
  idx: string,
  names: WeightNames,
): { out: string; acts: Activation[] } {
  const width = shape.columnSizes.length * shape.embeddingDim;
  const e = g.op1("Gather", [names.embedding, idx], { axis: 0 });
  const flatShape = g.int64s(`shape_${width}`, [2], [-1, width]);
  let x = g.op1("Reshape", [e, flatShape]);
  const acts: Activation[] = [];
  names.layers.forEach((layer, l) => {
    const z = g.op1("Gemm", [x, layer.w, layer.b]);
    acts.push({ input: x, z });
    x = l + 1 < names.layers.length ? g.op1("Relu", [z]) : z;
  });
  return { out: x, acts };
}

interface WeightNames {
  embedding: string;
  layers: { w: string; b: string }[];
}
interface Activation {
  input: string;
  z: string;
}

/** The serving graph: int64 features [N, columns] → delay_probability [N], expected_delay_minutes [N]. */
export function inferenceGraph(
  shape: MlpShape,
  weights: MlpWeights,
  delayScale: { mean: number; std: number },
  doc: string,
): Uint8Array {
  const g = new GraphBuilder();
  const columns = shape.columnSizes.length;
  const features = g.input("features", "int64", ["N", columns]);
  const offsets = g.int64s("column_offsets", [columns], columnOffsets(shape));
  const idx = g.op1("Add", [features, offsets]);
  const names: WeightNames = {
    embedding: g.floats("embedding", [embeddingRows(shape), shape.embeddingDim], weights.embedding),
    layers: weights.layers.map((layer, l) => ({
      w: g.floats(`w${l}`, [layer.inDim, layer.outDim], layer.w),
      b: g.floats(`b${l}`, [layer.outDim], layer.b),
    })),
  };
  const { out } = body(g, shape, idx, names);
  const split = g.int64s("split_sizes", [2], [1, 1]);
  const [logit, standardized] = g.op("Split", [out, split], { axis: 1 }, ["logit", "delay_std"]);
  const axis1 = g.int64s("axis_1", [1], [1]);
  g.op1("Sigmoid", [g.op1("Squeeze", [logit as string, axis1])], {}, "delay_probability");
  const std = g.floats("delay_scale_std", [], Float32Array.of(delayScale.std));
  const mean = g.floats("delay_scale_mean", [], Float32Array.of(delayScale.mean));
  const scaled = g.op1("Mul", [g.op1("Squeeze", [standardized as string, axis1]), std]);
  g.op1("Add", [scaled, mean], {}, "expected_delay_minutes");
  g.output("delay_probability", "float", ["N"]);
  g.output("expected_delay_minutes", "float", ["N"]);
  return g.serialize("flight_delay_mlp", doc);
}

/**
 * The training graph. Inputs: idx (global embedding rows, [N, columns]), every weight,
 * targets [N,2] (late 0/1, standardized delay) and gradScale [1,2] (1/N per head, times
 * the head's loss weight). Outputs: head predictions P [N,2] (probability, standardized
 * delay), the gradient of every layer weight and bias, and the gradient w.r.t. the
 * flattened embeddings [N, columns*dim], which the trainer scatters into the table.
 */
export function trainingGraph(shape: MlpShape): Uint8Array {
  const g = new GraphBuilder();
  const columns = shape.columnSizes.length;
  const dims = [columns * shape.embeddingDim, ...shape.hidden, 2];
  const idx = g.input("idx", "int64", ["N", columns]);
  const names: WeightNames = {
    embedding: g.input("embedding", "float", [embeddingRows(shape), shape.embeddingDim]),
    layers: dims.slice(1).map((outDim, l) => ({
      w: g.input(`w${l}`, "float", [dims[l] as number, outDim]),
      b: g.input(`b${l}`, "float", [outDim]),
    })),
  };
  const targets = g.input("targets", "float", ["N", 2]);
  const gradScale = g.input("grad_scale", "float", [1, 2]);
  const { out, acts } = body(g, shape, idx, names);
  const split = g.int64s("split_sizes", [2], [1, 1]);
  const [logit, standardized] = g.op("Split", [out, split], { axis: 1 }, ["logit", "delay_std"]);
  const p = g.op1("Sigmoid", [logit as string]);
  g.op1("Concat", [p, standardized as string], { axis: 1 }, "P");
  g.output("P", "float", ["N", 2]);
  // d(BCE-with-logits)/d(logit) = p - y ; d(½(ŷ-t)²)/dŷ = ŷ - t
  let dz = g.op1("Mul", [g.op1("Sub", ["P", targets]), gradScale]);
  const zero = g.floats("zero", [], Float32Array.of(0));
  const axis0 = g.int64s("axis_0", [1], [0]);
  for (let l = names.layers.length - 1; l >= 0; l--) {
    const layer = names.layers[l];
    const act = acts[l];
    if (!layer || !act) throw new Error("layer mismatch");
    g.op1("Gemm", [act.input, dz], { transA: 1 }, `grad_w${l}`);
    g.op1("ReduceSum", [dz, axis0], { keepdims: 0 }, `grad_b${l}`);
    g.output(`grad_w${l}`, "float", [dims[l] as number, dims[l + 1] as number]);
    g.output(`grad_b${l}`, "float", [dims[l + 1] as number]);
    const dx = g.op1("Gemm", [dz, layer.w], { transB: 1 }, l === 0 ? "grad_x0" : undefined);
    if (l > 0) {
      const prev = acts[l - 1];
      if (!prev) throw new Error("layer mismatch");
      const active = g.op1("Greater", [prev.z, zero]);
      dz = g.op1("Where", [active, dx, zero]);
    }
  }
  g.output("grad_x0", "float", ["N", dims[0] as number]);
  return g.serialize("flight_delay_mlp_training", "training graph (not shipped)");
}
