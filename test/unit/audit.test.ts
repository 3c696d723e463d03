/** The cache audit's comparison: equal within one unit of each output's rounding. */
import { describe, expect, it } from "vitest";
import { differingOutputs } from "../../src/cache/audit.ts";
import type { Manifest } from "../../src/model/manifest.ts";

const manifest: Pick<Manifest, "outputs"> = {
  outputs: [
    { name: "p", tensor: "p", kind: "probability", digits: 4 },
    { name: "minutes", tensor: "m", kind: "regression", digits: 1 },
    { name: "kind", tensor: "k", kind: "classes", labels: ["a", "b"], digits: 2 },
  ],
};
const base = {
  p: 0.1088,
  minutes: 12.3,
  kind: { label: "b", probabilities: { a: 0.25, b: 0.75 } },
};

describe("differingOutputs", () => {
  it("finds nothing when the predictions are equal", () => {
    expect(differingOutputs(manifest, base, structuredClone(base))).toEqual([]);
  });

  it("accepts one unit of rounding and float32 storage, not two units", () => {
    expect(differingOutputs(manifest, base, { ...base, p: 0.1089, minutes: 12.2 })).toEqual([]);
    expect(differingOutputs(manifest, { ...base, p: Math.fround(0.1089) }, base)).toEqual([]);
    expect(differingOutputs(manifest, base, { ...base, p: 0.109, minutes: 12.5 })).toEqual([
      "p",
      "minutes",
    ]);
    expect(differingOutputs(manifest, base, { ...base, p: 0.8912 })).toEqual(["p"]);
  });

  it("compares classes by label and by every probability", () => {
    const flipped = { label: "a", probabilities: { a: 0.25, b: 0.75 } };
    expect(differingOutputs(manifest, base, { ...base, kind: flipped })).toEqual(["kind"]);
    const near = { label: "b", probabilities: { a: 0.26, b: 0.74 } };
    expect(differingOutputs(manifest, base, { ...base, kind: near })).toEqual([]);
    const far = { label: "b", probabilities: { a: 0.2, b: 0.75 } };
    expect(differingOutputs(manifest, base, { ...base, kind: far })).toEqual(["kind"]);
    const extra = { label: "b", probabilities: { a: 0.25, b: 0.75, c: 0 } };
    expect(differingOutputs(manifest, base, { ...base, kind: extra })).toEqual(["kind"]);
  });

  it("flags missing outputs and values of the wrong kind", () => {
    const { minutes: _, ...withoutMinutes } = base;
    expect(differingOutputs(manifest, withoutMinutes, base)).toEqual(["minutes"]);
    expect(differingOutputs(manifest, base, { ...base, p: base.kind })).toEqual(["p"]);
    expect(differingOutputs(manifest, { ...base, p: Number.NaN }, base)).toEqual(["p"]);
  });
});
