/**
 * Builds a lookup table generation from a model version's stored predictions: starts
 * from the version's previous table (so generations only grow: a small run adds to the
 * table, it does not replace it), streams the run's keys in batches, reads their values
 * from Redis, packs them into typed arrays (no object per entry, no set of keys: equal
 * hashes are settled after sorting), writes a temporary file with its SHA-256, reads it
 * back to verify it, then publishes it atomically.
 */
import { createHash } from "node:crypto";
import { open, readFile, rm } from "node:fs/promises";
import type { PredictionStore } from "../cache/store.ts";
import { LookupTable } from "../client/lookup-table.ts";
import type { ModelVersion } from "../model/registry.ts";
import { encodeTableBody, entriesOf, packValue, sortPacked, type TableView } from "./format.ts";
import { keyHash } from "./key-hash.ts";
import type { TableInfo, TableStore } from "./store.ts";

/** Growable packed arrays: a few typed arrays whatever the entry count. */
class Packed {
  hi: Uint32Array = new Uint32Array(1024);
  lo: Uint32Array = new Uint32Array(1024);
  offsets: Uint32Array = new Uint32Array(1025);
  values = new Uint8Array(16 * 1024);
  count = 0;

  push(hi: number, lo: number, value: Uint8Array): void {
    if (this.count === this.hi.length) {
      this.hi = grow(this.hi, this.hi.length * 2);
      this.lo = grow(this.lo, this.lo.length * 2);
      this.offsets = grow(this.offsets, this.hi.length + 1);
    }
    const at = this.offsets[this.count] as number;
    if (at + value.length > this.values.length) {
      const bigger = new Uint8Array(Math.max(this.values.length * 2, at + value.length));
      bigger.set(this.values);
      this.values = bigger;
    }
    this.values.set(value, at);
    this.hi[this.count] = hi;
    this.lo[this.count] = lo;
    this.count++;
    this.offsets[this.count] = at + value.length;
  }

  trimmed() {
    const n = this.count;
    return {
      hi: this.hi.subarray(0, n),
      lo: this.lo.subarray(0, n),
      offsets: this.offsets.subarray(0, n + 1),
      values: this.values.subarray(0, this.offsets[n] as number),
    };
  }
}

function grow(array: Uint32Array, length: number): Uint32Array {
  const bigger = new Uint32Array(length);
  bigger.set(array);
  return bigger;
}

export interface BuildTableOptions {
  model: ModelVersion;
  generation: string;
  source: string;
  /** The keys the table covers, in batches (duplicates are dropped). */
  keys: AsyncIterable<readonly string[]>;
  store: PredictionStore;
  tables: TableStore;
  /** The version's previous table (same encoding): its entries carry over. */
  base?: TableView;
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/** The published table, or the base itself when the run changed nothing in it. */
export async function buildTable(options: BuildTableOptions): Promise<TableInfo> {
  const { model, base } = options;
  const packed = new Packed();
  if (base) {
    const previous = entriesOf(base);
    for (let i = 0; i < previous.hi.length; i++) {
      const value = previous.values.subarray(previous.offsets[i], previous.offsets[i + 1]);
      packed.push(previous.hi[i] as number, previous.lo[i] as number, value);
    }
  }
  const baseCount = packed.count;
  const sample: string[] = [];
  for await (const batch of options.keys) {
    const predictions = await options.store.getMany(model, batch);
    batch.forEach((key, i) => {
      const prediction = predictions[i];
      if (!prediction)
        throw new Error(
          `table ${options.generation}: ${key} is missing from ${model.name}@${model.version}`,
        );
      const { hi, lo } = keyHash(key);
      packed.push(hi, lo, packValue(model.manifest.outputs.map((o) => prediction[o.name])));
      if (sample.length < 64 || Math.random() < 0.001) sample.push(key);
    });
  }
  const all = packed.trimmed();
  const valueAt = (i: number) => all.values.subarray(all.offsets[i], all.offsets[i + 1]);
  let changed = !base;
  const entries = sortPacked(all, (earlier, later) => {
    const same = sameBytes(valueAt(earlier), valueAt(later));
    // One key twice in the run reads one value; two values under one hash are two keys.
    if (earlier >= baseCount && !same)
      throw new Error(`table ${options.generation}: two keys share one 64-bit hash`);
    if (!same) changed = true; // the run's value replaces the previous table's
    return later;
  });
  if (base && !changed && entries.hi.length === baseCount) {
    const kept = await options.tables.get(model.name, base.header.generation);
    if (kept) return kept;
  }
  const parts = encodeTableBody(
    {
      model: model.name,
      modelVersion: model.version,
      encodingHash: model.encoder.hash,
      inputSchema: model.manifest.encoding,
      outputs: model.manifest.outputs,
      created: new Date().toISOString(),
      generation: options.generation,
      source: options.source,
    },
    entries,
  );
  const temp = await options.tables.tempPath(model.name, options.generation);
  try {
    const file = await open(temp, "w");
    try {
      const hash = createHash("sha256");
      for (const part of parts) {
        hash.update(part);
        await file.write(part);
      }
      await file.write(hash.digest());
      await file.sync();
    } finally {
      await file.close();
    }
    // Read it back: a table is published only if it opens and answers like Redis does.
    const table = await LookupTable.open(new Uint8Array(await readFile(temp)), {
      encodingHash: model.encoder.hash,
    });
    const expected = await options.store.getMany(model, sample);
    sample.forEach((key, i) => {
      if (JSON.stringify(table.getByKey(key)) !== JSON.stringify(expected[i])) {
        throw new Error(`table ${options.generation} does not read back ${key} as stored`);
      }
    });
    return await options.tables.publish(model.name, options.generation, temp);
  } catch (error) {
    await rm(temp, { force: true });
    throw error;
  }
}
