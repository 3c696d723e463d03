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

function range(min: number, max: number, step: number): number[] {
  const values: number[] = [];
  for (let i = 0; min + i * step <= max + 1e-9; i++)
    values.push(Number((min + i * step).toPrecision(12)));
  return values;
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
  const names: string[] = [];
  const axes: (string | number)[][] = [];
  let size = 1;
  for (const feature of features) {
    const axis = spec.axes[feature.name];
    if (axis === undefined) continue; // the feature's default applies
    const values = axisValues(feature, axis);
    names.push(feature.name);
    axes.push(values);
    size *= values.length;
  }
  if (size > spec.maxSize) {
    const sizes = names.map((n, i) => `${n}: ${axes[i]?.length}`).join(" × ");
    throw new GridTooLargeError(
      `the grid has ${size.toLocaleString("en-US")} inputs (${sizes}), over the limit of ${spec.maxSize.toLocaleString("en-US")}: narrow an axis or raise maxSize (the CLI's --grid-max)`,
    );
  }
  return { names, axes, size };
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
