/**
 * Runs only in the "cluster" project: proves the suite there really talks to a Redis
 * Cluster, and that what must spread (prediction buckets) spreads over its masters while
 * what must stay together (a queue's keys, a model's pointers) stays in one slot.
 */
import { Redis as Node } from "ioredis";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { Keys } from "../../src/cache/keys.ts";
import { isCluster, parseClusterUrl } from "../../src/redis/connection.ts";
import { scanKeys } from "../../src/redis/keyspace.ts";
import {
  postJson,
  precomputeInputs,
  precomputeWorkerFor,
  startTestService,
  type TestService,
  uniquePrefix,
} from "../helpers/service.ts";

const prefix = uniquePrefix("cluster");
const airports = ["ATL", "ORD", "DFW", "DEN", "LAX", "SFO", "SEA", "BOS"];
const inputs = airports.flatMap((origin) =>
  airports
    .filter((d) => d !== origin)
    .map((destination) => ({ origin, destination, hour: "9", dayOfWeek: "3" })),
);

let t: TestService;
let worker: { close(): Promise<void> };
let nodes: Node[];

beforeAll(async () => {
  t = await startTestService({
    // No resident table: the batch below must be answered from the cluster itself.
    env: {
      PREDCACHE_PREFIX: prefix,
      PREDCACHE_BUCKET_BITS: "6",
      PREDCACHE_RESIDENT_MAX_BYTES: "0",
    },
  });
  worker = await precomputeWorkerFor(t);
  nodes = parseClusterUrl(inject("redisUrl")).nodes.map((n) => new Node(n.port, n.host));
});
afterAll(async () => {
  await worker.close();
  await t.close();
  for (const node of nodes) node.disconnect();
});

/** Keys under `pattern` held by each master, read from the masters directly. */
async function keysPerNode(pattern: string): Promise<number[]> {
  return Promise.all(
    nodes.map(async (node) => {
      let n = 0;
      for await (const keys of scanKeys(node, pattern)) n += keys.length;
      return n;
    }),
  );
}

describe("on a Redis Cluster", () => {
  it("is connected to a 3-master cluster", async () => {
    expect(isCluster(t.service.redis)).toBe(true);
    const info = await nodes[0]?.cluster("INFO");
    expect(info).toMatch(/cluster_state:ok/);
    expect(info).toMatch(/cluster_size:3/);
  });

  it("spreads a version's buckets over every master and reads them back in one batch", async () => {
    await precomputeInputs(t, inputs);
    const version = t.service.active.get("flight-delay") as string;
    const perNode = await keysPerNode(`${prefix}:e:flight-delay:${version}:*`);
    console.log(`cluster: prediction buckets per master ${perNode.join(" / ")}`);
    expect(perNode.every((n) => n > 0)).toBe(true);

    t.service.tiers.memory.clear();
    const reply = await postJson(`${t.url}/v1/models/flight-delay/predict`, { inputs });
    expect(reply.status).toBe(200);
    const items = reply.body.results as { source: string }[];
    expect(items).toHaveLength(inputs.length);
    expect(items.every((item) => item.source === "redis")).toBe(true);
  });

  it("keeps each queue's keys and each model's pointers in one slot", async () => {
    const keys = new Keys(prefix);
    const slots = new Set<number>();
    for (const key of [keys.active("flight-delay"), keys.history("flight-delay")]) {
      slots.add(await (nodes[0] as Node).cluster("KEYSLOT", key));
    }
    expect(slots.size).toBe(1);
    const queueKeys = (await keysPerNode(`{${prefix}:q}*`)).filter((n) => n > 0);
    expect(queueKeys).toHaveLength(1);
  });
});
