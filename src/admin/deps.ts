/** What the admin API needs besides the public API's dependencies. */
import type { Queue } from "bullmq";
import type { Precompute } from "../../precompute/job.ts";
import type { Keys } from "../cache/keys.ts";
import type { ResidentTables } from "../cache/resident.ts";
import type { PredictionStore } from "../cache/store.ts";
import type { AuditLog } from "./audit.ts";
import type { AdminToken } from "./tokens.ts";

export interface AdminDeps {
  tokens: AdminToken[];
  audit: AuditLog;
  precompute: Precompute;
  keys: Keys;
  store: PredictionStore;
  resident: ResidentTables;
  /** Queues whose depths /admin/v1/stats reports. */
  queues: Record<string, Queue>;
  /** Versions per model gc keeps besides the active one and the rollback target. */
  keepVersions: number;
  bodyMaxBytes: number;
  /** Tells the other processes to rescan the models directory. */
  announceModels(): Promise<void>;
}
