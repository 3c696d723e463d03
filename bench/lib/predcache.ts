/** The real service on loopback for benchmarks, wired as npm start wires it. */
import { randomBytes } from "node:crypto";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { type Listening, listen } from "../../src/api/listen.ts";
import { loadConfig } from "../../src/config.ts";
import { createLogger } from "../../src/log.ts";
import type { ModelRegistry } from "../../src/model/registry.ts";
import {
  createLiveWorker,
  createService,
  type LiveWorkerProcess,
  loadRegistry,
  type Service,
} from "../../src/service.ts";

const HOST = "127.0.0.1";

export interface Server {
  url: string;
  close(): Promise<void>;
}

export interface Predcache extends Server {
  service: Service;
  registry: ModelRegistry;
  live: LiveWorkerProcess | undefined;
}

/**
 * Config → registry → service [+ live worker] → listen; `env` overrides the defaults.
 * Each instance has its own data folder (removed on close): the default .predcache may
 * hold tables left by npm start, which would answer lookups the bench means as misses.
 */
export async function startPredcache(
  redisUrl: string,
  env: Record<string, string>,
  options: { registry?: ModelRegistry; liveWorker: boolean },
): Promise<Predcache> {
  const dataDir = await mkdtemp(join(tmpdir(), "predcache-bench-"));
  const steps: (() => Promise<void>)[] = [() => rm(dataDir, { recursive: true, force: true })];
  try {
    const config = loadConfig({
      LOG_LEVEL: "silent",
      PREDCACHE_PREFIX: freshPrefix(),
      PREDCACHE_DATA_DIR: dataDir,
      ...env,
      REDIS_URL: redisUrl,
      PORT: "0",
    });
    const log = createLogger(config.logLevel);
    const registry = options.registry ?? (await loadRegistry(config));
    if (!options.registry) steps.unshift(() => registry.close());
    const service = await createService(config, redisUrl, log, registry);
    steps.unshift(() => service.close());
    const live = options.liveWorker
      ? await createLiveWorker(config, redisUrl, log, registry)
      : undefined;
    if (live) steps.unshift(() => live.close());
    const server: Listening = await listen(service.app, HOST, 0);
    steps.unshift(() => server.close());
    return { url: server.url, service, registry, live, close: () => runAll(steps) };
  } catch (error) {
    await runAll(steps);
    throw error;
  }
}

/** A key prefix nothing else uses, so each instance starts with an empty cache and queue. */
export function freshPrefix(): string {
  return `bench${randomBytes(3).toString("hex")}`;
}

export async function runAll(steps: readonly (() => Promise<void>)[]): Promise<void> {
  for (const step of steps) await step().catch((error: unknown) => console.error(error));
}
