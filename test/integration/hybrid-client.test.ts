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
const uncovered = { origin: "ABQ", destination: "ORD", hour: 3, dayOfWeek: 2 };

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

  it("without a table, remembers server answers as with one, until the version changes", async () => {
    // A promote as the client sees it, once `promoted`: the listing names another version
    // and no table, and the server answers with that version.
    let promoted = false;
    let next = "bbbbbbbbbbbb";
    const client = new HybridClient({
      baseUrl: t.url,
      model: "flight-delay",
      fetch: async (input, init) => {
        const url = String(input);
        if (!promoted || !(url.includes("/predict?") || url.endsWith("/tables")))
          return fetch(input, init);
        const body = await (await fetch(input)).json();
        const changed = url.endsWith("/tables")
          ? { ...body, activeVersion: next, servedVersion: next, latest: null }
          : { ...body, version: next };
        return new Response(JSON.stringify(changed), { status: 200 });
      },
    });
    const sources: string[] = [];
    for (let i = 0; i < 4; i++) sources.push((await client.predict(uncovered)).source);
    expect(sources).toEqual([expect.stringMatching(/^server:/), "cache", "cache", "cache"]);
    // The same request with its fields in another order and a number as text.
    const reordered = { dayOfWeek: "2", hour: "3", destination: "ORD", origin: "ABQ" };
    expect((await client.predict(reordered)).source).toBe("cache");
    expect(client.requests.predict).toBe(1);
    // Kept under the key the server named, so a table of the same version finds it too.
    expect(await client.refresh()).toBe("full");
    expect((await client.predict(uncovered)).source).toBe("cache");
    expect(client.requests.predict).toBe(1);

    promoted = true;
    expect(await client.refresh()).toBe("none");
    const fresh = await client.predict(uncovered);
    expect(fresh).toMatchObject({ source: expect.stringMatching(/^server:/), version: next });
    expect(await client.predict(uncovered)).toMatchObject({ source: "cache", version: next });
    expect(client.requests.predict).toBe(2);

    // An answer of yet another version, with no refresh between: the rest are stale too.
    next = "cccccccccccc";
    const other = { ...uncovered, hour: 4 };
    expect((await client.predict(other)).version).toBe(next);
    expect(await client.predict(uncovered)).toMatchObject({
      source: expect.stringMatching(/^server:/),
      version: next,
    });
    expect(client.requests.predict).toBe(4);
  });
});
