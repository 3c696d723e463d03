/**
 * A real Redis Cluster for tests: three cluster-enabled redis-server masters on loopback,
 * joined with `redis-cli --cluster create`, no replicas, nothing kept on disk but the
 * nodes' cluster config in a temporary folder.
 */
import { execFile } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { type EmbeddedRedis, startRedisServer } from "../../src/redis/embedded.ts";

const run = promisify(execFile);

export interface RedisClusterServers {
  /** `redis-cluster://` URL naming every master as a seed. */
  url: string;
  masters: EmbeddedRedis[];
  stop(): Promise<void>;
}

export async function startRedisCluster(masterCount = 3): Promise<RedisClusterServers> {
  const dir = await mkdtemp(join(tmpdir(), "predcache-cluster-"));
  const masters: EmbeddedRedis[] = [];
  const stop = async () => {
    await Promise.all(masters.map((m) => m.stop()));
    await rm(dir, { recursive: true, force: true });
  };
  try {
    for (let i = 0; i < masterCount; i++) {
      masters.push(
        await startRedisServer({
          extraArgs: [
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            join(dir, `nodes-${i}.conf`),
            "--cluster-node-timeout",
            "3000",
            "--dir",
            dir,
          ],
        }),
      );
    }
    const addresses = masters.map((m) => `127.0.0.1:${m.port}`);
    await run("redis-cli", [
      "--cluster",
      "create",
      ...addresses,
      "--cluster-replicas",
      "0",
      "--cluster-yes",
    ]);
    await untilClusterOk(masters);
    return { url: `redis-cluster://${addresses.join(",")}`, masters, stop };
  } catch (error) {
    await stop();
    throw error;
  }
}

/** Every node must agree the cluster is whole before a client may rely on slot routing. */
async function untilClusterOk(masters: EmbeddedRedis[], timeoutMs = 15_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const states = await Promise.all(
      masters.map(async (m) => {
        const { stdout } = await run("redis-cli", ["-p", String(m.port), "cluster", "info"]);
        return /cluster_state:ok/.test(stdout) && /cluster_slots_assigned:16384/.test(stdout);
      }),
    );
    if (states.every(Boolean)) return;
    if (Date.now() > deadline) throw new Error("Redis Cluster did not reach cluster_state:ok");
    await new Promise((done) => setTimeout(done, 100));
  }
}
