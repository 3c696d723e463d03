/**
 * Shadow benchmark — `npm run bench:shadow`. What experiments and shadow comparisons cost
 * the request path, in one run, side by side, loopback only. The same hits (every input
 * precomputed for both versions, so every reply comes from L1) under four settings:
 *
 *   1. no experiment
 *   2. an experiment splitting clients 50/50, no shadow
 *   3. the same with 10 % of lookups shadowed
 *   4. the same with every lookup shadowed (the worst case)
 *
 * A shadow comparison runs after the reply is sent; what it may still cost the request
 * path is event-loop time. The bound printed below is on p99 latency and throughput
 * against setting 1. Each setting is measured twice per slice:
 * - throughput with a closed loop (LOAD.inFlight lanes, each sending when answered);
 * - latency at one fixed rate for all settings (PACED_SHARE of what setting 1 served in
 *   the warm-up), open loop: at saturation a closed loop's percentiles are queueing, so
 *   any throughput difference shows up again as latency.
 * Settings are measured in interleaved slices (round-robin, rotating who goes first)
 * since small VMs throttle after a few seconds; each slice starts its setting afresh and
 * settles it with LOAD.settle lookups it does not measure. Nothing is asserted but the setup: a
 * reply that is not a hit, or a changed reply, fails the run.
 */
import { rm } from "node:fs/promises";
import { arch, availableParallelism, cpus, platform } from "node:os";
import type { ModelVersion } from "../src/model/registry.ts";
import { startRedisServer } from "../src/redis/embedded.ts";
import { modelsDirWithVersions } from "../test/helpers/models.ts";
import { ForkedLoad } from "./lib/forked-load.ts";
import type { LiveClientOutcome } from "./lib/live-client.ts";
import { startPredcache } from "./lib/predcache.ts";
import { median, percentile, ratio, table } from "./lib/report.ts";

const MODEL = "flight-delay";
const PREDICT = `/v1/models/${MODEL}/predict`;
/**
 * `settle`: lookups sent, and not measured, after each switch of setting. A new
 * experiment's first lookup of each URL in each arm is answered by the app (the hot front
 * then knows it: src/api/hot-lookups.ts) and each new client's arm is hashed once; an
 * experiment pays that once, not per lookup. Without it, 540 such first answers in each
 * 6,000-lookup slice made an experiment look ~20% slower than it serves.
 */
const LOAD = { requestsPerSlice: 6_000, settle: 2_000, slices: 5, inFlight: 16, clients: 1_000 };
const BOUND = { p99: 1.25, throughput: 0.8 };
/** The paced rate, as a share of what "no experiment" served closed-loop in the warm-up. */
const PACED_SHARE = 0.5;

interface Setting {
  name: string;
  experiment?: { fraction: number; shadowRate: number };
}

const SETTINGS: Setting[] = [
  { name: "no experiment" },
  { name: "experiment 50/50, no shadow", experiment: { fraction: 0.5, shadowRate: 0 } },
  { name: "experiment, shadow 10%", experiment: { fraction: 0.5, shadowRate: 0.1 } },
  { name: "experiment, shadow 100%", experiment: { fraction: 0.5, shadowRate: 1 } },
];

const airports = ["ATL", "ORD", "DFW", "DEN", "LAX", "SFO", "SEA", "BOS", "PHX", "LAS"];
const inputs = airports.flatMap((origin) =>
  airports
    .filter((d) => d !== origin)
    .flatMap((destination) =>
      [7, 12, 18].map((hour) => ({ origin, destination, hour: String(hour), dayOfWeek: "4" })),
    ),
);

