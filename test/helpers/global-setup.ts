/** One real redis-server (no persistence) for the whole run; each test file uses its own key prefix. */
import type { TestProject } from "vitest/node";
import { startRedisServer } from "../../src/redis/embedded.ts";

declare module "vitest" {
  export interface ProvidedContext {
    redisUrl: string;
  }
}

export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  const redis = await startRedisServer();
  project.provide("redisUrl", redis.url);
  return () => redis.stop();
}
