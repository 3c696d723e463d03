/**
 * The model manifest: everything predcache needs to serve a model besides the ONNX file —
 * its input schema (which the shared encoding turns into a feature row and a cache key),
 * how to decode its output tensors, and its model card. Validated with zod at the
 * boundary (files, admin uploads); the rest of the code trusts the derived types.
 *
 * Browser-safe: imported by the client library through the encoding.
 */
// zod/mini: the same schemas without the chaining API, so the browser bundle of the
// client (which validates table headers with these) stays small: ~16 KiB instead of ~450.
import * as z from "zod/mini";

/** Query parameters the predict route keeps for itself; no feature may take these names. */
export const RESERVED_NAMES = ["wait", "version"] as const;

const name = z.string().check(
  z.regex(/^[A-Za-z][A-Za-z0-9_]{0,63}$/, "letters, digits and _ only, starting with a letter"),
  z.refine(
    (n) => !(RESERVED_NAMES as readonly string[]).includes(n),
    `${RESERVED_NAMES.join(" and ")} are reserved names`,
  ),
);

/** reject: invalid input; flag: accepted, predicted and marked outOfDistribution. */
const unknownPolicy = z.enum(["reject", "flag"]);
const normalize = z._default(z.enum(["none", "upper", "lower"]), "none");

const categorical = z.object({
  name,
  type: z.literal("categorical"),
  description: z.optional(z.string()),
  /** Known categories; category i is encoded as index i + 1, index 0 is the unknown slot. */
  vocabulary: z
    .array(
      z.string().check(
        z.minLength(1),
        z.maxLength(256),
        z.refine((v) => v !== "*", "* is the key of unknown categories, not a category"),
      ),
    )
    .check(z.minLength(1)),
  normalize,
  unknown: z._default(unknownPolicy, "reject"),
  default: z.optional(z.string()),
});

const integer = z.object({
  name,
  type: z.literal("integer"),
  description: z.optional(z.string()),
  min: z.int(),
  max: z.int(),
  /** index: the tensor holds value − min (an embedding row); value: the value itself. */
  encodeAs: z._default(z.enum(["value", "index"]), "value"),
  outOfRange: z._default(unknownPolicy, "reject"),
  default: z.optional(z.int()),
});

const number = z.object({
  name,
  type: z.literal("number"),
  description: z.optional(z.string()),
  min: z.number(),
  max: z.number(),
  /** The tensor holds (value − mean) / std. */
  scale: z.optional(z.object({ mean: z.number(), std: z.number().check(z.positive()) })),
  outOfRange: z._default(unknownPolicy, "reject"),
  default: z.optional(z.number()),
});

const text = z.object({
  name,
  type: z.literal("string"),
  description: z.optional(z.string()),
  maxLength: z.int().check(z.positive(), z.lte(4096)),
  normalize,
  /** The tensor holds 1 + (FNV-1a 32 of the UTF-8 bytes mod buckets); 0 is never used. */
  hashBuckets: z.int().check(z.positive()),
  default: z.optional(z.string()),
});

export const featureSchema = z.discriminatedUnion("type", [categorical, integer, number, text]);

export const encodingSchema = z
  .object({
    /** The model's single input tensor: [N, features.length]. */
    input: z.object({
      name: z.string().check(z.minLength(1)),
      dtype: z.enum(["int64", "float32"]),
    }),
    features: z.array(featureSchema).check(z.minLength(1), z.maxLength(256)),
  })
  .check(
    z.superRefine((encoding, ctx) => {
      const seen = new Set<string>();
      encoding.features.forEach((f, i) => {
        const path = ["features", i];
        if (seen.has(f.name))
          ctx.addIssue({ code: "custom", message: `duplicate feature ${f.name}`, path, input: f });
        seen.add(f.name);
        if ((f.type === "integer" || f.type === "number") && f.min > f.max) {
          ctx.addIssue({ code: "custom", message: "min > max", path, input: f });
        }
        // A flagged value past a bound is keyed as the bound ± 1: that must be another number.
        if ((f.type === "integer" || f.type === "number") && f.outOfRange === "flag") {
          const keys = [f.min - 1, f.max + 1];
          const distinct = keys[0] !== f.min && keys[1] !== f.max;
          if (!distinct || (f.type === "integer" && !keys.every(Number.isSafeInteger)))
            ctx.addIssue({
              code: "custom",
              message: 'outOfRange "flag" needs min − 1 and max + 1 to be numbers of their own',
              path,
              input: f,
            });
        }
        if (f.type === "number" && encoding.input.dtype === "int64") {
          ctx.addIssue({
            code: "custom",
            message: "number features need a float32 input tensor",
            path,
            input: f,
          });
        }
        if (f.type === "categorical" && new Set(f.vocabulary).size !== f.vocabulary.length) {
          ctx.addIssue({ code: "custom", message: "vocabulary has duplicates", path, input: f });
        }
      });
    }),
  );

