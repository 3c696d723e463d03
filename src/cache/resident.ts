/**
 * The resident table tier: each API process can hold the active version's newest lookup
 * table in memory, between L1 and Redis. Covered inputs are then answered without
 * touching Redis — also while Redis is down. The table is swapped atomically (one map
 * assignment) when a table is published or a version promoted.
 */
import { LookupTable } from "../client/lookup-table.ts";
import type { Logger } from "../log.ts";
import type { ActiveVersions } from "../model/active.ts";
import type { Prediction } from "../model/decoding.ts";
import type { ModelRegistry, ModelVersion } from "../model/registry.ts";
import { type Redis, subscribe } from "../redis/connection.ts";
import type { TableStore } from "../table/store.ts";
import type { Keys } from "./keys.ts";

export interface ResidentOptions {
  /** Tables larger than this are not held (0: the tier is off). */
  maxBytes: number;
  /** Safety-net poll (ms) in case a publish message is missed. */
  pollMs?: number;
}

export class ResidentTables {
  private readonly held = new Map<string, LookupTable>();
  private readonly loading = new Map<string, Promise<void>>();
  private timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly tables: TableStore,
    private readonly registry: ModelRegistry,
    private readonly active: ActiveVersions,
    private readonly log: Logger,
    private readonly options: ResidentOptions,
  ) {}

  async start(subscriber: Redis, keys: Keys): Promise<void> {
    if (this.options.maxBytes <= 0) return;
    subscriber.on("message", (channel: string, model: string) => {
      if (channel === keys.tablesChannel()) void this.refresh(model);
    });
    await subscribe(subscriber, keys.tablesChannel());
    this.active.onChange((model) => void this.refresh(model));
    await Promise.all(this.registry.names().map((name) => this.refresh(name)));
    this.timer = setInterval(() => {
      for (const name of this.registry.names()) void this.refresh(name);
    }, this.options.pollMs ?? 2_000);
    this.timer.unref();
  }

  /** The held table's answer for a key of this model version, if it covers it. */
  get(model: ModelVersion, key: string): Prediction | undefined {
    const table = this.held.get(model.name);
    if (!table || table.header.modelVersion !== model.version) return undefined;
    return table.getByKey(key);
  }

  /** The table held for a model (for stats and tests). */
  table(model: string): LookupTable | undefined {
    return this.held.get(model);
  }

  /** Every table held, by model. */
  heldTables(): IterableIterator<[model: string, table: LookupTable]> {
    return this.held.entries();
  }

  /** Loads the active version's newest table if it is not the one held; one load at a time per model. */
  refresh(model: string): Promise<void> {
    const running = this.loading.get(model);
    if (running) return running;
    const load = this.load(model).finally(() => this.loading.delete(model));
    this.loading.set(model, load);
    return load;
  }

  private async load(model: string): Promise<void> {
    try {
      const version = this.active.get(model);
      const latest = (await this.tables.list(model)).find((t) => t.modelVersion === version);
      const current = this.held.get(model);
      if (!latest || latest.bytes > this.options.maxBytes) {
        if (current && current.header.modelVersion !== version) this.held.delete(model);
        return;
      }
      if (current?.checksum === latest.checksum) return;
      const table = await LookupTable.open(await this.tables.read(model, latest.generation));
      this.held.set(model, table);
      this.log.info(
        { model, generation: latest.generation, entries: table.size },
        "resident table loaded",
      );
    } catch (error) {
      // Keep serving from what is held; the next publish or poll tries again.
      this.log.warn({ model, err: (error as Error).message }, "resident table not loaded");
    }
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
  }
}
