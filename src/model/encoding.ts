/**
 * The one feature encoding shared by every path — precompute, live inference, the API's
 * key derivation and the browser client — so a cached answer can never disagree with
 * what the model would say for the same input (no training–serving skew).
 *
 * encode(raw) validates and normalizes a raw input (query-string strings or JSON values)
 * and returns both the model's feature row and the canonical cache key: the JSON array of
 * the normalized values in schema order. Equal inputs after normalization give equal
 * keys; different inputs give different keys; keys decode back to inputs.
 *
 * Browser-safe: no Node-only imports.
 */
import { canonicalJson } from "./canonical-json.ts";
import { fnv1a32, sha256Hex } from "./hash.ts";
import type { EncodingDefinition, Feature } from "./manifest.ts";

export const ENCODING_FORMAT = "predcache-encoding/1";

export type FeatureValue = string | number;
export type NormalizedInput = Record<string, FeatureValue>;

export type InputIssueCode =
  | "missing"
  | "unknown_field"
  | "wrong_type"
  | "not_integer"
  | "not_finite"
  | "out_of_range"
  | "unknown_category"
  | "too_long"
  | "control_character"
  | "empty";

export interface InputIssue {
  field: string;
  code: InputIssueCode;
  message: string;
}

export interface EncodedInput {
  /** Canonical cache key: JSON array of normalized values in schema order. */
  key: string;
  /** The model's feature row, one number per feature. */
  row: number[];
  normalized: NormalizedInput;
  /** Fields whose value lies outside the training distribution (policy "flag"). */
  outOfDistribution: string[];
}

export type EncodeOutcome = { ok: true; value: EncodedInput } | { ok: false; issues: InputIssue[] };

export interface Encoder {
  readonly definition: EncodingDefinition;
  /** Hash of everything that decides rows and keys; part of every cache key. */
  readonly hash: string;
  readonly featureNames: readonly string[];
  encode(raw: Readonly<Record<string, unknown>>): EncodeOutcome;
  /** The normalized input a key stands for (keys come from encode, or from storage). */
  decodeKey(key: string): NormalizedInput;
}

/**
 * Numbers as text, read as a JSON number is: an integer feature then takes "7.0" or
 * "7e0" as 7 (a float column's way, or a spreadsheet's), as it takes JSON 7.0 or 7e0.
 */
const NUMBER_TEXT = /^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$/;

type FeatureOutcome =
  | { ok: true; value: FeatureValue; tensor: number; ood: boolean }
  | { ok: false; issue: InputIssue };

function fail(field: string, code: InputIssueCode, message: string): FeatureOutcome {
  return { ok: false, issue: { field, code, message } };
}

/** C0 and C1 controls: never part of a category or a text a person means (a NUL, a newline). */
function hasControl(text: string): boolean {
  for (let i = 0; i < text.length; i++) {
    const code = text.charCodeAt(i);
    if (code < 0x20 || (code >= 0x7f && code <= 0x9f)) return true;
  }
  return false;
}

function controlled(name: string, value: string): FeatureOutcome | undefined {
  return hasControl(value)
    ? fail(name, "control_character", `${name} must not contain control characters`)
    : undefined;
}

/** Any character NFC could change (ASCII text is always in NFC: the common case skips it). */
const NON_ASCII = /[\u0080-\uffff]/;

function normalizeText(text: string, mode: "none" | "upper" | "lower"): string {
  const trimmed = NON_ASCII.test(text) ? text.trim().normalize("NFC") : text.trim();
  return mode === "upper"
    ? trimmed.toUpperCase()
    : mode === "lower"
      ? trimmed.toLowerCase()
      : trimmed;
}

function asText(raw: unknown): string | undefined {
  if (typeof raw === "string") return raw;
  if (typeof raw === "number" && Number.isFinite(raw)) return String(raw);
  return undefined;
}

/** A JSON number, or text read as one (NaN: text that is not a number); else undefined. */
export function asNumber(raw: unknown): number | undefined {
  if (typeof raw === "number") return raw;
  if (typeof raw === "string") {
    const text = raw.trim();
    return NUMBER_TEXT.test(text) ? Number(text) : Number.NaN;
  }
  return undefined;
}