async function main(): Promise<void> {
  console.log(
    `shadow bench — ${platform()} ${arch()}, ${availableParallelism()} CPUs (${cpus()[0]?.model ?? "?"}), Node ${process.version}`,
  );
  const redis = await startRedisServer();
  const modelsDir = await modelsDirWithVersions(["shadow"]);
  const app = await startPredcache(
    redis.url,
    { PREDCACHE_MODELS_DIR: modelsDir, PREDCACHE_AUDIT_RATE: "0" },
    { liveWorker: true },
  ).catch(async (error: unknown) => {
    await rm(modelsDir, { recursive: true, force: true });
    await redis.stop();
    throw error;
  });
  const load = new ForkedLoad();
  try {
    const { service, registry } = app;
    const active = service.active.get(MODEL) as string;
    const control = registry.get(MODEL, active) as ModelVersion;
    const candidate = registry.versions(MODEL).find((v) => v.version !== active) as ModelVersion;

    // Every input answered once by each version: from here on, every lookup is an L1 hit.
    for (const version of [control.version, candidate.version]) {
      await Promise.all(
        inputs.map(async (input) => {
          const query = new URLSearchParams({ ...input, version, wait: "10000" });
          const reply = await fetch(`${app.url}${PREDICT}?${query}`);
          if (reply.status !== 200) throw new Error(`warm-up: ${reply.status}`);
        }),
      );
    }
    const queries = Array.from({ length: LOAD.requestsPerSlice }, (_, i) =>
      new URLSearchParams(inputs[i % inputs.length]).toString(),
    );
    // Client ids cycle with a different period than the inputs: every pair occurs.
    const headers = Array.from({ length: LOAD.clients }, (_, i) => ({
      "x-client-id": `bench-client-${i}`,
    }));

    let sequence = 0;
    const use = async (setting: Setting) => {
      const running = service.experiments.running.get(MODEL);
      const stored = running && (await service.experiments.store.record(MODEL, running.id));
      if (running && stored)
        await service.experiments.store.stop(
          { ...running, state: "reverted", stoppedAt: new Date().toISOString() },
          undefined,
          stored.read,
        );
      if (setting.experiment)
        await service.experiments.store.start({
          id: `bench-${sequence++}`,
          model: MODEL,
          control: control.version,
          candidate: candidate.version,
          ...setting.experiment,
          state: "running",
          startedAt: new Date().toISOString(),
        });
      await service.experiments.running.refresh();
      await service.experiments.shadow.drain();
    };

    /** Per setting, the paced outcomes of each measured slice. */
    const outcomes = new Map<Setting, LiveClientOutcome[][]>(SETTINGS.map((s) => [s, []]));
    const seconds = new Map<Setting, number>(SETTINGS.map((s) => [s, 0]));
    const served = new Map<Setting, number>(SETTINGS.map((s) => [s, 0]));
    const shadowed = { sampled: 0, compared: 0, dropped: 0, failed: 0 };
    let pacedRate = 0;
    const send = async (setting: Setting, ratePerSec?: number, count = queries.length) => {
      const result = await load.run({
        url: `${app.url}${PREDICT}`,
        queries: queries.slice(0, count),
        headers,
        inFlight: LOAD.inFlight,
        ...(ratePerSec ? { ratePerSec } : {}),
      });
      await service.experiments.shadow.drain();
      const bad = result.outcomes.find((o) => o.status !== 200 || o.source !== "memory");
      if (bad)
        throw new Error(`${setting.name}: a reply that is not an L1 hit: ${JSON.stringify(bad)}`);
      return result;
    };
    // A discarded warm-up slice per setting (closed loop: it sets the paced rate), then
    // the measured ones.
    for (let slice = -1; slice < LOAD.slices; slice++) {
      for (const setting of SETTINGS.map((_, i) => SETTINGS[(i + slice + 1) % SETTINGS.length])) {
        if (!setting) continue;
        await use(setting);
        await send(setting, undefined, LOAD.settle);
        const before = { ...service.experiments.shadow.counts };
        const closed = await send(setting);
        if (slice < 0) {
          if (setting === SETTINGS[0])
            pacedRate = (PACED_SHARE * closed.outcomes.length) / closed.seconds;
          continue;
        }
        const open = await send(setting, pacedRate);
        served.set(setting, (served.get(setting) ?? 0) + closed.outcomes.length);
        seconds.set(setting, (seconds.get(setting) ?? 0) + closed.seconds);
        outcomes.get(setting)?.push(open.outcomes);
        if (setting.experiment?.shadowRate)
          for (const k of Object.keys(shadowed) as (keyof typeof shadowed)[])
            shadowed[k] += service.experiments.shadow.counts[k] - before[k];
      }
    }

    // Each percentile is the median of the slices' own: one VM stall (they reach 10-20 ms
    // here) in one slice moves a pooled p99 by more than any setting does.
    const rows = SETTINGS.map((setting) => {
      const slices = (outcomes.get(setting) ?? []).map((slice) =>
        slice.map((o) => o.ms).sort((a, b) => a - b),
      );
      const ofSlices = (q: number) => median(slices.map((ms) => percentile(ms, q)));
      return {
        setting,
        rps: (served.get(setting) ?? 0) / (seconds.get(setting) ?? 1),
        p50: ofSlices(0.5),
        p90: ofSlices(0.9),
        p99: ofSlices(0.99),
        p99Range: slices.map((ms) => percentile(ms, 0.99)),
      };
    });
    const base = rows[0] as (typeof rows)[number];
    console.log(
      `\n${LOAD.slices} slices per setting, each ${LOAD.requestsPerSlice} lookups closed-loop (${LOAD.inFlight} in flight: req/s) ` +
        `and ${LOAD.requestsPerSlice} paced at ${pacedRate.toFixed(0)}/s (open loop, at most ${LOAD.inFlight} in flight: ` +
        `latencies, each the median of the slices'); ${LOAD.clients} clients, ${inputs.length} inputs:\n`,
    );
    console.log(
      table(
        [
          "setting",
          "req/s",
          "vs none",
          "paced p50 ms",
          "p90 ms",
          "p99 ms",
          "p99 vs none",
          "p99 added",
          "slices' p99s ms",
        ],
        rows.map((r) => [
          r.setting.name,
          r.rps.toFixed(0),
          ratio(r.rps, base.rps),
          r.p50.toFixed(2),
          r.p90.toFixed(2),
          r.p99.toFixed(2),
          ratio(r.p99, base.p99),
          `${(r.p99 - base.p99).toFixed(2)} ms`,
          r.p99Range.map((v) => v.toFixed(1)).join(" "),
        ]),
      ),
    );
    console.log(
      `\nshadow comparisons during the measured shadow slices: ${shadowed.sampled} sampled, ${shadowed.compared} compared, ${shadowed.dropped} dropped (in-flight bound), ${shadowed.failed} failed`,
    );
    const worst = rows[rows.length - 1] as (typeof rows)[number];
    const verdict = (ok: boolean) => (ok ? "PASS" : "MISS");
    console.log(
      `bound, shadow 100% vs no experiment: p99 ${ratio(worst.p99, base.p99)} (≤ ${BOUND.p99}×: ${verdict(worst.p99 <= BOUND.p99 * base.p99)}), throughput ${ratio(worst.rps, base.rps)} (≥ ${BOUND.throughput}×: ${verdict(worst.rps >= BOUND.throughput * base.rps)})`,
    );
  } finally {
    await load.close();
    await app.close();
    await rm(modelsDir, { recursive: true, force: true });
    await redis.stop();
  }
}

await main();
