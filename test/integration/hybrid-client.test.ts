/** HybridClient against a real service: what it keeps, remembers and gives up on. */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { HybridClient } from "../../src/client/hybrid-client.ts";
import type { PrecomputeWorkerProcess } from "../../src/service.ts";
import {
  closeOrReport,
  precomputeInputs,
  precomputeWorkerFor,
  startTestService,
  type TestService,
  tempDataDir,
  uniquePrefix,
} from "../helpers/service.ts";

const covered = { origin: "LAS", destination: "LAX", hour: "16", dayOfWeek: "6" };

let t: TestService;
let worker: PrecomputeWorkerProcess;

beforeAll(async () => {
  t = await startTestService({
    env: { PREDCACHE_PREFIX: uniquePrefix("hybrid"), PREDCACHE_DATA_DIR: await tempDataDir() },
  });
  worker = await precomputeWorkerFor(t);
  await precomputeInputs(t, [covered]);
});
afterAll(async () => {
  await closeOrReport("precompute worker", worker.close());
  await closeOrReport("service", t.close());
});

describe("HybridClient", () => {
  it("keeps its table when the listing has none but the table's version is still active", async () => {
    // A second API process on the same Redis whose tables folder is empty: it lists the
    // same active version and no table.
    const bare = await startTestService({
      env: { PREDCACHE_PREFIX: t.config.prefix, PREDCACHE_DATA_DIR: await tempDataDir() },
      liveWorker: false,
      registry: t.registry,
    });
    try {
      const held = new HybridClient({ baseUrl: t.url, model: "flight-delay" });
      expect(await held.refresh()).toBe("full");
      const table = held.table;
      const client = new HybridClient({ baseUrl: bare.url, model: "flight-delay", table });
      expect(await client.refresh()).toBe("unchanged");
      expect(client.table).toBe(table);
      expect((await client.predict(covered)).source).toBe("table");
      expect(client.requests.predict).toBe(0);
      // Asked again, the listing is unchanged (a 304) and the table still kept.
      expect(await client.refresh()).toBe("unchanged");
      expect(client.table).toBe(table);
    } finally {
      await bare.close();
    }
  });
});
