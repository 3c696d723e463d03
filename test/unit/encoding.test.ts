import { execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { createEncoder, type EncodedInput } from "../../src/model/encoding.ts";
import { encodingSchema } from "../../src/model/manifest.ts";
import { fixtureEncoding } from "../fixtures/encoding.ts";

const encoder = createEncoder(fixtureEncoding);

function mustEncode(raw: Record<string, unknown>): EncodedInput {
  const outcome = encoder.encode(raw);
  if (!outcome.ok) throw new Error(JSON.stringify(outcome.issues));
  return outcome.value;
}

/** Valid inputs of the fixture encoding, as JSON values. */
const validInput = fc.record({
  airport: fc.oneof(fc.constantFrom("ATL", "LAX", "ORD", "SFO"), fc.stringMatching(/^[A-Z]{3}$/)),
  cabin: fc.constantFrom("economy", "business"),
  hour: fc.integer({ min: 0, max: 23 }),
  bags: fc.integer({ min: 0, max: 9 }),
  distance: fc.double({ min: 0, max: 5000, noNaN: true }),
  note: fc
    .string({ maxLength: 40 })
    .map((s) => s.trim().normalize("NFC"))
    .filter((s) => s.length <= 40),
});

/** The same input written differently: padding, case, numbers as text, leading zeros, plus signs, "7.0", "70e-1". */
const rewritten = validInput.chain((input) =>
  fc
    .record({
      pad: fc.constantFrom("", " ", "  ", "\t"),
      lowerAirport: fc.boolean(),
      upperCabin: fc.boolean(),
      hourAsText: fc.constantFrom("plain", "zero", "plus", "float", "exponent", "number"),
      distanceAsText: fc.boolean(),
    })
    .map((how) => ({
      input,
      variant: {
        airport: `${how.pad}${how.lowerAirport ? input.airport.toLowerCase() : input.airport}${how.pad}`,
        cabin: how.upperCabin ? input.cabin.toUpperCase() : input.cabin,
        hour:
          how.hourAsText === "plain"
            ? String(input.hour)
            : how.hourAsText === "zero"
              ? `0${input.hour}`
              : how.hourAsText === "plus"
                ? `+${input.hour}`
                : how.hourAsText === "float"
                  ? `${input.hour}.0`
                  : how.hourAsText === "exponent"
                    ? `${input.hour * 10}e-1`
                    : input.hour,
        bags: `${how.pad}${input.bags}`,
        distance: how.distanceAsText ? String(input.distance) : input.distance,
        note: input.note,
      },
    })),
);

describe("shared encoding", () => {
  it("gives normalization-equal inputs equal keys and rows", () => {
    fc.assert(
      fc.property(rewritten, ({ input, variant }) => {
        const a = mustEncode(input);
        const b = mustEncode(variant);
        expect(b.key).toBe(a.key);
        expect(b.row).toEqual(a.row);
      }),
      { numRuns: 2000 },
    );
  });

  it("gives canonically equal Unicode text equal keys (NFC), ASCII or not", () => {
    const base = { airport: "SFO", hour: 3, bags: 1, distance: 10 };
    expect(mustEncode({ ...base, note: "cafe\u0301" }).key).toBe(
      mustEncode({ ...base, note: "caf\u00e9" }).key,
    );
    fc.assert(
      fc.property(fc.string({ unit: "grapheme", maxLength: 12 }), (text) => {
        const composed = text.trim().normalize("NFC");
        fc.pre(composed.length <= 40);
        const a = mustEncode({ ...base, note: text.normalize("NFD") });
        const b = mustEncode({ ...base, note: composed });
        expect(a.key).toBe(b.key);
        expect(a.row).toEqual(b.row);
      }),
      { numRuns: 1000 },
    );
  });

  it("gives different inputs different keys", () => {
    fc.assert(
      fc.property(validInput, validInput, (x, y) => {
        const a = mustEncode(x);
        const b = mustEncode(y);
        const same = JSON.stringify(a.normalized) === JSON.stringify(b.normalized);
        expect(a.key === b.key).toBe(same);
      }),
      { numRuns: 2000 },
    );
  });

  it("decodes every key back to an input that encodes to the same key", () => {
    fc.assert(
      fc.property(validInput, (x) => {
        const a = mustEncode(x);
        expect(mustEncode(encoder.decodeKey(a.key)).key).toBe(a.key);
      }),
    );
  });

  it("flags unknown categories and out-of-range values when the schema says flag", () => {
    const value = mustEncode({ airport: "zzz", hour: 3, bags: 12, distance: 1 });
    expect(value.outOfDistribution).toEqual(["airport", "bags"]);
    expect(value.row[0]).toBe(0); // the unknown slot
    expect(value.row[3]).toBe(5); // clamped into the trained range
    // Every unknown category shares one key (the model sees them alike), and so does every
    // number past a bound: the bound ± 1, not one key (entry, inference) per value asked.
    expect(value.key).toBe('["*","economy",3,6,1,""]');
    expect(mustEncode({ airport: "qqq", hour: 3, bags: 99, distance: 1 }).key).toBe(value.key);
    // However far past: whole numbers past 2^53 too, written or as JSON.
    for (const bags of [1e20, "99999999999999999999", "9".repeat(400)])
      expect(mustEncode({ airport: "qqq", hour: 3, bags, distance: 1 }).key).toBe(value.key);
    expect(mustEncode({ airport: "SFO", hour: 3, bags: -1e20, distance: 1 }).key).toBe(
      '["SFO","economy",3,-1,1,""]',
    );
    const below = mustEncode({ airport: "SFO", hour: 3, bags: -4, distance: 1 });
    expect(below.key).toBe('["SFO","economy",3,-1,1,""]');
    expect(below.row[3]).toBe(0);
    // Neither is an in-range value's key, nor answered as one (its reply flags the field).
    expect(mustEncode({ airport: "SFO", hour: 3, bags: 5, distance: 1 }).key).not.toBe(
      '["SFO","economy",3,6,1,""]',
    );
  });

  it("refuses a flagged range whose bound ± 1 is no number of its own", () => {
    const withBags = (bags: Record<string, unknown>) =>
      encodingSchema.safeParse({
        input: { name: "x", dtype: "float32" },
        features: [{ name: "bags", outOfRange: "flag", ...bags }],
      }).success;
    expect(withBags({ type: "integer", min: 0, max: 5 })).toBe(true);
    expect(withBags({ type: "integer", min: 0, max: Number.MAX_SAFE_INTEGER })).toBe(false);
    expect(withBags({ type: "number", min: -1e300, max: 1 })).toBe(false);
    expect(withBags({ type: "number", min: 0, max: 2 ** 60, outOfRange: "reject" })).toBe(true);
  });

  it("keys flagged values past a bound so that the key decodes to an input of that key", () => {
    fc.assert(
      fc.property(fc.oneof(fc.integer({ min: 6 }), fc.integer({ max: -1 })), (bags) => {
        const a = mustEncode({ airport: "ORD", hour: 1, bags, distance: 2 });
        expect(a.key).toBe(`["ORD","economy",1,${bags > 5 ? 6 : -1},2,""]`);
        expect(mustEncode(encoder.decodeKey(a.key)).key).toBe(a.key);
        expect(a.outOfDistribution).toEqual(["bags"]);
      }),
    );
  });

  const badInputs: [string, Record<string, unknown>, string[]][] = [
    ["a missing feature", { airport: "SFO", bags: 1, distance: 2 }, ["hour:missing"]],
    [
      "an unknown field",
      { airport: "SFO", hour: 1, bags: 1, distance: 2, hours: 3 },
      ["hours:unknown_field"],
    ],
    [
      "a control character in a category (even one flagged when unknown)",
      { airport: "SF\u0000O", hour: 1, bags: 1, distance: 2 },
      ["airport:control_character"],
    ],
    [
      "a control character in a text",
      { airport: "SFO", hour: 1, bags: 1, distance: 2, note: "a\nb" },
      ["note:control_character"],
    ],
    [
      "a rejected category",
      { airport: "SFO", cabin: "first", hour: 1, bags: 1, distance: 2 },
      ["cabin:unknown_category"],
    ],
    [
      "a fractional integer",
      { airport: "SFO", hour: 1.5, bags: 1, distance: 2 },
      ["hour:not_integer"],
    ],
    [
      "a fractional integer written as text",
      { airport: "SFO", hour: "1.5", bags: 1, distance: 2 },
      ["hour:not_integer"],
    ],
    [
      "a fraction in exponent notation, written as text",
      { airport: "SFO", hour: "15e-1", bags: 1, distance: 2 },
      ["hour:not_integer"],
    ],
    [
      "hex, or no digits, written as text",
      { airport: "SFO", hour: "0x1", bags: "e1", distance: 2 },
      ["hour:not_integer", "bags:not_integer"],
    ],
    [
      "a whole number past 2^53, written or as JSON, where out of range is refused",
      { airport: "SFO", hour: "99999999999999999999", bags: 1, distance: 2 },
      ["hour:out_of_range"],
    ],
    [
      "a whole number of 400 digits (past what a double holds at all)",
      { airport: "SFO", hour: "9".repeat(400), bags: 1, distance: 2 },
      ["hour:out_of_range"],
    ],
    [
      "a rejected out-of-range value",
      { airport: "SFO", hour: -1, bags: 1, distance: 2 },
      ["hour:out_of_range"],
    ],
    [
      "a non-numeric number",
      { airport: "SFO", hour: 1, bags: 1, distance: "far" },
      ["distance:not_finite"],
    ],
    [
      "an infinite number",
      { airport: "SFO", hour: 1, bags: 1, distance: "Infinity" },
      ["distance:not_finite"],
    ],
    [
      "a wrong type",
      { airport: { code: "SFO" }, hour: true, bags: 1, distance: 2 },
      ["airport:wrong_type", "hour:wrong_type"],
    ],
    [
      "a value given more than once (a repeated query parameter)",
      { airport: ["SFO", "LAX"], hour: ["1", "2"], bags: 1, distance: 2 },
      ["airport:wrong_type", "hour:wrong_type"],
    ],
    ["an empty category", { airport: "  ", hour: 1, bags: 1, distance: 2 }, ["airport:empty"]],
    [
      "a string too long",
      { airport: "SFO", hour: 1, bags: 1, distance: 2, note: "x".repeat(41) },
      ["note:too_long"],
    ],
  ];
  it.each(badInputs)("rejects %s with its own error", (_, raw, expected) => {
    const outcome = encoder.encode(raw);
    expect(outcome.ok).toBe(false);
    if (!outcome.ok) {
      expect(outcome.issues.map((i) => `${i.field}:${i.code}`)).toEqual(expected);
      for (const issue of outcome.issues) expect(issue.message.length).toBeGreaterThan(5);
    }
  });

  it("takes a blank value of a feature with a default as the default (a form's empty field)", () => {
    const withDefaults = createEncoder(
      encodingSchema.parse({
        input: { name: "x", dtype: "int64" },
        features: [
          { name: "airport", type: "categorical", vocabulary: ["SFO", "LAX"], default: "LAX" },
          { name: "hour", type: "integer", min: 0, max: 23, default: 3 },
          { name: "bags", type: "integer", min: 0, max: 9 },
        ],
      }),
    );
    const keyOf = (raw: Record<string, unknown>) => {
      const outcome = withDefaults.encode(raw);
      return outcome.ok ? outcome.value.key : outcome.issues.map((i) => `${i.field}:${i.code}`);
    };
    expect(keyOf({ bags: "1" })).toBe('["LAX",3,1]');
    expect(keyOf({ airport: "", hour: " ", bags: "1" })).toBe('["LAX",3,1]');
    expect(keyOf({ airport: null, hour: null, bags: "1" })).toBe('["LAX",3,1]');
    // No default: blank is still an error, as before.
    expect(keyOf({ bags: "" })).toEqual(["bags:not_integer"]);
  });

  it("refuses what is not an object of features with an issue, not a TypeError", () => {
    for (const raw of [null, undefined, [], "SFO", 7])
      expect(encoder.encode(raw as unknown as Record<string, unknown>)).toEqual({
        ok: false,
        issues: [
          { field: "", code: "wrong_type", message: "an input must be an object of features" },
        ],
      });
  });

  it("lists every offending field at once", () => {
    const outcome = encoder.encode({
      airport: "",
      cabin: "first",
      hour: "x",
      bags: [1],
      distance: "NaN",
      extra: 1,
    });
    expect(outcome.ok).toBe(false);
    if (!outcome.ok)
      expect(outcome.issues.map((i) => i.field).sort()).toEqual([
        "airport",
        "bags",
        "cabin",
        "distance",
        "extra",
        "hour",
      ]);
  });

  it("hashes the definition but not its descriptions", () => {
    const described = {
      ...fixtureEncoding,
      features: fixtureEncoding.features.map((f) => ({ ...f, description: "words" })),
    };
    expect(createEncoder(described).hash).toBe(encoder.hash);
    const changed = {
      ...fixtureEncoding,
      features: fixtureEncoding.features.map((f) => (f.name === "hour" ? { ...f, max: 22 } : f)),
    };
    expect(createEncoder(changed).hash).not.toBe(encoder.hash);
  });

  it("reproduces the committed golden keys in a fresh process with another locale and time zone", () => {
    const golden = JSON.parse(
      readFileSync(new URL("../golden/encoding.golden.json", import.meta.url), "utf8"),
    );
    const output = execFileSync(
      process.execPath,
      ["--import", "tsx", "test/golden/print-encodings.ts"],
      {
        env: { ...process.env, TZ: "Pacific/Chatham", LANG: "tr_TR.UTF-8", LC_ALL: "tr_TR.UTF-8" },
        encoding: "utf8",
      },
    );
    const fresh = JSON.parse(output);
    expect(fresh.encodingHash).toBe(golden.encodingHash);
    expect(fresh.cases).toEqual(golden.cases);
    // And this process agrees too.
    expect(encoder.hash).toBe(golden.encodingHash);
  });
});
