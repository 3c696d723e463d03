/**
 * Lookup table benchmark — `npm run bench:table`. One run, side by side, in this process:
 *
 *   1. file size: the table vs the JSON an app would otherwise ship (an object canonical
 *      key → prediction) vs that JSON gzipped (node:zlib, default level);
 *   2. open time: LookupTable.open(bytes) as an app calls it (it always verifies the
 *      SHA-256 trailer: OpenOptions has no flag to skip it), its parts, vs JSON.parse;
 *   3. lookups/s: table.get(input) and table.getByKey(key) vs a Map<string, prediction>,
 *      over the same shuffled probes (hits and misses), in interleaved rounds.
 *
 * Data: N distinct real inputs of the demo model (flight-delay), drawn at random from its
 * schema's grid (origin × destination ≠ origin × hour × weekday), their canonical keys from
 * the shared encoding, and random model outputs (float32, as onnxruntime returns them)
 * decoded and rounded by the model's own decodeRow. Entries are collected and settled as the
 * table builder does (EntryCollector, settleEntries), so values are packed fixed-point fields
 * as in a published table. Targets are printed as PASS/MISS, never asserted; setup mistakes
 * do fail.
 *
 * BENCH_TABLE_ENTRIES (default 1,000,000) and BENCH_TABLE_LOOKUPS override the sizes.
 */
import { readFile } from "node:fs/promises";
import { arch, availableParallelism, cpus, platform } from "node:os";
import { performance } from "node:perf_hooks";
import { gzipSync } from "node:zlib";
import { LookupTable } from "../src/client/lookup-table.ts";
import { decodeRow, type OutputTensors, type Prediction } from "../src/model/decoding.ts";
import { createEncoder } from "../src/model/encoding.ts";
import { type Manifest, manifestSchema } from "../src/model/manifest.ts";
import { EntryCollector, settleEntries } from "../src/table/entries.ts";
import {
  encodeTable,
  parseTable,
  pickEntries,
  type TableDescription,
  type TableHeader,
  verifyTable,
} from "../src/table/format.ts";
import { keyHash } from "../src/table/key-hash.ts";
import { median, ratio, table } from "./lib/report.ts";

const MANIFEST = new URL("../seeds/models/flight-delay/manifest.json", import.meta.url);
const ENTRIES = Number(process.env.BENCH_TABLE_ENTRIES ?? 1_000_000);
const LOOKUPS = Number(
  process.env.BENCH_TABLE_LOOKUPS ?? Math.min(1_000_000, Math.max(ENTRIES, 100_000)),
);
/** Share of probes the table covers; the rest are other inputs of the same grid. */
const HIT_SHARE = 0.9;
const OPEN_REPS = 9;
const PARSE_REPS = 5;
const LOOKUP_ROUNDS = 5;
const TARGETS = { sizeVsGzip: 1, openMs: 50, lookupsPerSec: 2_000_000 };

type Input = Record<string, string | number>;

// ---------------------------------------------------------------------------- helpers

