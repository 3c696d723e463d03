/**
 * An enumerated grid: the cross product of chosen values per feature, generated lazily
 * (an odometer over the axes), refused up front when it would be absurdly large.
 */
import type { Feature } from "../../src/model/manifest.ts";
import type { SourceSpec } from "../spec.ts";
import type { RawInput } from "./seed.ts";

type GridSpec = Extract<SourceSpec, { kind: "grid" }>;
type Axis = GridSpec["axes"][string];

export class GridTooLargeError extends Error {
  override readonly name = "GridTooLargeError";
}

function axisValues(feature: Feature, axis: Axis): (string | number)[] {
  if (Array.isArray(axis)) return axis;
  if (axis === "all") {
    if (feature.type === "categorical") return feature.vocabulary;
    if (feature.type === "integer") return range(feature.min, feature.max, 1);
    throw new Error(
      `${feature.name}: "all" needs a categorical or integer feature; give values or { min, max, step }`,
    );
  }
  return range(axis.min, axis.max, axis.step);
}

/** How many values min, min + step, … up to max are (the same count range() makes). */
function rangeLength(min: number, max: number, step: number): number {
  return max + 1e-9 < min ? 0 : Math.floor((max + 1e-9 - min) / step) + 1;
}

function range(min: number, max: number, step: number): number[] {
  const values: number[] = [];
  for (let i = 0; min + i * step <= max + 1e-9; i++)
    values.push(Number((min + i * step).toPrecision(12)));
  return values;
}

/** An axis's number of values, computed without making them (a range may be huge). */
function axisLength(feature: Feature, axis: Axis): number {
  if (Array.isArray(axis)) return axis.length;
  if (axis === "all") {
    if (feature.type === "categorical") return feature.vocabulary.length;
    if (feature.type === "integer") return rangeLength(feature.min, feature.max, 1);
    return 0; // refused by axisValues, with its message
  }
  return rangeLength(axis.min, axis.max, axis.step);
}

/**
 * Values a lookup would take (its query is text) but an enumerated grid should not: a
 * category outside the vocabulary (a typo, which would fill the one "unknown" entry), a
 * category given as a number, a number given as text, a range over categories.
 */
function checkAxis(feature: Feature, axis: Axis): void {
  const at = `grid axis "${feature.name}"`;
  if (feature.type === "categorical") {
    if (!Array.isArray(axis)) {
      if (axis === "all") return;
      throw new Error(`${at}: a range needs a numeric feature; give "all" or [values]`);
    }
    const known = new Set(feature.vocabulary);
    const unknown = axis.filter((v) => typeof v !== "string" || !known.has(v));
    if (unknown.length > 0)
      throw new Error(
        `${at}: ${unknown
          .slice(0, 5)
          .map((v) => JSON.stringify(v))
          .join(
            ", ",
          )}${unknown.length > 5 ? ` and ${unknown.length - 5} more` : ""} not in its vocabulary (${feature.vocabulary.length} values; "all" takes every one)`,
      );
    return;
  }
  if (Array.isArray(axis)) {
    const text = axis.filter((v) => typeof v !== "number");
    if (text.length > 0)
      throw new Error(
        `${at}: ${text
          .slice(0, 5)
          .map((v) => JSON.stringify(v))
          .join(", ")} not a number`,
      );
  }
}

/** The axes (validated against the features) and the grid's size, before anything is generated. */
export function planGrid(
  features: readonly Feature[],
  spec: GridSpec,
): { names: string[]; axes: (string | number)[][]; size: number } {
  const known = new Map(features.map((f) => [f.name, f]));
  for (const name of Object.keys(spec.axes)) {
    if (!known.has(name))
      throw new Error(
        `grid axis "${name}" is not a feature (features: ${[...known.keys()].join(", ")})`,
      );
  }
  // A feature left out takes its default; one without a default needs an axis.
  const missing = features.filter(
    (f) => spec.axes[f.name] === undefined && (f as { default?: unknown }).default === undefined,
  );
  if (missing.length > 0)
    throw new Error(
      `the grid has no axis for ${missing.map((f) => f.name).join(", ")} (features without a default need one: "all", [values] or {"min","max","step"})`,
    );
  const given = features.filter((f) => spec.axes[f.name] !== undefined);
  for (const f of given) checkAxis(f, spec.axes[f.name] as Axis);
  const names = given.map((f) => f.name);
  // Sized before any value is made: a range of a billion steps is refused, not built.
  const lengths = given.map((f) => axisLength(f, spec.axes[f.name] as Axis));
  const size = lengths.reduce((product, n) => product * n, 1);
  if (size > spec.maxSize || lengths.some((n) => n > spec.maxSize)) {
    const sizes = names.map((n, i) => `${n}: ${lengths[i]?.toLocaleString("en-US")}`).join(" × ");
    throw new GridTooLargeError(
      `the grid has ${size.toLocaleString("en-US")} inputs (${sizes}), over the limit of ${spec.maxSize.toLocaleString("en-US")}: narrow an axis or raise maxSize (the CLI's --grid-max)`,
    );
  }
  const axes = given.map((f) => axisValues(f, spec.axes[f.name] as Axis));
  return { names, axes, size: axes.reduce((product, values) => product * values.length, 1) };
}

export function* gridInputs(features: readonly Feature[], spec: GridSpec): Generator<RawInput> {
  const { names, axes, size } = planGrid(features, spec);
  if (size === 0) return;
  const odometer = axes.map(() => 0);
  for (let n = 0; n < size; n++) {
    const input: RawInput = {};
    names.forEach((name, i) => {
      input[name] = (axes[i] as (string | number)[])[odometer[i] as number];
    });
    yield input;
    for (let i = axes.length - 1; i >= 0; i--) {
      odometer[i] = (odometer[i] as number) + 1;
      if ((odometer[i] as number) < (axes[i] as unknown[]).length) break;
      odometer[i] = 0;
    }
  }
}