/**
 * The key's value for every category outside the vocabulary (when flagged, not refused).
 * The model sees them all alike (index 0), so they share one key: one cache entry and one
 * inference instead of one per string a client makes up. Never a vocabulary entry
 * (manifest.ts); it encodes back to the unknown slot, so keys still decode to their rows.
 */
export const UNKNOWN_CATEGORY = "*";

function encodeFeature(
  feature: Feature,
  raw: unknown,
  categoryIndex: Map<string, number> | undefined,
): FeatureOutcome {
  const { name } = feature;
  // A repeated query parameter (or a JSON list) is not a value of any feature type.
  if (Array.isArray(raw))
    return fail(name, "wrong_type", `${name} must be one value, not a list of ${raw.length}`);
  switch (feature.type) {
    case "categorical": {
      const text = asText(raw);
      if (text === undefined) return fail(name, "wrong_type", `${name} must be a string`);
      const value = normalizeText(text, feature.normalize);
      if (value === "") return fail(name, "empty", `${name} must not be empty`);
      if (value.length > 256)
        return fail(name, "too_long", `${name} is longer than 256 characters`);
      const control = controlled(name, value);
      if (control) return control;
      const index = categoryIndex?.get(value);
      if (index !== undefined) return { ok: true, value, tensor: index, ood: false };
      if (feature.unknown === "reject") {
        return fail(
          name,
          "unknown_category",
          `${name} "${value.slice(0, 64)}" is not one of the ${feature.vocabulary.length} known values`,
        );
      }
      return { ok: true, value: UNKNOWN_CATEGORY, tensor: 0, ood: true };
    }
    case "integer": {
      let value: number | undefined;
      if (typeof raw === "string") {
        const text = raw.trim();
        if (!NUMBER_TEXT.test(text)) return fail(name, "not_integer", `${name} must be an integer`);
        value = Number(text);
      } else value = asNumber(raw);
      if (value === undefined) return fail(name, "wrong_type", `${name} must be an integer`);
      if (!Number.isInteger(value) && Number.isFinite(value))
        return fail(name, "not_integer", `${name} must be an integer`);
      // Whole (digits only, however many), but past what a double holds exactly (2^53):
      // past a bound, so flagged as any value past it is; refused otherwise.
      if (!Number.isSafeInteger(value) && feature.outOfRange === "flag")
        return ranged(feature, value, (v) => (feature.encodeAs === "index" ? v - feature.min : v));
      if (!Number.isSafeInteger(value))
        return fail(
          name,
          "out_of_range",
          `${name} must be between ${feature.min} and ${feature.max}`,
        );
      return ranged(feature, value === 0 ? 0 : value, (v) =>
        feature.encodeAs === "index" ? v - feature.min : v,
      );
    }
    case "number": {
      const value = asNumber(raw);
      if (value === undefined) return fail(name, "wrong_type", `${name} must be a number`);
      if (!Number.isFinite(value))
        return fail(name, "not_finite", `${name} must be a finite number`);
      const scale = feature.scale;
      return ranged(feature, value === 0 ? 0 : value, (v) =>
        scale ? (v - scale.mean) / scale.std : v,
      );
    }
    case "string": {
      const text = asText(raw);
      if (text === undefined) return fail(name, "wrong_type", `${name} must be a string`);
      const value = normalizeText(text, feature.normalize);
      if (value.length > feature.maxLength) {
        return fail(name, "too_long", `${name} is longer than ${feature.maxLength} characters`);
      }
      const control = controlled(name, value);
      if (control) return control;
      return { ok: true, value, tensor: 1 + (fnv1a32(value) % feature.hashBuckets), ood: false };
    }
  }
}

