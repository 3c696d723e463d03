/**
 * A version id changes exactly when a cached answer could: with the model, its encoding,
 * its outputs' decoding, or what its flags are read by (a table keeps the threshold it was
 * built with, so a new threshold under the same id would set it against the server).
 */
import { readFile } from "node:fs/promises";
import { describe, expect, it } from "vitest";
import { createEncoder } from "../../src/model/encoding.ts";
import type { Manifest } from "../../src/model/manifest.ts";
import { versionOf } from "../../src/model/registry.ts";

const DEMO = "seeds/models/flight-delay";

describe("version ids", () => {
  it("change with the confidence threshold and the main output, not with the card or label", async () => {
    const manifest = JSON.parse(await readFile(`${DEMO}/manifest.json`, "utf8")) as Manifest;
    const bytes = new Uint8Array(await readFile(`${DEMO}/model.onnx`));
    const encoder = createEncoder(manifest.encoding);
    const id = (changed: Partial<Manifest>) =>
      versionOf(bytes, { ...manifest, ...changed }, encoder);
    const base = id({});
    expect(base).toMatch(/^[0-9a-f]{12}$/);
    expect(id({ confidenceThreshold: (manifest.confidenceThreshold ?? 0.5) + 0.1 })).not.toBe(base);
    expect(id({ confidenceThreshold: undefined })).not.toBe(base);
    const other = manifest.outputs.find((o) => o.name !== manifest.mainOutput)?.name;
    expect(id({ mainOutput: other })).not.toBe(base);
    // What only describes the model: the same answers, the same version.
    expect(id({ label: "renamed" })).toBe(base);
    expect(id({ card: { ...manifest.card, summary: "reworded" } })).toBe(base);
  });
});
