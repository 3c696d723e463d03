/**
 * Real Redis for the whole run, no persistence; each test file uses its own key prefix.
 * The "cluster" project gets a 3-master Redis Cluster, every other project one redis-server.
 */
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { TestProject } from "vitest/node";
import { startRedisServer } from "../../src/redis/embedded.ts";
import { startRedisCluster } from "./redis-cluster.ts";

declare module "vitest" {
  export interface ProvidedContext {
    redisUrl: string;
    /** A folder removed after the run; each service gets its own data dir inside it. */
    scratchDir: string;
  }
}

export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  const redis = project.name === "cluster" ? await startRedisCluster() : await startRedisServer();
  const scratch = await mkdtemp(join(tmpdir(), "predcache-test-"));
  project.provide("redisUrl", redis.url);
  project.provide("scratchDir", scratch);
  return async () => {
    await redis.stop();
    await rm(scratch, { recursive: true, force: true });
  };
}
