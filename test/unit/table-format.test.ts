import fc from "fast-check";
import { pack, unpack } from "msgpackr";
import { describe, expect, it } from "vitest";
import { LookupTable } from "../../src/client/lookup-table.ts";
import { createEncoder } from "../../src/model/encoding.ts";
import { encodingSchema, outputsSchema } from "../../src/model/manifest.ts";
import { applyDelta, computeDelta, DeltaUnavailableError } from "../../src/table/delta.ts";
import { EntryCollector, settleEntries } from "../../src/table/entries.ts";
import {
  encodeTable,
  packValue,
  parseTable,
  pickEntries,
  sortEntries,
  type TableDescription,
  TableFormatError,
  type TableHeader,
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

/** A table of these outputs: each key's values in output order, packed as the builder does. */
async function tableOf(
  tableOutputs: TableDescription["outputs"],
  keys: readonly string[],
  values: readonly (readonly unknown[])[],
  generation = "0123456789ab.g1",
  more: Partial<TableDescription> = {},
): Promise<Uint8Array> {
  const collected = new EntryCollector(tableOutputs);
  keys.forEach((key, i) => {
    const { hi, lo } = keyHash(key);
    collected.push(hi, lo, values[i] as unknown[]);
  });
  const settled = settleEntries(collected, 0, generation);
  return encodeTable(
    { ...description, outputs: tableOutputs, generation, ...more },
    pickEntries(collected.entries(), settled.order),
  );
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

  it("packs values as fixed-point fields of the bits their range needs", async () => {
    const bytes = await build([
      { input: { airport: "SFO", hour: 1, bags: 0, distance: 10 }, p: 0.5, minutes: 3 },
      { input: { airport: "LAX", hour: 2, bags: 1, distance: 20 }, p: 0.1088, minutes: -1.5 },
    ]);
    const header = parseTable(bytes).header as TableHeader;
    expect(header).toMatchObject({
      valueEncoding: "packed",
      // p: 1088 … 5000 (3912 needs 12 bits); minutes: −15 … 30 (45 needs 6 bits)
      columns: [
        { min: 1088, bits: 12 },
        { min: -15, bits: 6 },
      ],
      directoryBits: 0,
      valuesLength: 12, // 2 × 18 bits in two u32 words, then the spare word
    });
    // The msgpack fallback's numbers: float32 when that decodes back exactly, else float64.
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

  it("names the header field it refuses", async () => {
    const bytes = await build([
      { input: { airport: "SFO", hour: 1, bags: 0, distance: 10 }, p: 0.5, minutes: 3 },
    ]);
    const length = new DataView(bytes.buffer, bytes.byteOffset).getUint32(12, true);
    const header = unpack(bytes.subarray(16, 16 + length));
    header.outputs[1].kind = "bogus";
    const forged = pack(header);
    const preamble = bytes.slice(0, 16);
    new DataView(preamble.buffer).setUint32(12, forged.length, true);
    const table = Uint8Array.from([...preamble, ...forged, ...bytes.subarray(16 + length)]);
    expect(() => parseTable(table)).toThrow(/^header is invalid at outputs\.1\.kind: /);
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

  it("refuses a bad index, padding or flags even under a valid checksum", async () => {
    const bytes = await build([
      { input: { airport: "SFO", hour: 1, bags: 0, distance: 10 }, p: 0.5, minutes: 3 },
      { input: { airport: "LAX", hour: 2, bags: 1, distance: 20 }, p: 0.25, minutes: -1.5 },
    ]);
    const header = parseTable(bytes).header as TableHeader;
    // n = 2, d = 0: directory [0, 2], keys (2 × 4 bytes), key bytes (2 × 3), 2 padding bytes.
    const directory = header.indexOffset;
    const keys = directory + 8;
    const keyBytes = keys + 8;
    expect(header.valuesOffset).toBe(keyBytes + 8);
    const resign = async (edit: (b: Uint8Array) => void) => {
      const body = bytes.slice(0, bytes.length - 32);
      edit(body);
      const sum = new Uint8Array(await crypto.subtle.digest("SHA-256", body));
      return Uint8Array.from([...body, ...sum]);
    };
    const swap = (b: Uint8Array, at: number, size: number) => {
      const first = b.slice(at, at + size);
      b.copyWithin(at, at + size, at + 2 * size);
      b.set(first, at + size);
    };
    const cases: [(b: Uint8Array) => void, RegExp][] = [
      [
        (b) => {
          swap(b, keys, 4);
          swap(b, keyBytes, 3);
        },
        /index not in ascending order at entry 1/,
      ],
      [(b) => b.set([1], directory), /directory does not start at 0/],
      [(b) => b.set([1], directory + 4), /directory does not end at the entry count/],
      [(b) => b.set([1], keyBytes + 6), /padding is not zero/],
      [(b) => b.set([1], header.valuesOffset + 11), /bits set after the last entry/],
      [(b) => b.set([1], 10), /unknown table flags 0x1/],
      [(b) => b.set([3], 8), /unsupported table format version 3/],
    ];
    for (const [edit, message] of cases)
      await expect(LookupTable.open(await resign(edit))).rejects.toThrow(message);
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
  it("round-trips every value exactly: packed when it can be, else as msgpack", async () => {
    const regression = (digits: number) =>
      outputsSchema.parse([{ name: "v", tensor: "v", kind: "regression", digits }]);
    const representable = (digits: number) =>
      fc
        .integer({ min: -(2 ** 53) + 1, max: 2 ** 53 - 1 })
        .map((i) => i / 10 ** digits)
        .filter((v) => isFixedPoint(v, digits));
    await fc.assert(
      fc.asyncProperty(
        fc.integer({ min: 0, max: 12 }).chain((digits) =>
          fc.record({
            digits: fc.constant(digits),
            values: fc.array(
              fc.oneof(
                { weight: 8, arbitrary: representable(digits) },
                { weight: 1, arbitrary: fc.double() }, // NaN, ±Infinity, −0, too many digits
              ),
              { minLength: 1, maxLength: 40 },
            ),
          }),
        ),
        async ({ digits, values }) => {
          const keys = values.map((_, i) => `["k${i}"]`);
          const bytes = await tableOf(
            regression(digits),
            keys,
            values.map((v) => [v]),
          );
          const table = await LookupTable.open(bytes);
          keys.forEach((key, i) => {
            expect(Object.is(table.getByKey(key)?.v, values[i])).toBe(true);
          });
          const header = table.header as TableHeader;
          if (!values.every((v) => isFixedPoint(v, digits)))
            expect(header.valueEncoding).toBe("msgpack");
          // Packed whenever the column fits the format's limits (§2): certainly when every
          // integer is below 2^51 in magnitude (min + 2^bits − 1 stays a safe integer).
          const small = values.every((v) => Math.abs(v * 10 ** digits) < 2 ** 51);
          if (values.every((v) => isFixedPoint(v, digits)) && small)
            expect(header.valueEncoding).toBe("packed");
        },
      ),
      { numRuns: 300 },
    );
  });

  it("packs classes outputs: each probability and the label, even one that is not the top", async () => {
    const classes = outputsSchema.parse([
      { name: "kind", tensor: "k", kind: "classes", labels: ["bird", "cat", "dog"], digits: 2 },
      { name: "p", tensor: "p", kind: "probability", digits: 3 },
    ]);
    const rows: unknown[][] = [
      [{ label: "cat", probabilities: { bird: 0.33, cat: 0.33, dog: 0.34 } }, 0.5],
      [{ label: "bird", probabilities: { bird: 1, cat: 0, dog: 0 } }, 0.001],
      [{ label: "dog", probabilities: { bird: 0.2, cat: 0.3, dog: 0.5 } }, 1],
    ];
    const keys = rows.map((_, i) => `["c${i}"]`);
    const table = await LookupTable.open(await tableOf(classes, keys, rows));
    const header = table.header as TableHeader;
    expect(header.valueEncoding).toBe("packed");
    // bird 20…100, cat 0…33, dog 0…50, the label index 0…2, p 1…1000
    expect(header.columns.map((c) => c.bits)).toEqual([7, 6, 6, 2, 10]);
    keys.forEach((key, i) => {
      const [kind, p] = rows[i] as unknown[];
      // The same keys in the same order as the server's JSON.
      expect(JSON.stringify(table.getByKey(key))).toBe(JSON.stringify({ kind, p }));
    });
    // Anything a classes column cannot hold exactly keeps the table in msgpack, unchanged.
    for (const odd of [
      { label: "fish", probabilities: { bird: 0.2, cat: 0.3, dog: 0.5 } },
      { label: "dog", probabilities: { cat: 0.3, bird: 0.2, dog: 0.5 } },
      { label: "dog", probabilities: { bird: 0.2, cat: 0.3, dog: 0.5 }, extra: 1 },
      { label: "dog", probabilities: { bird: 0.2, cat: 0.3, dog: 0.555 } },
    ]) {
      const mixed = await LookupTable.open(
        await tableOf(classes, [...keys, '["odd"]'], [...rows, [odd, 0.5]]),
      );
      expect((mixed.header as TableHeader).valueEncoding).toBe("msgpack");
      expect(JSON.stringify(mixed.getByKey('["odd"]'))).toBe(JSON.stringify({ kind: odd, p: 0.5 }));
      expect(JSON.stringify(mixed.getByKey(keys[0] as string))).toBe(
        JSON.stringify({ kind: rows[0]?.[0], p: 0.5 }),
      );
    }
    // Repeated labels cannot be one probabilities object: msgpack from the start.
    const repeated = outputsSchema.parse([
      { name: "kind", tensor: "k", kind: "classes", labels: ["a", "a"], digits: 2 },
    ]);
    const value = { label: "a", probabilities: { a: 0.5 } };
    const odd = await LookupTable.open(await tableOf(repeated, ['["r"]'], [[value]]));
    expect((odd.header as TableHeader).valueEncoding).toBe("msgpack");
    expect(odd.getByKey('["r"]')).toEqual({ kind: value });
  });

  it("rebuilds B from A and delta(A → B) for every value layout, or says there is no delta", async () => {
    const wide = outputsSchema.parse([
      { name: "kind", tensor: "k", kind: "classes", labels: ["x", "y"], digits: 2 },
      { name: "big", tensor: "b", kind: "regression", digits: 3 },
    ]);
    const row = fc.tuple(
      fc.integer({ min: 0, max: 100 }),
      fc.boolean(),
      fc.oneof(
        {
          weight: 9,
          arbitrary: fc.integer({ min: -(2 ** 50), max: 2 ** 50 }).map((n) => n / 1000),
        },
        { weight: 1, arbitrary: fc.constant(Number.NaN) }, // forces msgpack
      ),
    );
    const rows = fc.dictionary(fc.string({ minLength: 1, maxLength: 6 }), row, { maxKeys: 60 });
    const file = (rows: Record<string, [number, boolean, number]>, generation: string) =>
      tableOf(
        wide,
        Object.keys(rows),
        Object.values(rows).map(([x, top, big]) => [
          { label: top ? "x" : "y", probabilities: { x: x / 100, y: (100 - x) / 100 } },
          big,
        ]),
        generation,
      );
    await fc.assert(
      fc.asyncProperty(rows, rows, async (a, b) => {
        const bytesA = await file(a, "0123456789ab.a");
        const bytesB = await file(b, "0123456789ab.b");
        const [ta, tb] = [parseTable(bytesA), parseTable(bytesB)];
        const encodings = [ta, tb].map((t) => (t.header as TableHeader).valueEncoding);
        if (encodings[0] !== encodings[1]) {
          expect(() => computeDelta(ta, tb)).toThrow(DeltaUnavailableError);
          return;
        }
        expect(await applyDelta(ta, computeDelta(ta, tb))).toEqual(bytesB);
      }),
      { numRuns: 150 },
    );
  });

  it("matches keys on the top 56 bits of their hash, and refuses two keys sharing them", async () => {
    const hi = 0x12345678;
    const lo = 0x9abcde00;
    const sorted = (los: number[]) =>
      sortEntries(
        Uint32Array.from(los, () => hi),
        Uint32Array.from(los),
        los.map((_, i) => packValue([i / 10, 1])),
      );
    expect(() => sorted([lo + 0x10, lo + 0x11])).toThrow(/share one 56-bit hash/);
    const table = await LookupTable.open(await encodeTable(description, sorted([lo, lo + 256])));
    expect(table.getByHash(hi, lo)).toEqual({ p: 0, minutes: 1 });
    expect(table.getByHash(hi, lo + 0xf)).toEqual({ p: 0, minutes: 1 }); // bits 0–7: not stored
    expect(table.getByHash(hi, lo + 256)).toEqual({ p: 0.1, minutes: 1 });
    expect(table.getByHash(hi + 1, lo)).toBeUndefined();
    expect([...table.entries()].map((e) => [e.hi, e.lo])).toEqual([
      [hi, lo],
      [hi, lo + 256],
    ]);
  });

  it("uses 0, 8 and 16 directory bits as tables grow, and finds every entry in each", async () => {
    for (const [n, bits] of [
      [1023, 0],
      [1024, 8],
      [2 ** 18, 16],
    ] as const) {
      const keys = Array.from({ length: n }, (_, i) => `["k",${i}]`);
      const value = (i: number) => ({ p: (i % 10_001) / 10_000, minutes: (i % 301) / 10 });
      const bytes = await tableOf(
        outputs,
        keys,
        keys.map((_, i) => [value(i).p, value(i).minutes]),
      );
      const table = await LookupTable.open(bytes);
      expect((table.header as TableHeader).directoryBits).toBe(bits);
      const step = n > 5000 ? 97 : 1;
      for (let i = 0; i < n; i += step) expect(table.getByKey(keys[i] as string)).toEqual(value(i));
      expect(table.getByKey('["k",-1]')).toBeUndefined();
      const hashes = [...table.entries()];
      expect(hashes.length).toBe(n);
      for (const { hi, lo, prediction } of hashes.slice(0, 300))
        expect(table.getByHash(hi, lo)).toEqual(prediction);
    }
  });

  it("settles keys that share a table hash as the builder does", () => {
    const c = new EntryCollector(outputs);
    const low = 0x01020300;
    c.push(0x10, low, [0.1, 1]); // the previous table's entry (below: baseCount 1) …
    c.push(0x10, low + 7, [0.2, 2]); // … replaced by a run key with its table hash
    c.push(0x20, low + 1, [0.3, 3]); // two run keys sharing a table hash: neither is kept
    c.push(0x20, low + 2, [0.3, 3]);
    c.push(0x30, low, [0.4, 4]); // one key read twice: kept once
    c.push(0x30, low, [0.4, 4]);
    const settled = settleEntries(c, 1, "g");
    expect(settled.changed).toBe(true);
    expect([...settled.dropped]).toEqual([`${0x20}:${low >>> 8}`]);
    const kept = pickEntries(c.entries(), settled.order);
    expect([...kept.hi]).toEqual([0x10, 0x30]);
    expect(kept.values).toMatchObject({
      kind: "packed",
      ints: Float64Array.of(2000, 20, 4000, 40),
    });
    c.push(0x30, low, [0.5, 4]); // the same 64-bit hash with another value: two keys
    expect(() => settleEntries(c, 1, "g")).toThrow(/share one 64-bit hash/);
    const unchanged = new EntryCollector(outputs);
    unchanged.push(0x10, low, [0.1, 1]);
    unchanged.push(0x10, low, [0.1, 1]);
    expect(settleEntries(unchanged, 1, "g").changed).toBe(false);
  });

  it("still reads version 1 tables (the previous spec's worked example)", async () => {
    const bytes = Uint8Array.from(V1_EXAMPLE.match(/../g) as string[], (h) => parseInt(h, 16));
    const table = await LookupTable.open(bytes);
    expect(table.formatVersion).toBe(1);
    expect(table.checksum).toBe("2dffecf25b6fc025dd601bff4cf67af8ce33072b831aad42ab44ec67bc3b3e5d");
    expect(table.get({ airport: "lax", hour: "23" })).toEqual({ p: 0.25, minutes: 12 });
    expect(table.get({ airport: " SFO ", hour: 8 })).toEqual({ p: 0.5, minutes: -1.5 });
    expect(table.get({ airport: "LAX", hour: 0 })).toBeUndefined();
    // Its entries written again as version 2: each table finds the other's hashes.
    const v1 = [...table.entries()];
    const { inputSchema, encodingHash } = table.header;
    const v2 = await LookupTable.open(
      await encodeTable(
        { ...description, inputSchema, encodingHash },
        sortEntries(
          Uint32Array.from(v1, (e) => e.hi),
          Uint32Array.from(v1, (e) => e.lo),
          v1.map((e) => packValue([e.prediction.p, e.prediction.minutes])),
        ),
      ),
    );
    expect(v2.formatVersion).toBe(2);
    for (const e of v1) expect(v2.getByHash(e.hi, e.lo)).toEqual(e.prediction);
    for (const e of v2.entries()) expect(table.getByHash(e.hi, e.lo)).toEqual(e.prediction);
    expect(() => computeDelta(table.parsed, v2.parsed)).toThrow(DeltaUnavailableError);
    // The same bytes labelled version 2 are refused.
    const relabelled = bytes.slice();
    relabelled[8] = 2;
    await expect(LookupTable.open(relabelled)).rejects.toThrow(TableFormatError);
  });

  it("writes the worked example of docs/table-format.md byte for byte", async () => {
    const inputSchema = encodingSchema.parse({
      input: { name: "x", dtype: "int64" },
      features: [
        { name: "airport", type: "categorical", vocabulary: ["LAX", "SFO"], normalize: "upper" },
        { name: "hour", type: "integer", min: 0, max: 23 },
      ],
    });
    const example = (generation: string, created: string, rows: [string, number, number][]) =>
      tableOf(
        outputs,
        rows.map((r) => r[0]),
        rows.map((r) => [r[1], r[2]]),
        generation,
        {
          model: "demo",
          inputSchema,
          encodingHash: createEncoder(inputSchema).hash,
          created,
          source: "example",
        },
      );
    const a = await example("0123456789ab.a", "2026-01-01T00:00:00.000Z", [
      ['["SFO",7]', 0.1088, 0.3],
      ['["SFO",8]', 0.5, -1.5],
      ['["LAX",23]', 0.25, 12],
    ]);
    const b = await example("0123456789ab.b", "2026-01-02T00:00:00.000Z", [
      ['["SFO",7]', 0.1088, 0.3],
      ['["LAX",23]', 0.2, 12],
      ['["LAX",0]', 0.0625, 0],
    ]);
    const [ta, tb] = [parseTable(a), parseTable(b)];
    expect([a.length, ta.checksum]).toEqual([780, DOC_EXAMPLE.checksumA]);
    expect([b.length, tb.checksum]).toEqual([780, DOC_EXAMPLE.checksumB]);
    expect(Buffer.from(a.subarray(704, 748)).toString("hex")).toBe(DOC_EXAMPLE.sectionsA);
    const delta = computeDelta(ta, tb);
    expect(delta.length).toBe(DOC_EXAMPLE.deltaLength);
    expect(await applyDelta(ta, delta)).toEqual(b);
  });
});

function isFixedPoint(v: number, digits: number): boolean {
  const i = Math.round(v * 10 ** digits);
  return Number.isSafeInteger(i) && i / 10 ** digits === v && !Object.is(v, -0);
}

/** The spec's worked example (docs/table-format.md §11). */
const DOC_EXAMPLE = {
  checksumA: "e85acda94f200766821aee1f9f8f58aa103113c8adec8886c8830790a024c3bd",
  checksumB: "891cc72367e4003b1f70994781868df16e16578b0d57868f964e9a0d471788e7",
  /** Table a's bytes 704–747: directory, keys, key bytes, padding, values. */
  sectionsA:
    "0000000003000000" +
    "5ff80a5e" +
    "dcfb6c99" +
    "5f7281ac" +
    "8f4e73" +
    "232ab3" +
    "62d3ae" +
    "000000" +
    "002081f4" +
    "00847508" +
    "00000000",
  deltaLength: 1032,
};

/** The previous spec's worked example: a version 1 table of 3 entries. */
const V1_EXAMPLE =
  "895043540d0a1a0a0100000063020000de000fa6666f726d6174af7072656463616368652d7461626c65a56d" +
  "6f64656ca464656d6fac6d6f64656c56657273696f6eac303132333435363738396162ac656e636f64696e67" +
  "48617368b037353464303530393836643365313730ab696e707574536368656d61de0002a5696e707574de00" +
  "02a46e616d65a178a56474797065a5696e743634a8666561747572657392de0005a46e616d65a7616972706f" +
  "7274a474797065ab63617465676f726963616caa766f636162756c61727992a34c4158a353464fa96e6f726d" +
  "616c697a65a57570706572a7756e6b6e6f776ea672656a656374de0006a46e616d65a4686f7572a474797065" +
  "a7696e7465676572a36d696e00a36d617817a8656e636f64654173a576616c7565aa6f75744f6652616e6765" +
  "a672656a656374a76f75747075747392de0004a46e616d65a170a674656e736f72a170a46b696e64ab70726f" +
  "626162696c697479a664696769747304de0004a46e616d65a76d696e75746573a674656e736f72a16da46b69" +
  "6e64aa72656772657373696f6ea664696769747301a763726561746564b8323032362d30312d30315430303a" +
  "30303a30302e3030305aaa67656e65726174696f6eae3031323334353637383961622e61a6736f75726365a7" +
  "6578616d706c65a76b657948617368d9386d75726d7572335f33322873656564203078393734376232386329" +
  "203c3c203332207c20666e7631615f33322c206f766572205554462d38aa656e747279436f756e7403ab7661" +
  "6c756553747269646500ab696e6465784f6666736574cd0274ac76616c7565734f6666736574cd029cac7661" +
  "6c7565734c656e6774681d005ff80a5edcfb6c995f7281ac308f4e7317232ab34762d3ae000000000b000000" +
  "160000001d00000092ca3dded289ca3e99999a92ca3f000000cabfc0000092ca3e8000000c2dffecf25b6fc0" +
  "25dd601bff4cf67af8ce33072b831aad42ab44ec67bc3b3e5d";
