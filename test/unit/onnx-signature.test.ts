import { readFile } from "node:fs/promises";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { type Dim, type ElemType, GraphBuilder } from "../../seeds/train/onnx-graph.ts";
import { manifestSchema } from "../../src/model/manifest.ts";
import { onnxSignature, signatureIssues } from "../../src/model/onnx-signature.ts";

const DEMO = "seeds/models/flight-delay";

async function demo() {
  const manifest = manifestSchema.parse(
    JSON.parse(await readFile(`${DEMO}/manifest.json`, "utf8")),
  );
  const bytes = new Uint8Array(await readFile(`${DEMO}/model.onnx`));
  return { manifest, bytes };
}

const ELEMENT_NAME: Record<ElemType, string> = { float: "FLOAT", int64: "INT64", bool: "BOOL" };

describe("onnxSignature", () => {
  it("reads the demo model's input and outputs", async () => {
    const { bytes } = await demo();
    expect(onnxSignature(bytes)).toEqual({
      inputs: [{ name: "features", type: "INT64", dims: ["N", 4] }],
      outputs: [
        { name: "delay_probability", type: "FLOAT", dims: ["N"] },
        { name: "expected_delay_minutes", type: "FLOAT", dims: ["N"] },
      ],
    });
  });

  it("reads back the names, element types and shapes a graph was written with", () => {
    const tensor = fc.record({
      name: fc.string({ minLength: 1, maxLength: 12 }),
      type: fc.constantFrom<ElemType>("float", "int64", "bool"),
      dims: fc.array(
        fc.oneof(
          fc.integer({ min: 1, max: 1_000_000 }),
          fc.stringMatching(/^[A-Za-z][A-Za-z0-9_]{0,7}$/),
        ),
        { maxLength: 4 },
      ),
    });
    fc.assert(
      fc.property(
        fc.array(tensor, { minLength: 1, maxLength: 3 }),
        fc.array(tensor, { minLength: 1, maxLength: 3 }),
        (inputs, outputs) => {
          const graph = new GraphBuilder();
          for (const i of inputs) graph.input(i.name, i.type, i.dims as Dim[]);
          for (const o of outputs) graph.output(o.name, o.type, o.dims as Dim[]);
          const read = onnxSignature(graph.serialize("g", ""));
          const expected = (list: typeof inputs) =>
            list.map((t) => ({ name: t.name, type: ELEMENT_NAME[t.type], dims: t.dims }));
          expect(read).toEqual({ inputs: expected(inputs), outputs: expected(outputs) });
        },
      ),
    );
  });

  it("leaves out weights a model of IR < 4 lists among its inputs", () => {
    const graph = new GraphBuilder();
    graph.input("features", "int64", ["N", 4]);
    graph.input("w", "float", [4]);
    graph.floats("w", [4], new Float32Array(4));
    graph.output("y", "float", ["N"]);
    expect(onnxSignature(graph.serialize("g", "")).inputs).toEqual([
      { name: "features", type: "INT64", dims: ["N", 4] },
    ]);
  });

  it("refuses bytes that are not a model", () => {
    expect(() => onnxSignature(new TextEncoder().encode("not a model at all"))).toThrow();
  });
});

describe("signatureIssues", () => {
  it("finds nothing wrong with the demo manifest and model", async () => {
    const { manifest, bytes } = await demo();
    expect(signatureIssues(manifest, onnxSignature(bytes))).toEqual([]);
  });

  it("names each way a manifest does not fit its model", async () => {
    const { manifest, bytes } = await demo();
    const signature = onnxSignature(bytes);
    const input = manifest.encoding.input;
    const misfit = (change: (m: typeof manifest) => typeof manifest) =>
      signatureIssues(change(structuredClone(manifest)), signature);
    expect(
      misfit((m) => ({ ...m, encoding: { ...m.encoding, input: { ...input, dtype: "float32" } } })),
    ).toEqual(['input "features" is INT64, the manifest says float32: encoding.input.dtype']);
    expect(
      misfit((m) => ({ ...m, encoding: { ...m.encoding, input: { ...input, name: "x" } } })),
    ).toEqual(['the model has no input "x" (it has features): encoding.input.name']);
    const extra = {
      name: "extra",
      type: "integer" as const,
      min: 0,
      max: 1,
      encodeAs: "value" as const,
      outOfRange: "reject" as const,
    };
    expect(
      misfit((m) => ({
        ...m,
        encoding: { ...m.encoding, features: [...m.encoding.features, extra] },
      })),
    ).toEqual([
      'input "features" takes 4 features per row, the manifest lists 5: encoding.features',
    ]);
    const fixedRows = {
      ...signature,
      inputs: [{ name: "features", type: "INT64", dims: [1, 4] }],
    };
    expect(signatureIssues(manifest, fixedRows)).toEqual([
      'input "features" takes exactly 1 row per run: its first dimension must be free (a name like N)',
    ]);
    expect(
      misfit((m) => ({
        ...m,
        outputs: m.outputs.map((o, i) => (i === 0 ? { ...o, tensor: "nope" } : o)),
      })),
    ).toEqual([
      'the model has no output "nope" (it has delay_probability, expected_delay_minutes): outputs[].tensor',
    ]);
  });
});
