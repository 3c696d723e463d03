import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { LookupTable } from "../../src/client/lookup-table.ts";
import { createEncoder } from "../../src/model/encoding.ts";
import { outputsSchema } from "../../src/model/manifest.ts";
import { applyDelta, computeDelta } from "../../src/table/delta.ts";
import {
  encodeTable,
  packValue,
  parseTable,
  sortEntries,
  type TableDescription,
  TableFormatError,
  valuePackr,
} from "../../src/table/format.ts";
import { keyHash } from "../../src/table/key-hash.ts";
import { fixtureEncoding } from "../fixtures/encoding.ts";

const encoder = createEncoder(fixtureEncoding);
const outputs = outputsSchema.parse([
  { name: "p", tensor: "p", kind: "probability", digits: 4 },
  { name: "minutes", tensor: "m", kind: "regression", digits: 1 },
]);
const description: TableDescription = {
  model: "fixture",
  modelVersion: "0123456789ab",
  encodingHash: encoder.hash,
  inputSchema: fixtureEncoding,
  outputs,
  created: "2026-11-23T00:00:00.000Z",
  generation: "0123456789ab.g1",
  source: "property test",
};

const input = fc.record({
  airport: fc.constantFrom("ATL", "LAX", "ORD", "SFO", "XYZ", "Zürich"),
  cabin: fc.constantFrom("economy", "business"),
  hour: fc.integer({ min: 0, max: 23 }),
  bags: fc.integer({ min: 0, max: 5 }),
  distance: fc.integer({ min: 0, max: 5000 }),
});
const entry = fc.record({
  input,
  p: fc.integer({ min: 0, max: 10_000 }).map((n) => n / 10_000),
  minutes: fc.integer({ min: -600, max: 3000 }).map((n) => n / 10),
});
const entrySet = fc.uniqueArray(entry, {
  selector: (e) =>
    encoder.encode(e.input).ok && (encoder.encode(e.input) as { value: { key: string } }).value.key,
  maxLength: 200,
});

function keyOf(raw: Record<string, unknown>): string {
  const e = encoder.encode(raw);
  if (!e.ok) throw new Error("invalid");
  return e.value.key;
}

async function build(
  entries: { input: Record<string, unknown>; p: number; minutes: number }[],
  generation = "0123456789ab.g1",
): Promise<Uint8Array> {
  const hashes = entries.map((e) => keyHash(keyOf(e.input)));
  const sorted = sortEntries(
    Uint32Array.from(hashes, (h) => h.hi),
    Uint32Array.from(hashes, (h) => h.lo),
    entries.map((e) => packValue([e.p, e.minutes])),
  );
  return encodeTable({ ...description, generation }, sorted);
}

