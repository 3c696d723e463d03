import { copyFile, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import * as ort from "onnxruntime-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { loadModelVersion, ModelRegistry, type ModelVersion } from "../../src/model/registry.ts";
import type { ModelRuntime } from "../../src/model/runtime.ts";

const modelsDir = "seeds/models";
let registry: ModelRegistry;
let model: ModelVersion;
let runtime: ModelRuntime;

/** Real rows of the demo encoding, including an unknown airport and edge hours. */
function demoRows(): number[][] {
  const inputs = [
    { origin: "SFO", destination: "LAX", hour: 7, dayOfWeek: 1 },
    { origin: "ORD", destination: "ATL", hour: 18, dayOfWeek: 5 },
    { origin: "JFK", destination: "SFO", hour: 0, dayOfWeek: 7 },
    { origin: "ZZZ", destination: "DEN", hour: 23, dayOfWeek: 3 },
    { origin: "DFW", destination: "ORD", hour: 12, dayOfWeek: 2 },
  ];
  return inputs.map((input) => {
    const outcome = model.encoder.encode(input);
    if (!outcome.ok) throw new Error(JSON.stringify(outcome.issues));
    return outcome.value.row;
  });
}

beforeAll(async () => {
  registry = await ModelRegistry.fromDirectory(modelsDir);
  const found = registry.defaultVersion("flight-delay");
  if (!found) throw new Error("demo model missing");
  model = found;
  runtime = await registry.runtime(model);
});
afterAll(() => registry.close());

describe("model runtime", () => {
  it("gives a batch run the same predictions as the rows run one by one", async () => {
    const rows = demoRows();
    const batch = await runtime.run(rows);
    const single = [];
    for (const row of rows) single.push(...(await runtime.run([row])));
    expect(batch).toEqual(single);
    expect(new Set(batch.map((p) => JSON.stringify(p))).size).toBe(rows.length);
  });

  it("decodes outputs equal to a direct onnxruntime call on a hand-built tensor", async () => {
    const rows = demoRows();
    const bytes = await readFile(join(model.directory, model.manifest.model));
    const session = await ort.InferenceSession.create(bytes);
    const tensor = new ort.Tensor("int64", BigInt64Array.from(rows.flat(), BigInt), [
      rows.length,
      4,
    ]);
    const raw = await session.run({ features: tensor });
    const probability = raw.delay_probability?.data as Float32Array;
    const minutes = raw.expected_delay_minutes?.data as Float32Array;
    const decoded = await runtime.run(rows);
    decoded.forEach((prediction, i) => {
      expect(prediction.delayProbability).toBeCloseTo(probability[i] as number, 4);
      expect(prediction.expectedDelayMinutes).toBeCloseTo(minutes[i] as number, 1);
      expect(prediction.delayProbability).toBeGreaterThanOrEqual(0);
      expect(prediction.delayProbability).toBeLessThanOrEqual(1);
    });
    await session.release();
  });

  it("counts runs and rows", async () => {
    const before = { ...runtime.stats };
    await runtime.run(demoRows());
    expect(runtime.stats.runs - before.runs).toBe(1);
    expect(runtime.stats.rows - before.rows).toBe(5);
  });

  it("versions by content: a new label keeps the version, a new output decoding changes it", async () => {
    expect(model.version).toMatch(/^[0-9a-f]{12}$/);
    const dir = await mkdtemp(join(tmpdir(), "predcache-registry-"));
    const manifest = JSON.parse(await readFile(join(model.directory, "manifest.json"), "utf8"));
    await copyFile(join(model.directory, "model.onnx"), join(dir, "model.onnx"));
    await writeFile(join(dir, "manifest.json"), JSON.stringify({ ...manifest, label: "renamed" }));
    expect((await loadModelVersion(dir)).model.version).toBe(model.version);
    manifest.outputs[0].digits = 2;
    await writeFile(join(dir, "manifest.json"), JSON.stringify(manifest));
    expect((await loadModelVersion(dir)).model.version).not.toBe(model.version);
    await rm(dir, { recursive: true });
  });

  it("refuses a manifest that names an output the model lacks, naming the field to fix", async () => {
    const dir = await mkdtemp(join(tmpdir(), "predcache-registry-"));
    const manifest = JSON.parse(await readFile(join(model.directory, "manifest.json"), "utf8"));
    manifest.outputs[0].tensor = "no_such_tensor";
    await copyFile(join(model.directory, "model.onnx"), join(dir, "model.onnx"));
    await writeFile(join(dir, "manifest.json"), JSON.stringify(manifest));
    // At load, before any inference session (an API process starts none).
    await expect(loadModelVersion(dir)).rejects.toThrow(
      /does not fit its model:\n.*no_such_tensor.*outputs\[\]\.tensor/,
    );
    await rm(dir, { recursive: true });
  });

  it("refuses an invalid manifest with every problem and its path", async () => {
    const dir = await mkdtemp(join(tmpdir(), "predcache-registry-"));
    await writeFile(
      join(dir, "manifest.json"),
      JSON.stringify({
        name: "Bad Name",
        encoding: { input: { name: "x", dtype: "int8" }, features: [] },
      }),
    );
    await expect(loadModelVersion(dir)).rejects.toThrow(/name:.*\n.*encoding\.input\.dtype/s);
    await rm(dir, { recursive: true });
  });
});
