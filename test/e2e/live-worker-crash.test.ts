/**
 * A live worker SIGKILLed mid-batch: the API answers every waiting client (202 with a job,
 * never a hang); once another worker runs, the jobs the dead one held are taken up again
 * and every job completes with a prediction.
 */
import { describe, expect, it } from "vitest";
import { spawnWorker } from "../helpers/precompute.ts";
import { getJson, startTestService } from "../helpers/service.ts";

describe("live worker killed mid-batch", () => {
  it("answers every client, then completes every job on a new worker", async () => {
    const env = { PREDCACHE_LOCK_MS: "1000", PREDCACHE_STALLED_INTERVAL_MS: "500" };
    const api = await startTestService({ env, liveWorker: false });
    const worker = {
      REDIS_URL: api.config.redisUrl as string,
      PREDCACHE_PREFIX: api.config.prefix,
      PREDCACHE_WORKERS: "live",
      ...env,
      // Batches wait 3 s to fill: the worker holds the jobs (locked, active) when killed.
      PREDCACHE_LIVE_BATCH_ROWS: "1000",
      PREDCACHE_LIVE_WORKER_WAIT_MS: "3000",
    };
    const first = spawnWorker(worker);
    let second: ReturnType<typeof spawnWorker> | undefined;
    try {
      // Let the first worker connect before the misses arrive.
      await new Promise((r) => setTimeout(r, 2_500));
      const asked = Date.now();
      const answers = await Promise.all(
        Array.from({ length: 30 }, (_, i) =>
          getJson(
            `${api.url}/v1/models/flight-delay/predict?origin=DEN&destination=PHX&hour=${i % 24}&dayOfWeek=${1 + (i % 7)}&wait=1000`,
          ),
        ),
      );
      expect(Date.now() - asked).toBeLessThan(3_000); // no hang: each waited its 1 s at most
      expect(answers.map((a) => a.status)).toEqual(Array(30).fill(202));
      const held = (await api.service.live.queue.getJobCounts("active")).active ?? 0;
      first.kill("SIGKILL");
      await new Promise((done) => first.once("exit", done));

      const restarted = Date.now();
      second = spawnWorker({ ...worker, PREDCACHE_LIVE_WORKER_WAIT_MS: "1" });
      const jobs = answers.map((a) => a.body.job.url as string);
      const deadline = Date.now() + 30_000;
      const pending = new Set(jobs);
      while (pending.size > 0 && Date.now() < deadline) {
        for (const url of [...pending]) {
          const r = await getJson(`${api.url}${url}`);
          if (r.status === 200) {
            expect(r.body.prediction.delayProbability).toBeTypeOf("number");
            pending.delete(url);
          } else expect(r.status).toBe(202);
        }
        await new Promise((r) => setTimeout(r, 200));
      }
      expect(pending.size).toBe(0);
      console.log(
        `live worker killed holding ${held} jobs: 30 clients answered 202 within their wait; all 30 jobs completed ${Date.now() - restarted} ms after a new worker started`,
      );
    } finally {
      first.kill("SIGKILL");
      second?.kill("SIGTERM");
      await api.close();
    }
  });
});
