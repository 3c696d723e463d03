/**
 * Live inference that fails: the answer is an error, on the waiting request and on every
 * poll of its job while the job is kept, and asking again tries again. The failure is a
 * real one: a version whose manifest lets `hour` run to 1000 feeds the demo model's
 * embedding an index past its end, which onnxruntime refuses at run time.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { ModelVersion } from "../../src/model/registry.ts";
import {
  getJson,
  labelled,
  modelsDirWithHourEdited,
  startTestService,
  type TestService,
  uniquePrefix,
} from "../helpers/service.ts";

let t: TestService;
let broken: ModelVersion;

beforeAll(async () => {
  const models = await modelsDirWithHourEdited("wide-hours", (hour) => {
    hour.max = 1000;
  });
  t = await startTestService({
    env: {
      PREDCACHE_PREFIX: uniquePrefix("livefail"),
      PREDCACHE_MODELS_DIR: models,
      PREDCACHE_JOB_KEEP_SECONDS: "60",
    },
  });
  broken = labelled(t.registry, "wide-hours");
});
afterAll(async () => {
  await t.close();
});

function lookup(hour: number, wait: number): string {
  const query = new URLSearchParams({
    origin: "SFO",
    destination: "LAX",
    hour: String(hour),
    dayOfWeek: "3",
    version: broken.version,
    wait: String(wait),
  });
  return `${t.url}/v1/models/flight-delay/predict?${query}`;
}

/** Polls a job until it is no longer pending; returns every pending state seen and the end. */
async function pollToEnd(url: string) {
  const states: string[] = [];
  for (let i = 0; i < 200; i++) {
    const r = await getJson(url);
    if (r.status !== 202) return { states, end: r };
    expect(r.body.status).toBe("pending");
    states.push(r.body.state);
    await new Promise((done) => setTimeout(done, 25));
  }
  throw new Error(`${url} still pending after 200 polls`);
}

describe("a live inference that fails", () => {
  it("answers a waiting request 500 inference_failed", async () => {
    const r = await getJson(lookup(900, 5000));
    expect(r.status).toBe(500);
    expect(r.body.error.code).toBe("inference_failed");
    expect(r.headers.get("cache-control")).toBe("no-store");
  });

  it("stays failed for every poll of its job while the job is kept, not 404", async () => {
    const pending = await getJson(lookup(901, 0));
    expect(pending.status).toBe(202);
    const url = `${t.url}${pending.body.job.url}`;
    const { states, end } = await pollToEnd(url);
    for (const state of states) expect(["queued", "running", "retrying"]).toContain(state);
    expect(end.status).toBe(500);
    expect(end.body.error.code).toBe("inference_failed");
    // The model's own message stays in the worker's log: it names the model's internals.
    expect(end.body.error.message).toMatch(/^live inference failed for this input/);
    expect(end.body.error.message).not.toMatch(/Gather|bounds|idx/i);
    // The claim is given up at once (so asking again tries again); polls still say why.
    await new Promise((done) => setTimeout(done, 500));
    for (let i = 0; i < 3; i++) {
      const again = await getJson(url);
      expect(again.status).toBe(500);
      expect(again.body.error.code).toBe("inference_failed");
    }
  });

  it("tries again when the input is asked for again, and polls follow the new try", async () => {
    const first = await getJson(lookup(902, 0));
    const url = `${t.url}${first.body.job.url}`;
    expect((await pollToEnd(url)).end.status).toBe(500);
    const retry = await getJson(lookup(902, 0));
    expect(retry.status).toBe(202);
    expect(retry.body.job.url).toBe(first.body.job.url);
    // A new job, tried 3 times with backoff (≥ 300 ms): pending again before it fails.
    const { states, end } = await pollToEnd(url);
    expect(states.length).toBeGreaterThan(0);
    expect(end.status).toBe(500);
  });

  it("ends the failed batch's claims from the worker, with no API process left watching it", async () => {
    // The process that queued the miss is gone before the job fails: nobody watches it.
    const api = await startTestService({
      env: {
        PREDCACHE_PREFIX: t.config.prefix,
        PREDCACHE_MODELS_DIR: t.config.modelsDir,
        PREDCACHE_JOB_KEEP_SECONDS: "60",
      },
      liveWorker: false,
    });
    const pending = await getJson(lookup(903, 0).replace(t.url, api.url));
    await api.close();
    expect(pending.status).toBe(202);
    const url = `${t.url}${pending.body.job.url}`;
    expect((await pollToEnd(url)).end.status).toBe(500);
    // The claim was given up by the worker: asking again is a new try, not the dead batch.
    const retry = await getJson(lookup(903, 0));
    expect(retry.status).toBe(202);
    const { states, end } = await pollToEnd(url);
    expect(states.length).toBeGreaterThan(0);
    expect(end.body.error.code).toBe("inference_failed");
  });

  it("fails an input alone: the misses gathered and run with it are answered", async () => {
    const input = (hour: number) => ({ origin: "SFO", destination: "LAX", hour, dayOfWeek: 4 });
    // One batch request: its misses go to the live queue as one job, and one run.
    const r = await getJson(`${t.url}/v1/models/flight-delay/predict?version=${broken.version}`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({
        inputs: [input(904), input(8), input(9), input(905), input(10)],
        wait: 5000,
      }),
    });
    expect(r.status).toBe(200);
    const statuses = r.body.results.map((item: { status: number }) => item.status);
    expect(statuses).toEqual([500, 200, 200, 500, 200]);
    expect(r.body.results[0].error.code).toBe("inference_failed");
    for (const i of [1, 2, 4]) expect(r.body.results[i].source).toBe("live");
    // The answered ones were stored; the failed ones were not, and asking again tries again.
    const again = await getJson(
      `${t.url}/v1/models/flight-delay/predict?${new URLSearchParams({
        origin: "SFO",
        destination: "LAX",
        hour: "9",
        dayOfWeek: "4",
        version: broken.version,
      })}`,
    );
    expect(again.status).toBe(200);
    expect(again.body.source).not.toBe("live");
    const retry = await getJson(lookup(904, 0).replace("dayOfWeek=3", "dayOfWeek=4"));
    expect(retry.status).toBe(202);
    expect((await pollToEnd(`${t.url}${retry.body.job.url}`)).end.status).toBe(500);
  });

  it("answers a job's keys the worker can take, when another of its keys it cannot", async () => {
    // As a shadow comparison or an older API process might send: a key this version refuses.
    const good = broken.encoder.encode({
      origin: "SFO",
      destination: "LAX",
      hour: 11,
      dayOfWeek: 4,
    });
    if (!good.ok) throw new Error("fixture");
    const refused = JSON.stringify(["SFO", "LAX", 11]);
    const job = await t.service.live.queue.add(
      "predict",
      { model: broken.name, version: broken.version, keys: [refused, good.value.key] },
      { jobId: `${broken.name}.${broken.version}.btest${Date.now()}`, attempts: 1 },
    );
    let state = await job.getState();
    for (let i = 0; i < 200 && state !== "completed" && state !== "failed"; i++) {
      await new Promise((done) => setTimeout(done, 25));
      state = await job.getState();
    }
    expect(state).toBe("completed");
    const done = await t.service.live.queue.getJob(job.id as string);
    expect(Object.keys(done?.returnvalue ?? {})).toEqual([good.value.key]);
  });

  it("answers the version's other inputs", async () => {
    const r = await getJson(lookup(7, 5000));
    expect(r.status).toBe(200);
    expect(r.body).toMatchObject({ source: "live", version: broken.version });
  });
});
