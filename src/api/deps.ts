/** What the HTTP layer needs from the rest of the service. */
import type { Queue } from "bullmq";
import type { AdminDeps } from "../admin/deps.ts";
import type { AdminToken } from "../admin/tokens.ts";
import type { CacheAudit } from "../cache/audit.ts";
import type { ServingStats } from "../cache/stats.ts";
import type { Tiers } from "../cache/tiers.ts";
import type { TrafficRecorder } from "../cache/traffic.ts";
import type { RunningExperiments } from "../experiment/running.ts";
import type { ShadowComparer } from "../experiment/shadow.ts";
import type { ExperimentStore } from "../experiment/store.ts";
import type { ArmTally } from "../experiment/tally.ts";
import type { LiveClient } from "../live/client.ts";
import type { Logger } from "../log.ts";
import type { ActiveVersions } from "../model/active.ts";
import type { ModelRegistry } from "../model/registry.ts";
import type { Redis } from "../redis/connection.ts";
import type { TableStore } from "../table/store.ts";
import type { AccessOptions, RateLimiter } from "./access.ts";
import type { CacheScope } from "./reply.ts";

export interface ApiSettings {
  /** Wait for a live answer when the request names none (ms). */
  waitDefaultMs: number;
  /** Longest wait a request may ask for (ms). */
  waitMaxMs: number;
  batchMaxItems: number;
  bodyMaxBytes: number;
  /** Cache-Control max-age of answers (s). */
  hitMaxAgeSeconds: number;
  /** Who may cache answers and tables: "private" when API keys guard them. */
  cacheScope: CacheScope;
  /** Origins allowed to read /v1/models/* from a browser ("*": any; empty: CORS off). */
  corsOrigins: string[];
  /** Request header naming the client, for experiment arms (lower case). */
  clientIdHeader: string;
}

export interface ApiDeps {
  log: Logger;
  redis: Redis;
  registry: ModelRegistry;
  active: ActiveVersions;
  tiers: Tiers;
  live: LiveClient;
  /** The service's BullMQ queues by name (live, precompute…): /readyz says which are paused. */
  queues: Record<string, Queue>;
  traffic: TrafficRecorder;
  stats: ServingStats;
  tables: TableStore;
  settings: ApiSettings;
  /** The admin API's own needs (absent in tests that build the public API only). */
  admin?: AdminDeps;
  /** API keys and rate limits for /v1/models (absent: open). */
  access?: { limiter: RateLimiter; options: AccessOptions };
  /** Experiments: the running ones, their tallies, the shadow comparisons. */
  experiments?: {
    store: ExperimentStore;
    running: RunningExperiments;
    tally: ArmTally;
    shadow: ShadowComparer;
  };
  /** Tokens a /metrics scrape must send; none: /metrics is open. */
  metricsTokens?: AdminToken[];
  /** Folders seed files named through the admin API may come from. */
  seedRoots?: string[];
  /** Recomputes a sample of redis and table hits off the request path (absent: off). */
  audit?: CacheAudit;
}
