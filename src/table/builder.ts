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
import { EntryCollector, settleEntries } from "./entries.ts";
import { encodeTableBody, pickEntries, type TableView } from "./format.ts";
import { keyHash } from "./key-hash.ts";
import type { TableInfo, TableStore } from "./store.ts";

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
  /** Checked right before publishing (e.g. that the base is still the newest); may throw. */
  beforePublish?: () => Promise<void>;
}

/** The published table, or the base itself when the run changed nothing in it. */
export async function buildTable(options: BuildTableOptions): Promise<TableInfo> {
  const { model, base } = options;
  const outputs = model.manifest.outputs;
  const collected = new EntryCollector(outputs);
  if (base) collected.pushTable(base);
  const baseCount = collected.count;
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
      collected.push(
        hi,
        lo,
        outputs.map((o) => prediction[o.name]),
      );
      if (sample.length < 64 || Math.random() < 0.001) sample.push(key);
    });
  }
  const settled = settleEntries(collected, baseCount, options.generation);
  if (base && !settled.changed && settled.order.length === baseCount) {
    const kept = await options.tables.get(model.name, base.header.generation);
    if (kept) return kept;
  }
  const entries = pickEntries(collected.entries(), settled.order);
  const parts = encodeTableBody(
    {
      model: model.name,
      modelVersion: model.version,
      encodingHash: model.encoder.hash,
      inputSchema: model.manifest.encoding,
      outputs,
      created: new Date().toISOString(),
      generation: options.generation,
      source: options.source,
      ...(model.manifest.mainOutput !== undefined ? { mainOutput: model.manifest.mainOutput } : {}),
      ...(model.manifest.confidenceThreshold !== undefined
        ? { confidenceThreshold: model.manifest.confidenceThreshold }
        : {}),
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
    const covered = sample.filter((key) => {
      const { hi, lo } = keyHash(key);
      return !settled.dropped.has(`${hi}:${lo >>> 8}`);
    });
    const expected = await options.store.getMany(model, covered);
    covered.forEach((key, i) => {
      if (JSON.stringify(table.getByKey(key)) !== JSON.stringify(expected[i])) {
        throw new Error(`table ${options.generation} does not read back ${key} as stored`);
      }
    });
    await options.beforePublish?.();
    return await options.tables.publish(model.name, options.generation, temp);
  } catch (error) {
    await rm(temp, { force: true });
    throw error;
  }
}
