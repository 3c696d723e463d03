/**
 * A miss whose batch waits in the live queue longer than a finished job is kept (a paused
 * queue, a long backlog): its job is still pollable (202), the same input asked again joins
 * it rather than queuing the key again, and once it has finished its answer is kept for
 * PREDCACHE_JOB_KEEP_SECONDS, counted from then.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  eventually,
  getJson,
  startTestService,
  type TestService,
  uniquePrefix,
} from "../helpers/service.ts";

let t: TestService;

beforeAll(async () => {
  t = await startTestService({
    env: {
      PREDCACHE_PREFIX: uniquePrefix("queuedclaims"),
      PREDCACHE_JOB_KEEP_SECONDS: "1",
      PREDCACHE_WAIT_MAX_MS: "200",
    },
  });
});
afterAll(async () => {
  await t.service.live.queue.resume();
  await t.close();
});

const sleep = (ms: number) => new Promise((done) => setTimeout(done, ms));

describe("a batch queued longer than a finished job is kept", () => {
  it("stays pollable, is joined by the same miss, and is kept for the keep time once done", async () => {
    const queue = t.service.live.queue;
    const url = `${t.url}/v1/models/flight-delay/predict?origin=ILE&destination=LIH&hour=11&dayOfWeek=6`;
    await queue.pause();
    const first = await getJson(`${url}&wait=0`);
    expect(first.status).toBe(202);
    const job = `${t.url}${first.headers.get("location")}`;
    // Past keep (1 s) + the longest wait (0.2 s) since the key was claimed: still queued.
    await sleep(2_000);
    const queued = await getJson(job);
    expect(queued.status).toBe(202);
    expect(queued.body).toMatchObject({ status: "pending", state: "queued" });
    const again = await getJson(`${url}&wait=0`);
    expect(again.status).toBe(202);
    expect(again.headers.get("location")).toBe(first.headers.get("location"));
    // One batch in the queue, not a second one for the same key.
    expect(await queue.count()).toBe(1);

    await queue.resume();
    const done = await eventually(async () => {
      const r = await getJson(job);
      return r.status === 200 ? r : undefined;
    });
    expect(done.body.status).toBe("completed");
    // Still kept a moment after finishing, however long it was queued…
    await sleep(300);
    expect((await getJson(job)).status).toBe(200);
    // …and gone once the keep time has passed since it finished.
    await eventually(async () => ((await getJson(job)).status === 404 ? true : undefined), 5_000);
  });
});
