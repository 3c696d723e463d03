/** Starts the real API service (and a live worker) on a free port against a real Redis, with its own key prefix. */
import { randomBytes } from "node:crypto";
import { mkdtemp, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { Writable } from "node:stream";
import { inject } from "vitest";
import { type Listening, listen } from "../../src/api/listen.ts";
import { Keys } from "../../src/cache/keys.ts";
import { type Config, loadConfig } from "../../src/config.ts";
import { batchJobId } from "../../src/live/jobs.ts";
import { createLogger, type Logger } from "../../src/log.ts";
import { ActiveVersions } from "../../src/model/active.ts";
import type { Prediction } from "../../src/model/decoding.ts";
import type { ModelRegistry, ModelVersion } from "../../src/model/registry.ts";
import { createRedis, type Redis, whenReady } from "../../src/redis/connection.ts";
import {
  createLiveWorker,
  createPrecomputeWorker,
  createService,
  type LiveWorkerProcess,
  loadRegistry,
  type PrecomputeWorkerProcess,
  type Service,
} from "../../src/service.ts";
import type { TableStore } from "../../src/table/store.ts";
import { modelsDirWithVersions as modelsDirIn } from "./models.ts";

/** A models folder with the demo model and more versions of it, in the run's scratch folder. */
export function modelsDirWithVersions(extra: string[]): Promise<string> {
  return modelsDirIn(extra, inject("scratchDir"));
}

/**
 * A models folder with the demo model and one more version, labelled `label`, whose
 * encoding's `hour` feature `edit` changes (its range, its out-of-range policy…).
 */
export async function modelsDirWithHourEdited(
  label: string,
  edit: (hour: Record<string, unknown>) => void,
): Promise<string> {
  const models = await modelsDirWithVersions([label]);
  await editHour(models, label, edit);
  return models;
}

/** Changes the `hour` feature of the version labelled `label` in a models folder. */
export async function editHour(
  models: string,
  label: string,
  edit: (hour: Record<string, unknown>) => void,
): Promise<void> {
  const file = join(models, `flight-delay-${label}`, "manifest.json");
  const manifest = JSON.parse(await readFile(file, "utf8"));
  for (const feature of manifest.encoding.features) if (feature.name === "hour") edit(feature);
  await writeFile(file, JSON.stringify(manifest));
}

/** The version of the demo model labelled `label` (see modelsDirWithVersions). */
export function labelled(registry: ModelRegistry, label: string): ModelVersion {
  const found = registry.versions("flight-delay").find((v) => v.manifest.label === label);
  if (!found) throw new Error(`the ${label} version did not load`);
  return found;
}

/**
 * Queues `key` as an API process of an older release would have keyed it, and returns
 * the worker's answer for it (a rolling deploy: that key must still be computed).
 */
export async function computedAsOlderApi(
  t: TestService,
  model: ModelVersion,
  key: string,
): Promise<Prediction | undefined> {
  const jobId = batchJobId(model.name, model.version);
  await t.service.live.queue.add(
    "predict",
    { model: model.name, version: model.version, keys: [key] },
    { jobId, removeOnComplete: { age: 60 } },
  );
  const done = await eventually(
    async () => (await t.service.live.queue.getJob(jobId))?.returnvalue ?? undefined,
  );
  return done[key];
}

export interface TestService {
  url: string;
  service: Service;
  registry: ModelRegistry;
  live: LiveWorkerProcess | undefined;
  config: Config;
  close(): Promise<void>;
}

export interface TestServiceOptions {
  env?: Record<string, string>;
  /** Run a live worker in this process too (default true). */
  liveWorker?: boolean;
  /** Share a registry (and so its runtimes' inference counts) with the caller. */
  registry?: ModelRegistry;
  /** Log somewhere the test can read (default: the configured level, to stdout). */
  log?: Logger;
}

/** A data folder of its own (tables, runs' files), so no test sees another's tables. */
export function tempDataDir(): Promise<string> {
  return mkdtemp(join(inject("scratchDir"), "data-"));
}

/** A prefix no other test file shares, so files can run in parallel on one Redis. */
export function uniquePrefix(label: string): string {
  return `t${label.replace(/[^A-Za-z0-9]/g, "").slice(0, 12)}${randomBytes(3).toString("hex")}`;
}

export async function startTestService(options: TestServiceOptions = {}): Promise<TestService> {
  const env = options.env ?? {};
  const redisUrl = env.REDIS_URL ?? inject("redisUrl");
  const config = loadConfig({
    PREDCACHE_PREFIX: uniquePrefix("svc"),
    PREDCACHE_DATA_DIR: await tempDataDir(),
    LOG_LEVEL: "silent",
    // Off unless a test asks: sampled audits add live inferences to counts tests check.
    PREDCACHE_AUDIT_RATE: "0",
    ...env,
    REDIS_URL: redisUrl,
    PORT: "0",
  });
  const log = options.log ?? createLogger(config.logLevel);
  const registry = options.registry ?? (await loadRegistry(config));
  const service = await createService(config, redisUrl, log, registry);
  let live: LiveWorkerProcess | undefined;
  let server: Listening;
  try {
    if (options.liveWorker !== false)
      live = await createLiveWorker(config, redisUrl, log, registry);
    server = await listen(service.app, "127.0.0.1", 0, log);
  } catch (error) {
    await live?.close();
    await service.close();
    throw error;
  }
  return {
    url: server.url,
    service,
    registry,
    live,
    config,
    async close() {
      await server.close();
      await live?.close();
      await service.close();
      if (!options.registry) await registry.close();
    },
  };
}

/** A precompute worker in this process for a test service (same Redis, prefix, data dir, registry). */
export function precomputeWorkerFor(
  t: TestService,
  tables?: TableStore,
): Promise<PrecomputeWorkerProcess> {
  return createPrecomputeWorker(
    t.config,
    t.config.redisUrl as string,
    createLogger("silent"),
    t.registry,
    tables,
  );
}

/** Precomputes these inputs for the model's active version and waits for the run to complete. */
export async function precomputeInputs(
  t: TestService,
  inputs: Record<string, unknown>[],
  model = "flight-delay",
): Promise<void> {
  const { runId } = await t.service.precompute.enqueue({
    model,
    source: { kind: "inline", inputs },
  });
  const done = await t.service.precompute.waitUntilDone(runId, 60_000);
  if (done.state !== "completed")
    throw new Error(`precompute ${runId} ${done.state}: ${done.error}`);
}

export interface JsonReply {
  status: number;
  // biome-ignore lint/suspicious/noExplicitAny: tests read arbitrary JSON replies
  body: any;
  headers: Headers;
}

export async function getJson(url: string, init?: RequestInit): Promise<JsonReply> {
  const response = await fetch(url, init);
  const text = await response.text();
  return {
    status: response.status,
    headers: response.headers,
    body: text ? JSON.parse(text) : undefined,
  };
}

export function postJson(url: string, body: unknown): Promise<JsonReply> {
  return getJson(url, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify(body),
  });
}

