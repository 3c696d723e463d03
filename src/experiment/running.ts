/**
 * Each process's view of the running experiments, like its view of the active versions:
 * cached in memory, refreshed on the active-version channel (every start, change and
 * stop publishes there) and by a short poll in case a message is lost, so a stop is seen
 * everywhere within a second.
 */
import type { Keys } from "../cache/keys.ts";
import type { ModelRegistry } from "../model/registry.ts";
import { processMetrics } from "../observability/metrics.ts";
import { type Redis, subscribe } from "../redis/connection.ts";
import type { Experiment } from "./experiment.ts";
import type { ExperimentStore } from "./store.ts";

export class RunningExperiments {
  private readonly cache = new Map<string, Experiment>();
  private timer: NodeJS.Timeout | undefined;
  private readonly onMessage = (channel: string, model: string) => {
    if (channel === this.keys.activeChannel()) void this.refreshOne(model).catch(() => {});
  };

  constructor(
    readonly store: ExperimentStore,
    private readonly subscriber: Redis,
    private readonly keys: Keys,
    private readonly registry: ModelRegistry,
    private readonly pollMs = 500,
  ) {}

  /** Loads what runs now and starts listening (the subscriber may be shared). */
  async start(): Promise<void> {
    this.subscriber.on("message", this.onMessage);
    await subscribe(this.subscriber, this.keys.activeChannel());
    await this.refresh();
    this.timer = setInterval(() => void this.refresh().catch(() => {}), this.pollMs);
    this.timer.unref();
  }

  /** The model's running experiment as this process last saw it. */
  get(model: string): Experiment | undefined {
    return this.cache.get(model);
  }

  async refresh(): Promise<void> {
    await Promise.all(this.registry.names().map((name) => this.refreshOne(name)));
  }

  private async refreshOne(model: string): Promise<void> {
    const running = await this.store.running(model);
    const before = this.cache.get(model);
    if (running?.state === "running") this.cache.set(model, running);
    else this.cache.delete(model);
    if (before && before.id !== this.cache.get(model)?.id) this.stopped(model, before.id);
  }

  /**
   * This process saw an experiment end: its metric series go (comparisons still in flight
   * are not counted once they end: see ShadowOptions.isRunning).
   */
  private stopped(model: string, id: string): void {
    processMetrics().forgetExperiment(model, id);
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.subscriber.removeListener("message", this.onMessage);
  }
}