describe("lookup table format", () => {
  it("reads back every written entry, and nothing else", async () => {
    await fc.assert(
      fc.asyncProperty(entrySet, input, async (entries, probe) => {
        const table = await LookupTable.open(await build(entries));
        expect(table.size).toBe(entries.length);
        for (const e of entries) expect(table.get(e.input)).toEqual({ p: e.p, minutes: e.minutes });
        const covered = entries.some((e) => keyOf(e.input) === keyOf(probe));
        if (!covered) expect(table.get(probe)).toBeUndefined();
      }),
      { numRuns: 150 },
    );
  });

  it("packs numeric values at one width (no offsets array) and decodes them exactly", async () => {
    fc.assert(
      fc.property(
        fc.array(
          fc.oneof(
            fc.double({ noNaN: true }),
            fc.integer(),
            fc.integer({ min: -1e6, max: 1e6 }).map((n) => n / 100),
          ),
          { minLength: 1, maxLength: 4 },
        ),
        (values) => {
          expect(valuePackr.unpack(packValue(values))).toEqual(values);
        },
      ),
      { numRuns: 500 },
    );
    const bytes = await build([
      { input: { airport: "SFO", hour: 1, bags: 0, distance: 10 }, p: 0.5, minutes: 3 },
      { input: { airport: "LAX", hour: 2, bags: 1, distance: 20 }, p: 0.1088, minutes: -1.5 },
    ]);
    expect(parseTable(bytes).header.valueStride).toBe(11);
  });

  it("detects any flipped byte", async () => {
    const bytes = await build([
      { input: { airport: "SFO", hour: 1, bags: 0, distance: 10 }, p: 0.5, minutes: 3 },
      { input: { airport: "LAX", hour: 2, bags: 1, distance: 20 }, p: 0.25, minutes: -1.5 },
    ]);
    await fc.assert(
      fc.asyncProperty(
        fc.integer({ min: 0, max: bytes.length - 1 }),
        fc.integer({ min: 1, max: 255 }),
        async (at, flip) => {
          const corrupt = bytes.slice();
          corrupt[at] = (corrupt[at] as number) ^ flip;
          await expect(LookupTable.open(corrupt)).rejects.toThrow(TableFormatError);
        },
      ),
      { numRuns: 300 },
    );
  });

  it("detects any truncation, and says it is incomplete when the bytes end early", async () => {
    const bytes = await build([
      { input: { airport: "ORD", hour: 5, bags: 2, distance: 99 }, p: 0.1, minutes: 0 },
    ]);
    await fc.assert(
      fc.asyncProperty(fc.integer({ min: 0, max: bytes.length - 1 }), async (length) => {
        const error = await LookupTable.open(bytes.slice(0, length)).catch((e: unknown) => e);
        expect(error).toBeInstanceOf(TableFormatError);
      }),
      { numRuns: 200 },
    );
    expect(() => parseTable(bytes.slice(0, bytes.length - 10))).toThrow(
      expect.objectContaining({ incomplete: true }),
    );
  });

  it("rebuilds B byte for byte from A and delta(A → B)", async () => {
    await fc.assert(
      fc.asyncProperty(entrySet, entrySet, async (a, b) => {
        const bytesA = await build(a, "0123456789ab.a");
        const bytesB = await build(b, "0123456789ab.b");
        const delta = computeDelta(parseTable(bytesA), parseTable(bytesB));
        expect(await applyDelta(parseTable(bytesA), delta)).toEqual(bytesB);
      }),
      { numRuns: 100 },
    );
  });

  it("never rebuilds a wrong table from a damaged delta", async () => {
    const entries = [
      { input: { airport: "SFO", hour: 1, bags: 0, distance: 10 }, p: 0.5, minutes: 3 },
      { input: { airport: "LAX", hour: 2, bags: 1, distance: 20 }, p: 0.25, minutes: -1.5 },
      { input: { airport: "ORD", hour: 3, bags: 2, distance: 30 }, p: 0.75, minutes: 9 },
    ];
    const a = parseTable(await build(entries.slice(0, 2), "0123456789ab.a"));
    const bytesB = await build(entries.slice(1), "0123456789ab.b");
    const delta = computeDelta(a, parseTable(bytesB));
    await fc.assert(
      fc.asyncProperty(
        fc.integer({ min: 0, max: delta.length - 1 }),
        fc.integer({ min: 1, max: 255 }),
        fc.boolean(),
        async (at, flip, truncate) => {
          const damaged = truncate ? delta.slice(0, at) : delta.slice();
          if (!truncate) damaged[at] = (damaged[at] as number) ^ flip;
          // Either refused with a TableFormatError, or (a flip in a byte nobody reads,
          // e.g. a generation name) the exact target: never something else.
          const result = await applyDelta(a, damaged).catch((e: unknown) => e);
          if (result instanceof Uint8Array) expect(result).toEqual(bytesB);
          else expect(result).toBeInstanceOf(TableFormatError);
        },
      ),
      { numRuns: 300 },
    );
  });

  it("refuses an index out of order and unknown flags even under a valid checksum", async () => {
    const bytes = await build([
      { input: { airport: "SFO", hour: 1, bags: 0, distance: 10 }, p: 0.5, minutes: 3 },
      { input: { airport: "LAX", hour: 2, bags: 1, distance: 20 }, p: 0.25, minutes: -1.5 },
    ]);
    const { header } = parseTable(bytes);
    const resign = async (edit: (b: Uint8Array) => void) => {
      const body = bytes.slice(0, bytes.length - 32);
      edit(body);
      const sum = new Uint8Array(await crypto.subtle.digest("SHA-256", body));
      return Uint8Array.from([...body, ...sum]);
    };
    const swapped = await resign((b) => {
      const view = new DataView(b.buffer);
      for (const at of [header.indexOffset, header.indexOffset + 8]) {
        const first = view.getUint32(at, true);
        view.setUint32(at, view.getUint32(at + 4, true), true);
        view.setUint32(at + 4, first, true);
      }
    });
    await expect(LookupTable.open(swapped)).rejects.toThrow(/ascending order/);
    const flagged = await resign((b) => {
      b[10] = 1;
    });
    await expect(LookupTable.open(flagged)).rejects.toThrow(/unknown table flags/);
  });

  it("refuses a delta made from another table", async () => {
    const a = await build(
      [{ input: { airport: "ATL", hour: 1, bags: 0, distance: 1 }, p: 0.2, minutes: 1 }],
      "0123456789ab.a",
    );
    const b = await build([], "0123456789ab.b");
    const c = await build(
      [{ input: { airport: "SFO", hour: 1, bags: 0, distance: 1 }, p: 0.2, minutes: 1 }],
      "0123456789ab.c",
    );
    const delta = computeDelta(parseTable(a), parseTable(b));
    await expect(applyDelta(parseTable(c), delta)).rejects.toThrow(/another table/);
  });

  it("refuses a table built with another encoding than the app expects", async () => {
    const bytes = await build([]);
    await expect(LookupTable.open(bytes, { encodingHash: "ffffffffffffffff" })).rejects.toThrow(
      /expects ffffffffffffffff/,
    );
  });

  it("hashes keys as documented (MurmurHash3 x86_32 seed 0x9747b28c, FNV-1a 32)", () => {
    expect(keyHash("Hello, world!").hi).toBe(0x24884cba);
    expect(keyHash("a").lo).toBe(0xe40c292c);
    expect(keyHash("Zürich")).toEqual(keyHash("Zu\u0308rich".normalize("NFC")));
  });

  it("hashes any string like a plain reference over its UTF-8 bytes", () => {
    // Textbook versions, one hash at a time, to check the fused single-pass one against.
    const at = (b: Uint8Array, i: number) => b[i] as number;
    const murmur = (b: Uint8Array) => {
      let h = 0x9747b28c;
      const mix = (k0: number) => {
        let k = Math.imul(k0, 0xcc9e2d51);
        k = (k << 15) | (k >>> 17);
        return Math.imul(k, 0x1b873593);
      };
      const blocks = b.length - (b.length % 4);
      for (let i = 0; i < blocks; i += 4) {
        h ^= mix(at(b, i) | (at(b, i + 1) << 8) | (at(b, i + 2) << 16) | (at(b, i + 3) << 24));
        h = (h << 13) | (h >>> 19);
        h = (Math.imul(h, 5) + 0xe6546b64) | 0;
      }
      let t = 0;
      for (let i = b.length - 1; i >= blocks; i--) t = (t << 8) | at(b, i);
      if (b.length % 4) h ^= mix(t);
      h ^= b.length;
      h = Math.imul(h ^ (h >>> 16), 0x85ebca6b);
      h = Math.imul(h ^ (h >>> 13), 0xc2b2ae35);
      return (h ^ (h >>> 16)) >>> 0;
    };
    const fnv = (b: Uint8Array) =>
      b.reduce((f, x) => Math.imul(f ^ x, 0x01000193), 0x811c9dc5) >>> 0;
    fc.assert(
      fc.property(
        fc.oneof(fc.string({ unit: "binary" }), fc.string({ unit: "grapheme-ascii" })),
        (text) => {
          const bytes = new TextEncoder().encode(text);
          expect(keyHash(text)).toEqual({ hi: murmur(bytes), lo: fnv(bytes) });
        },
      ),
      { numRuns: 500 },
    );
  });
});