/** mulberry32: a tiny seeded PRNG, so every run sees the same data. */
function prng(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function fmtInt(n: number): string {
  return Math.round(n).toLocaleString("en-US");
}

function fmtMs(n: number): string {
  return n < 10 ? n.toFixed(2) : n.toFixed(1);
}

async function timed<T>(run: () => T | Promise<T>): Promise<number> {
  const started = performance.now();
  await run();
  return performance.now() - started;
}

// ---------------------------------------------------------------------------- data

/** The schema's grid: one axis per feature (vocabulary or integer range), schema order. */
function gridOf(manifest: Manifest): { names: string[]; axes: (string | number)[][] } {
  const names: string[] = [];
  const axes: (string | number)[][] = [];
  for (const feature of manifest.encoding.features) {
    names.push(feature.name);
    if (feature.type === "categorical") axes.push(feature.vocabulary);
    else if (feature.type === "integer")
      axes.push(Array.from({ length: feature.max - feature.min + 1 }, (_, i) => feature.min + i));
    else throw new Error(`${feature.name}: the bench grids categorical and integer features only`);
  }
  return { names, axes };
}

/** Grid cell `index` (the last axis varies fastest, like precompute's grid odometer). */
function digitsOf(index: number, axes: readonly (readonly unknown[])[], into: number[]): number[] {
  let rest = index;
  for (let a = axes.length - 1; a >= 0; a--) {
    const size = (axes[a] as readonly unknown[]).length;
    into[a] = rest % size;
    rest = Math.floor(rest / size);
  }
  return into;
}

function inputOf(index: number, grid: ReturnType<typeof gridOf>, digits: number[]): Input {
  digitsOf(index, grid.axes, digits);
  const input: Input = {};
  grid.names.forEach((name, a) => {
    input[name] = (grid.axes[a] as (string | number)[])[digits[a] as number] as string | number;
  });
  return input;
}

/** Random model outputs for `n` rows, as onnxruntime returns them (float32, [n, width]). */
function randomTensors(manifest: Manifest, n: number, random: () => number): OutputTensors {
  const tensors: OutputTensors = {};
  for (const output of manifest.outputs) {
    const width = output.kind === "classes" ? (output.labels ?? []).length : 1;
    const data = new Float32Array(n * width);
    for (let i = 0; i < data.length; i++) {
      const u = random();
      // probability: [0, 1); regression: a delay-like spread, mostly small, tail to ~100.
      data[i] = output.kind === "regression" ? -15 + 120 * u * u : u;
    }
    tensors[output.tensor] = { data, width };
  }
  return tensors;
}

/** The table file, its entries collected and settled as src/table/builder.ts does. */
async function tableFile(
  manifest: Manifest,
  encodingHash: string,
  keys: readonly string[],
  predictions: readonly Prediction[],
): Promise<Uint8Array> {
  const collected = new EntryCollector(manifest.outputs);
  for (let i = 0; i < keys.length; i++) {
    const { hi, lo } = keyHash(keys[i] as string);
    const prediction = predictions[i] as Prediction;
    collected.push(
      hi,
      lo,
      manifest.outputs.map((o) => prediction[o.name]),
    );
  }
  const settled = settleEntries(collected, 0, "bench");
  if (settled.dropped.size > 0)
    throw new Error(`${settled.dropped.size} pairs of keys share a 56-bit hash: change the seed`);
  const description: TableDescription = {
    model: manifest.name,
    modelVersion: "bench0000000",
    encodingHash,
    inputSchema: manifest.encoding,
    outputs: manifest.outputs,
    created: new Date().toISOString(),
    generation: "bench0000000.g1",
    source: "bench/table.ts (synthetic predictions)",
  };
  return encodeTable(description, pickEntries(collected.entries(), settled.order));
}

/** JSON of an object canonical key → prediction: in the given order, or shuffled. */
function jsonOf(
  keys: readonly string[],
  predictions: readonly Prediction[],
  shuffle?: () => number,
): string {
  const order = Uint32Array.from({ length: keys.length }, (_, i) => i);
  for (let i = order.length - 1; shuffle && i > 0; i--) {
    const j = Math.floor(shuffle() * (i + 1));
    const swap = order[i] as number;
    order[i] = order[j] as number;
    order[j] = swap;
  }
  const object: Record<string, Prediction> = {};
  for (const i of order) object[keys[i] as string] = predictions[i] as Prediction;
  return JSON.stringify(object);
}

// ---------------------------------------------------------------------------- lookups

interface Probes {
  inputs: Input[];
  keys: string[];
  expectedHits: number;
}

type Method = (probes: Probes) => number;

function runGet(lookup: LookupTable): Method {
  return ({ inputs }) => {
    let hits = 0;
    for (let i = 0; i < inputs.length; i++)
      if (lookup.get(inputs[i] as Input) !== undefined) hits++;
    return hits;
  };
}

function runGetByKey(lookup: LookupTable): Method {
  return ({ keys }) => {
    let hits = 0;
    for (let i = 0; i < keys.length; i++)
      if (lookup.getByKey(keys[i] as string) !== undefined) hits++;
    return hits;
  };
}

function runMap(map: Map<string, Prediction>): Method {
  return ({ keys }) => {
    let hits = 0;
    for (let i = 0; i < keys.length; i++) if (map.get(keys[i] as string) !== undefined) hits++;
    return hits;
  };
}

function runEncodeMap(
  map: Map<string, Prediction>,
  encoder: ReturnType<typeof createEncoder>,
): Method {
  return ({ inputs }) => {
    let hits = 0;
    for (let i = 0; i < inputs.length; i++) {
      const encoded = encoder.encode(inputs[i] as Input);
      if (encoded.ok && map.get(encoded.value.key) !== undefined) hits++;
    }
    return hits;
  };
}

// ---------------------------------------------------------------------------- main

async function main(): Promise<void> {
  const started = performance.now();
  const cpu = cpus()[0]?.model.trim() ?? "unknown CPU";
  console.log(`predcache table bench — Node ${process.version}, ${platform()}/${arch()}`);
  console.log(`CPUs: ${availableParallelism()} (${cpu})`);
  console.log("Note: figures are from ONE noisy run on this machine: compare the ratios.\n");

  const manifest = manifestSchema.parse(JSON.parse(await readFile(MANIFEST, "utf8")));
  const encoder = createEncoder(manifest.encoding);
  const grid = gridOf(manifest);
  const gridSize = grid.axes.reduce((n, axis) => n * axis.length, 1);
  // Routes, not self-loops: an input whose origin is its destination is not a flight.
  const [originAt, destinationAt] = [
    grid.names.indexOf("origin"),
    grid.names.indexOf("destination"),
  ];
  const digits: number[] = [];
  const cells = new Uint32Array(gridSize);
  let cellCount = 0;
  for (let index = 0; index < gridSize; index++) {
    digitsOf(index, grid.axes, digits);
    if (originAt >= 0 && destinationAt >= 0 && digits[originAt] === digits[destinationAt]) continue;
    cells[cellCount++] = index;
  }
  if (ENTRIES > cellCount)
    throw new Error(`the schema's grid holds ${cellCount} distinct inputs, fewer than ${ENTRIES}`);

  // Partial Fisher–Yates: cells[0, ENTRIES) are the table's inputs, the rest are misses.
  const random = prng(20010101);
  for (let i = 0; i < Math.min(cellCount - 1, ENTRIES); i++) {
    const j = i + Math.floor(random() * (cellCount - i));
    const swap = cells[i] as number;
    cells[i] = cells[j] as number;
    cells[j] = swap;
  }
  const chosen = cells.slice(0, ENTRIES).sort(); // grid order: how precompute enumerates them
  const others = cells.subarray(ENTRIES, cellCount);

  let t = performance.now();
  const keys: string[] = new Array(ENTRIES);
  for (let i = 0; i < ENTRIES; i++) {
    const encoded = encoder.encode(inputOf(chosen[i] as number, grid, digits));
    if (!encoded.ok) throw new Error(`grid input ${chosen[i]} does not encode`);
    keys[i] = encoded.value.key;
  }
  const tensors = randomTensors(manifest, ENTRIES, random);
  const predictions: Prediction[] = new Array(ENTRIES);
  for (let i = 0; i < ENTRIES; i++) predictions[i] = decodeRow(manifest, tensors, i);
  const dataMs = performance.now() - t;
  console.log(
    `Data: ${fmtInt(ENTRIES)} distinct inputs of ${manifest.name} out of ${fmtInt(cellCount)} routes × hours × days`,
  );
  console.log(`  e.g. ${keys[0]} → ${JSON.stringify(predictions[0])}`);
  console.log(`  e.g. ${keys[ENTRIES - 1]} → ${JSON.stringify(predictions[ENTRIES - 1])}`);

  t = performance.now();
  const file = await tableFile(manifest, encoder.hash, keys, predictions);
  const buildMs = performance.now() - t;
  const header = parseTable(file).header;

  // The JSON an app would otherwise ship, in grid order.
  t = performance.now();
  const json = jsonOf(keys, predictions);
  const jsonBytes = Buffer.byteLength(json);
  const jsonMs = performance.now() - t;
  t = performance.now();
  const gzipBytes = gzipSync(json).length;
  const gzipMs = performance.now() - t;
  const tableGzipBytes = gzipSync(file).length;
  // The same JSON with its keys in random order (the table's own order is by hash): how much
  // of gzip's win is the grid order's shared key prefixes.
  const shuffledGzipBytes = gzipSync(jsonOf(keys, predictions, random)).length;
  console.log(
    `  built in ${(dataMs / 1000).toFixed(1)} s (inputs, keys, predictions) + ${(buildMs / 1000).toFixed(1)} s (table) + ${(jsonMs / 1000).toFixed(1)} s (JSON) + ${(gzipMs / 1000).toFixed(1)} s (gzip)\n`,
  );

  // ------------------------------------------------------------------ 1. size
  const indexBytes = header.valuesOffset - header.indexOffset;
  const fixedBytes = file.length - indexBytes - header.valuesLength;
  console.log(`1. File size, ${fmtInt(ENTRIES)} entries\n`);
  console.log(
    table(
      ["format", "bytes", "bytes/entry", "× table"],
      [
        ["lookup table", fmtInt(file.length), (file.length / ENTRIES).toFixed(2), "1.00×"],
        [
          "JSON object key → prediction (grid order)",
          fmtInt(jsonBytes),
          (jsonBytes / ENTRIES).toFixed(2),
          ratio(jsonBytes, file.length),
        ],
        [
          "gzip(JSON), zlib default level",
          fmtInt(gzipBytes),
          (gzipBytes / ENTRIES).toFixed(2),
          ratio(gzipBytes, file.length),
        ],
        [
          "gzip(JSON), keys shuffled (info)",
          fmtInt(shuffledGzipBytes),
          (shuffledGzipBytes / ENTRIES).toFixed(2),
          ratio(shuffledGzipBytes, file.length),
        ],
        [
          "gzip(table) (info: over HTTP)",
          fmtInt(tableGzipBytes),
          (tableGzipBytes / ENTRIES).toFixed(2),
          ratio(tableGzipBytes, file.length),
        ],
      ],
    ),
  );
  const h = header as TableHeader;
  const directoryBytes = 4 * (2 ** h.directoryBits + 1);
  const recordBits = h.columns.reduce((sum, c) => sum + c.bits, 0);
  console.log(
    `  table per entry: ${(indexBytes / ENTRIES).toFixed(2)} index (${((indexBytes - directoryBytes) / ENTRIES).toFixed(2)} ` +
      `hash + ${(directoryBytes / ENTRIES).toFixed(2)} directory of 2^${h.directoryBits} buckets) + ` +
      `${(header.valuesLength / ENTRIES).toFixed(2)} values ` +
      (h.valueEncoding === "packed"
        ? `(packed fixed-point, ${recordBits} bits: ${h.columns.map((c) => c.bits).join(" + ")})`
        : `(msgpack${h.valueStride > 0 ? `, stride ${h.valueStride}` : ", offsets"})`) +
      `; ${fmtInt(fixedBytes)} bytes of preamble, header, padding and checksum`,
  );

  // ------------------------------------------------------------------ 2. open
  const arrayBuffer = new Uint8Array(file).buffer; // an exact ArrayBuffer, as fetch gives
  const openMs: number[] = [];
  const parseTableMs: number[] = [];
  const verifyMs: number[] = [];
  const jsonParseMs: number[] = [];
  let opened: LookupTable | undefined;
  for (let rep = 0; rep < OPEN_REPS; rep++) {
    openMs.push(
      await timed(async () => {
        opened = await LookupTable.open(arrayBuffer);
      }),
    );
    // What open does besides the checksum (parse + encoder, which checks the encoding hash).
    parseTableMs.push(
      await timed(() => createEncoder(parseTable(new Uint8Array(arrayBuffer)).header.inputSchema)),
    );
    verifyMs.push(await timed(() => verifyTable(new Uint8Array(arrayBuffer))));
  }
  for (let rep = 0; rep < PARSE_REPS; rep++) jsonParseMs.push(await timed(() => JSON.parse(json)));
  const lookup = opened as LookupTable;
  if (lookup.size !== ENTRIES) throw new Error(`table holds ${lookup.size}, not ${ENTRIES}`);
  const openMedian = median(openMs);
  const parseMedian = median(jsonParseMs);
  console.log("\n2. Open time (ms; median of the repetitions, first = cold)\n");
  console.log(
    table(
      ["step", "reps", "median", "first", "min", "max", "× open"],
      [
        ["LookupTable.open(ArrayBuffer), as an app", openMs],
        ["  parseTable + createEncoder (open − checksum)", parseTableMs],
        ["  verifyTable (SHA-256 of the file, WebCrypto)", verifyMs],
        ["JSON.parse(JSON text)", jsonParseMs],
      ].map(([name, times]) => {
        const ms = times as number[];
        return [
          name as string,
          String(ms.length),
          fmtMs(median(ms)),
          fmtMs(ms[0] as number),
          fmtMs(Math.min(...ms)),
          fmtMs(Math.max(...ms)),
          ratio(median(ms), openMedian),
        ];
      }),
    ),
  );
  console.log(
    "  open always verifies the checksum: OpenOptions has no flag to skip it; the row below it\n" +
      "  times the rest of what open does, called directly (not an API option).",
  );

  // ------------------------------------------------------------------ 3. lookups
  // Probes: hits drawn at random from the table, misses from the rest of the grid, shuffled;
  // every probe is a fresh input object and a freshly encoded key (not the Map's own string).
  const map = new Map<string, Prediction>();
  for (let i = 0; i < ENTRIES; i++) map.set(keys[i] as string, predictions[i] as Prediction);
  const probes: Probes = { inputs: [], keys: [], expectedHits: 0 };
  for (let p = 0; p < LOOKUPS; p++) {
    const hit = others.length === 0 || random() < HIT_SHARE;
    const cell = hit
      ? (chosen[Math.floor(random() * ENTRIES)] as number)
      : (others[Math.floor(random() * others.length)] as number);
    const input = inputOf(cell, grid, digits);
    const encoded = encoder.encode(input);
    if (!encoded.ok) throw new Error(`probe ${cell} does not encode`);
    probes.inputs.push(input);
    probes.keys.push(encoded.value.key);
    if (hit) probes.expectedHits++;
  }
  // Setup check: the table answers like the Map, for a sample of probes.
  for (let p = 0; p < Math.min(LOOKUPS, 20_000); p++) {
    const key = probes.keys[p] as string;
    const got = JSON.stringify(lookup.getByKey(key));
    const byInput = JSON.stringify(lookup.get(probes.inputs[p] as Input));
    const want = JSON.stringify(map.get(key));
    if (got !== want || byInput !== want)
      throw new Error(`table answers ${key} with ${got}, not ${want}`);
  }

  const methods: { name: string; run: Method }[] = [
    { name: "table.get(input)", run: runGet(lookup) },
    { name: "table.getByKey(key)", run: runGetByKey(lookup) },
    { name: "Map.get(key)", run: runMap(map) },
    { name: "Map.get(encoder.encode(input).key)", run: runEncodeMap(map, encoder) },
  ];
  const rates: number[][] = methods.map(() => []);
  for (const { run } of methods)
    run({ ...probes, inputs: probes.inputs.slice(0, 10_000), keys: probes.keys.slice(0, 10_000) }); // warm-up
  for (let round = 0; round < LOOKUP_ROUNDS; round++) {
    // Interleaved, rotating who goes first, so throttling or GC do not favour one method.
    for (let k = 0; k < methods.length; k++) {
      const m = (round + k) % methods.length;
      const method = methods[m] as (typeof methods)[number];
      const begin = performance.now();
      const hits = method.run(probes);
      const seconds = (performance.now() - begin) / 1000;
      if (hits !== probes.expectedHits)
        throw new Error(`${method.name}: ${hits} hits, expected ${probes.expectedHits}`);
      (rates[m] as number[]).push(LOOKUPS / seconds);
    }
  }
  const rate = rates.map(median);
  const [getRate, byKeyRate, mapRate, encodeMapRate] = rate as [number, number, number, number];
  console.log(
    `\n3. Lookups/s: ${fmtInt(LOOKUPS)} shuffled probes (${((probes.expectedHits / LOOKUPS) * 100).toFixed(0)}% hits), median of ${LOOKUP_ROUNDS} interleaved rounds\n`,
  );
  console.log(
    table(
      ["method", "lookups/s", "ns/lookup", "min/s", "max/s", "× Map.get"],
      methods.map(({ name }, m) => {
        const r = rates[m] as number[];
        return [
          name,
          fmtInt(rate[m] as number),
          (1e9 / (rate[m] as number)).toFixed(0),
          fmtInt(Math.min(...r)),
          fmtInt(Math.max(...r)),
          ratio(rate[m] as number, mapRate),
        ];
      }),
    ),
  );
  console.log(
    `  table.get vs encode + Map.get (both from an input): ${ratio(getRate, encodeMapRate)}; ` +
      `getByKey vs Map.get (both from a key): ${ratio(byKeyRate, mapRate)}`,
  );

  // ------------------------------------------------------------------ summary
  const pass = (ok: boolean) => (ok ? "PASS" : "MISS");
  console.log("\nTargets (printed, not asserted)\n");
  console.log(
    table(
      ["target", "measured", "verdict"],
      [
        [
          "table size ≤ gzip(JSON)",
          `${fmtInt(file.length)} vs ${fmtInt(gzipBytes)} B (${ratio(file.length, gzipBytes)})`,
          pass(file.length <= gzipBytes * TARGETS.sizeVsGzip),
        ],
        [
          `open ≤ ${TARGETS.openMs} ms (LookupTable.open, with checksum)`,
          `${fmtMs(openMedian)} ms (cold ${fmtMs(openMs[0] as number)}; JSON.parse ${fmtMs(parseMedian)} ms)`,
          pass(openMedian <= TARGETS.openMs),
        ],
        [
          `  open without checksum ≤ ${TARGETS.openMs} ms (info: no API flag)`,
          `${fmtMs(median(parseTableMs))} ms`,
          pass(median(parseTableMs) <= TARGETS.openMs),
        ],
        [
          `getByKey ≥ ${fmtInt(TARGETS.lookupsPerSec)}/s (vs Map.get ${ratio(byKeyRate, mapRate)})`,
          `${fmtInt(byKeyRate)}/s`,
          pass(byKeyRate >= TARGETS.lookupsPerSec),
        ],
        [
          `get(input) ≥ ${fmtInt(TARGETS.lookupsPerSec)}/s (vs encode+Map ${ratio(getRate, encodeMapRate)})`,
          `${fmtInt(getRate)}/s`,
          pass(getRate >= TARGETS.lookupsPerSec),
        ],
      ],
    ),
  );
  const rss = process.memoryUsage().rss;
  console.log(
    `\nDone in ${((performance.now() - started) / 1000).toFixed(1)} s, RSS ${fmtInt(rss / 1e6)} MB`,
  );
}

main().catch((error: unknown) => {
  console.error(error);
  process.exitCode = 1;
});