function ranged(
  feature: Extract<Feature, { type: "integer" | "number" }>,
  value: number,
  toTensor: (v: number) => number,
): FeatureOutcome {
  const inRange = value >= feature.min && value <= feature.max;
  if (inRange) return { ok: true, value, tensor: toTensor(value), ood: false };
  if (feature.outOfRange === "reject") {
    return fail(
      feature.name,
      "out_of_range",
      `${feature.name} must be between ${feature.min} and ${feature.max}`,
    );
  }
  // Flagged: the model sees the nearest value it was trained on; the reply says so. Every
  // value past a bound is then one input to the model, so one key: the bound ± 1 (as every
  // unknown category is "*"), not one key, cache entry and inference per value asked.
  const above = value > feature.max;
  const clamped = above ? feature.max : feature.min;
  const keyed = above ? feature.max + 1 : feature.min - 1;
  return { ok: true, value: keyed, tensor: toTensor(clamped), ood: true };
}

/** The parts of the definition that decide rows and keys (descriptions do not). */
function hashedDefinition(definition: EncodingDefinition): unknown {
  return {
    format: ENCODING_FORMAT,
    input: definition.input,
    features: definition.features.map(({ description: _, ...rest }) => rest),
  };
}

export function encodingHash(definition: EncodingDefinition): string {
  return sha256Hex(canonicalJson(hashedDefinition(definition))).slice(0, 16);
}

export function createEncoder(definition: EncodingDefinition): Encoder {
  const features = definition.features;
  const featureNames = features.map((f) => f.name);
  const known = new Set(featureNames);
  const categoryIndexes = features.map((f) =>
    f.type === "categorical" ? new Map(f.vocabulary.map((v, i) => [v, i + 1])) : undefined,
  );

  function encode(raw: Readonly<Record<string, unknown>>): EncodeOutcome {
    // An app's null or list (the client takes inputs from apps' code): its issue, not a TypeError.
    if (typeof raw !== "object" || raw === null || Array.isArray(raw))
      return {
        ok: false,
        issues: [
          { field: "", code: "wrong_type", message: "an input must be an object of features" },
        ],
      };
    // Plain loops, no array of keys: this runs on every lookup, hits included.
    const issues: InputIssue[] = [];
    for (const field in raw) {
      if (!Object.hasOwn(raw, field) || known.has(field)) continue;
      issues.push({
        field,
        code: "unknown_field",
        message: `${field.slice(0, 64)} is not an input of this model (expected ${featureNames.join(", ")})`,
      });
    }
    const values: FeatureValue[] = [];
    const row: number[] = [];
    const normalized: NormalizedInput = {};
    const outOfDistribution: string[] = [];
    for (let i = 0; i < features.length; i++) {
      const feature = features[i] as Feature;
      const given = Object.hasOwn(raw, feature.name) ? raw[feature.name] : undefined;
      // A blank value of a feature with a default is the default: a query string cannot
      // say null, and forms send a field left empty as "name=".
      const blank = typeof given === "string" && given.trim() === "";
      const value = (blank && feature.default !== undefined ? undefined : given) ?? feature.default;
      if (value === undefined || value === null) {
        issues.push({
          field: feature.name,
          code: "missing",
          message: `${feature.name} is required`,
        });
        continue;
      }
      const outcome = encodeFeature(feature, value, categoryIndexes[i]);
      if (!outcome.ok) {
        issues.push(outcome.issue);
        continue;
      }
      values.push(outcome.value);
      row.push(outcome.tensor);
      normalized[feature.name] = outcome.value;
      if (outcome.ood) outOfDistribution.push(feature.name);
    }
    if (issues.length > 0) return { ok: false, issues };
    return { ok: true, value: { key: JSON.stringify(values), row, normalized, outOfDistribution } };
  }

  function decodeKey(key: string): NormalizedInput {
    const values: unknown = JSON.parse(key);
    if (!Array.isArray(values) || values.length !== features.length) {
      throw new TypeError(`not a key of this encoding: ${key.slice(0, 80)}`);
    }
    const input: NormalizedInput = {};
    values.forEach((v, i) => {
      if (typeof v !== "string" && typeof v !== "number")
        throw new TypeError(`not a key of this encoding: ${key.slice(0, 80)}`);
      input[featureNames[i] as string] = v;
    });
    return input;
  }

  return { definition, hash: encodingHash(definition), featureNames, encode, decodeKey };
}