const output = z.object({
  name,
  /** Name of the ONNX output tensor; shape [N] or [N, 1] for scalars, [N, k] for classes. */
  tensor: z.string().check(z.minLength(1)),
  kind: z.enum(["probability", "regression", "classes"]),
  description: z.optional(z.string()),
  unit: z.optional(z.string()),
  /** probability: [negative, positive] labels; classes: one label per column. */
  labels: z.optional(z.array(z.string())),
  /** Digits kept after the decimal point, so cached values are stable and compact. */
  digits: z._default(z.int().check(z.gte(0), z.lte(12)), 6),
});

export const outputsSchema = z.array(output).check(
  z.minLength(1),
  z.superRefine((outputs, ctx) => {
    outputs.forEach((o, i) => {
      if (o.kind === "probability" && o.labels && o.labels.length !== 2) {
        ctx.addIssue({
          code: "custom",
          message: "probability labels are [negative, positive]",
          path: [i],
          input: o,
        });
      }
      if (o.kind === "classes" && !o.labels?.length) {
        ctx.addIssue({
          code: "custom",
          message: "classes outputs need labels",
          path: [i],
          input: o,
        });
      }
    });
  }),
);

export const modelCardSchema = z.object({
  summary: z.string(),
  intendedUse: z.string(),
  trainingData: z.string(),
  evaluation: z.record(z.string(), z.union([z.number(), z.string()])),
  limitations: z.array(z.string()),
  license: z.optional(z.string()),
});

export const manifestSchema = z
  .object({
    name: z
      .string()
      .check(z.regex(/^[a-z0-9][a-z0-9-]{0,62}$/, "lowercase letters, digits and dashes")),
    /** Path of the ONNX file, relative to the manifest. */
    model: z._default(z.string().check(z.minLength(1)), "model.onnx"),
    /** A human label for this version (the served version id is a content hash). */
    label: z.optional(z.string()),
    encoding: encodingSchema,
    outputs: outputsSchema,
    /** The output whose value is monitored and whose confidence is checked. */
    mainOutput: z.optional(z.string()),
    /** lowConfidence when the main output's confidence (max(p, 1 − p) or top class) is below this. */
    confidenceThreshold: z.optional(z.number().check(z.gte(0), z.lte(1))),
    card: modelCardSchema,
    /** Common inputs (CSV or JSON lines, relative to the manifest): precomputed on first start. */
    commonInputs: z.optional(z.string()),
  })
  .check(
    z.refine((m) => m.mainOutput === undefined || m.outputs.some((o) => o.name === m.mainOutput), {
      message: "mainOutput must name one of the outputs",
      path: ["mainOutput"],
    }),
  );

export type Manifest = z.infer<typeof manifestSchema>;
export type ManifestInput = z.input<typeof manifestSchema>;
export type EncodingDefinition = z.infer<typeof encodingSchema>;
export type Feature = z.infer<typeof featureSchema>;
export type OutputDefinition = z.infer<typeof output>;
export type ModelCard = z.infer<typeof modelCardSchema>;

/** The output that monitoring and the confidence check use: mainOutput, else the first. */
/** What names a model's main output and its confidence bar (a manifest, or a table header). */
export type MainOutputSpec = Pick<Manifest, "outputs" | "mainOutput" | "confidenceThreshold">;

export function mainOutputOf(manifest: Pick<Manifest, "outputs" | "mainOutput">): OutputDefinition {
  const found = manifest.outputs.find((o) => o.name === manifest.mainOutput) ?? manifest.outputs[0];
  if (!found) throw new Error("manifest without outputs");
  return found;
}