/**
 * Teardown that cannot hang a file: waits for `closing` up to `ms`, else says which step
 * did not finish and moves on. Seen once in ~12 full runs: closing a precompute worker
 * after the test had restarted its Redis outlived vitest's 60 s hook timeout.
 */
export async function closeOrReport(name: string, closing: Promise<unknown>, ms = 20_000) {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<"late">((done) => {
    timer = setTimeout(() => done("late"), ms);
  });
  const outcome = await Promise.race([closing.then(() => "closed" as const), late]);
  clearTimeout(timer);
  if (outcome === "late") console.warn(`teardown: ${name} did not finish within ${ms} ms`);
}

/** Sum of a Prometheus text series' samples whose labels include every given label. */
export function metricSample(
  text: string,
  name: string,
  labels: Record<string, string> = {},
): number {
  let total = 0;
  for (const line of text.split("\n")) {
    if (!line.startsWith(`${name}{`) && !line.startsWith(`${name} `)) continue;
    if (!Object.entries(labels).every(([k, v]) => line.includes(`${k}="${v}"`))) continue;
    total += Number(line.slice(line.lastIndexOf(" ") + 1));
  }
  return total;
}

/** Polls `check` until it returns a value or `ms` pass. */
export async function eventually<T>(
  check: () => Promise<T | undefined>,
  ms = 5_000,
  every = 20,
): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const value = await check().catch(() => undefined);
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`condition not met within ${ms} ms`);
    await new Promise((r) => setTimeout(r, every));
  }
}

/** A logger at info whose JSON lines are parsed into `lines`, for tests to look at. */
export function capturedLog(): { log: Logger; lines: Record<string, unknown>[] } {
  const lines: Record<string, unknown>[] = [];
  const sink = new Writable({
    write(chunk, _encoding, done) {
      for (const line of String(chunk).split("\n").filter(Boolean)) lines.push(JSON.parse(line));
      done();
    },
  });
  return { log: createLogger("info", "test", sink), lines };
}

/** Another process's view of a prefix's active versions, as an admin tool would have it. */
export interface AdminView {
  redis: Redis;
  subscriber: Redis;
  active: ActiveVersions;
  close(): Promise<void>;
}

export async function adminView(prefix: string, registry: ModelRegistry): Promise<AdminView> {
  const redis = createRedis(inject("redisUrl"));
  const subscriber = createRedis(inject("redisUrl"), { role: "subscriber" });
  await whenReady(redis);
  // Its own poll is slow: a switch it sees comes from its own writes or pub/sub.
  const active = new ActiveVersions(redis, subscriber, new Keys(prefix), registry, {
    pollMs: 60_000,
  });
  await active.start();
  return {
    redis,
    subscriber,
    active,
    async close() {
      active.stop();
      await Promise.all([redis.quit(), subscriber.quit()]);
    },
  };
}
