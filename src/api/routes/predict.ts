/**
 * GET  /v1/models/:model/predict?<feature>=<value>&…[&wait=ms]   one lookup
 * POST /v1/models/:model/predict  { inputs: [...], wait? }        up to batchMaxItems
 *
 * L1 → L2 → live queue. A miss waits up to `wait` ms for the live model and otherwise
 * answers 202 with the job to poll.
 */
import type { Context, Hono, MiddlewareHandler } from "hono";
import { bodyLimit } from "hono/body-limit";
import { z } from "zod";
import type { Hit, Source } from "../../cache/tiers.ts";
import { PredcacheError } from "../../errors.ts";
import type { Prediction } from "../../model/decoding.ts";
import {
  asNumber,
  type EncodedInput,
  type EncodeOutcome,
  type InputIssue,
} from "../../model/encoding.ts";
import type { ModelVersion } from "../../model/registry.ts";
import { clientOf } from "../access.ts";
import type { ApiDeps } from "../deps.ts";
import { errorBody } from "../errors.ts";
import { type Routed, recordArm, routeToArm } from "../experiment-routing.ts";
import {
  incomingOf,
  isJsonType,
  jsonReply,
  plainResponse,
  requestHeader,
  setHeader,
} from "../headers.ts";
import { type HotLookups, readByFront } from "../hot-lookups.ts";
import { LookupQueries } from "../lookup-query.ts";
import {
  type ArmLabel,
  type CacheScope,
  hitHeaders,
  ifNoneMatch,
  type MaxAge,
  notModified,
  predictionEtag,
  predictionReply,
} from "../reply.ts";
import { annotate } from "../request-log.ts";
import { hitReplyText, recordHit } from "../served-hit.ts";
import { resolveModel, resolveVersion } from "./models.ts";

/** Seconds since a performance.now() reading (a function, not a closure per request). */
function secondsSince(started: number): number {
  return (performance.now() - started) / 1000;
}

const TIMED_OUT = Symbol("timed out");

function waitFor<T>(promise: Promise<T>, ms: number): Promise<T | typeof TIMED_OUT> {
  if (ms <= 0) return Promise.resolve(TIMED_OUT);
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<typeof TIMED_OUT>((done) => {
    timer = setTimeout(() => done(TIMED_OUT), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/**
 * The wait: whole milliseconds, read as an integer feature is (JSON 250, "250", " 250",
 * "250.0", "2.5e2"); past the cap is the cap, however large ("1e400" too).
 */
function parseWait(raw: unknown, deps: ApiDeps): number {
  if (raw === undefined) return deps.settings.waitDefaultMs;
  const max = deps.settings.waitMaxMs;
  const ms = asNumber(raw);
  if (
    ms === undefined ||
    !(ms >= 0) ||
    !(Number.isInteger(ms) || ms === Number.POSITIVE_INFINITY)
  ) {
    throw new PredcacheError(
      "bad_request",
      `wait must be a whole number of milliseconds (longer than ${max} is shortened to ${max})`,
      { max },
    );
  }
  // -0 is 0.
  return ms === 0 ? 0 : Math.min(ms, max);
}

/**
 * Unknown fields listed per input at most (every issue of the model's own features is):
 * a made-up query of thousands of parameters gets a short answer, not one 20× its size.
 */
const MAX_UNKNOWN_FIELDS = 20;

function issuesDetail(issues: readonly InputIssue[]): {
  issues: InputIssue[];
  omittedUnknownFields?: number;
} {
  let unknown = 0;
  const listed = issues.filter(
    (i) => i.code !== "unknown_field" || ++unknown <= MAX_UNKNOWN_FIELDS,
  );
  const omitted = unknown - MAX_UNKNOWN_FIELDS;
  return omitted > 0 ? { issues: listed, omittedUnknownFields: omitted } : { issues: listed };
}

function invalid(issues: readonly InputIssue[]): PredcacheError {
  return new PredcacheError(
    "invalid_input",
    "the input does not match the model's schema",
    issuesDetail(issues),
  );
}

/**
 * The live model failed on an input. Why stays in the live worker's log: the model's own
 * message names its internals (nodes, tensor bounds), which replies do not show.
 */
export function liveFailure(): PredcacheError {
  return new PredcacheError(
    "inference_failed",
    "live inference failed for this input (the live worker's log says why); asking again tries again",
  );
}

export type LiveOutcome = { done: true; prediction: Prediction } | { done: false; jobId: string };

/** Queues a miss and waits up to `wait` ms (counted from now) for the live answer. */
export async function awaitLive(
  deps: ApiDeps,
  model: ModelVersion,
  key: string,
  wait: number,
): Promise<LiveOutcome> {
  const asked = performance.now();
  const { jobId, queued, result } = deps.live.submit(model, key, wait);
  try {
    // Even with wait=0 the job must be in the queue before a 202 points at it.
    await queued;
    // Time spent gathering and queuing comes out of the wait, not on top of it.
    const left = wait - (performance.now() - asked);
    const outcome = await waitFor(result, wait > 0 ? Math.max(1, left) : 0);
    if (outcome === TIMED_OUT) return { done: false, jobId };
    deps.tiers.remember(model, key, outcome);
    return { done: true, prediction: outcome };
  } catch (error) {
    if (error instanceof PredcacheError) throw error;
    const message = (error as Error).message;
    if (/timed out/i.test(message)) return { done: false, jobId };
    throw liveFailure();
  }
}

/** Counts a miss against the client's miss budget (when API keys are on); 429 past it. */
async function takeMiss(c: Context, deps: ApiDeps): Promise<void> {
  const client = clientOf(c);
  if (deps.access && client) await deps.access.limiter.take(c, client, "misses");
}

export function jobLink(jobId: string): { id: string; url: string } {
  return { id: jobId, url: `/v1/jobs/${jobId}` };
}

/** A 202: what is being computed (model, version, key, the experiment arm) and where to poll. */
function pending(
  c: Context,
  jobId: string,
  model: ModelVersion,
  key: string,
  arm: ArmLabel | undefined,
): Response {
  const job = jobLink(jobId);
  c.header("Location", job.url);
  c.header("Retry-After", "1");
  c.header("Cache-Control", "no-store");
  return jsonReply(c, { status: "pending", ...pendingOf(model, key, arm), job }, 202);
}

/** What a pending answer is of, as a 202 and a job's poll say it. */
export function pendingOf(model: ModelVersion, key: string, arm: ArmLabel | undefined) {
  return {
    model: model.name,
    version: model.version,
    key,
    ...(arm ? { experiment: arm } : {}),
  };
}

/**
 * One lookup. Synchronous up to the L1 and resident-table check: a hit is answered without
 * a single await (each costs the hot path microtask turns); the rest continues in answerMiss.
 */
function predictOne(
  c: Context,
  deps: ApiDeps,
  queries: LookupQueries,
  hot: HotLookups | undefined,
): Response | Promise<Response> {
  const query = queries.of(c);
  if (query.malformed)
    throw new PredcacheError("bad_request", "the query string has malformed percent-encoding");
  if (query.repeated.length > 0)
    throw new PredcacheError("bad_request", `${query.repeated.join(" and ")} may be given once`, {
      repeated: query.repeated,
    });
  const arrived = routeToArm(c, deps, resolveVersion(c, deps, query.version));
  const routed = arrived.assignment ? { ...arrived, input: query.features } : arrived;
  const { model } = routed;
  const arm = routed.assignment?.label;
  // Before the input is checked: a refused lookup's log line names its model too.
  annotate(c, { model: model.name, version: model.version });
  let wait: number;
  let badWait: PredcacheError | undefined;
  try {
    wait = parseWait(query.wait, deps);
  } catch (error) {
    badWait = error as PredcacheError;
    wait = 0;
  }
  const encoded = query.encode(model);
  // Every problem at once: a bad wait is listed with the input's own (422), or alone (400).
  if (!encoded.ok) {
    // An arm's version that refuses what the other takes: its report must show it.
    recordArm(deps, routed, "", "refused", undefined);
    throw invalid(
      badWait
        ? [...encoded.issues, { field: "wait", code: "not_integer", message: badWait.message }]
        : encoded.issues,
    );
  }
  if (badWait) throw badWait;
  const { key, outOfDistribution } = encoded.value;
  const validators: Validators = {
    etag: predictionEtag(model, key, arm),
    // Asked of a version by name, the answer never changes; else it follows the active one.
    maxAge: query.version === undefined ? deps.settings.hitMaxAgeSeconds : "immutable",
    scope: deps.settings.cacheScope,
    pinned: query.version,
  };
  // A tag the client holds is this version's answer for this key: no lookup needed. "*"
  // asks whether an answer exists: only a hit (answerHit) can say so.
  if (ifNoneMatch(c, validators.etag) === "tag") return notModifiedReply(c, validators);
  const started = performance.now();
  const local = deps.tiers.withoutRedis(model, key);
  if (local)
    return answerHit(c, deps, routed, key, local, outOfDistribution, validators, started, hot);
  return answerMiss(c, deps, routed, encoded.value, validators, wait, started, hot);
}

/** An answer's ETag and how long caches may keep it. */
interface Validators {
  etag: string;
  maxAge: MaxAge;
  scope: CacheScope;
  /** The version asked for by name (?version=), which the answer then always is. */
  pinned: string | undefined;
}

function notModifiedReply(c: Context, { etag, maxAge, scope }: Validators): Response {
  return plainResponse(c, 304, null, hitHeaders(etag, maxAge, undefined, scope));
}

function answerHit(
  c: Context,
  deps: ApiDeps,
  routed: Routed,
  key: string,
  hit: Hit,
  outOfDistribution: readonly string[],
  validators: Validators,
  started: number,
  hot: HotLookups | undefined,
): Response {
  const { model } = routed;
  if (notModified(c, validators.etag)) return notModifiedReply(c, validators);
  const incoming = incomingOf(c);
  recordHit(deps, routed, key, hit, outOfDistribution, started, incoming);
  // The same URL again is answered before the app, while nothing it depends on changes.
  if (incoming?.url && incoming.method === "GET")
    hot?.remember(incoming.url, {
      model,
      key,
      outOfDistribution,
      ...validators,
      ...(routed.assignment ? { assignment: routed.assignment } : {}),
      ...(routed.input ? { input: routed.input } : {}),
    });
  const text = hitReplyText(model, key, hit, outOfDistribution, routed.assignment?.label);
  return plainResponse(
    c,
    200,
    text,
    hitHeaders(validators.etag, validators.maxAge, "application/json", validators.scope),
  );
}

/** Redis, then the live model (up to `wait` ms), then 202 with the job to poll. */
async function answerMiss(
  c: Context,
  deps: ApiDeps,
  routed: Routed,
  encoded: EncodedInput,
  validators: Validators,
  wait: number,
  started: number,
  hot: HotLookups | undefined,
): Promise<Response> {
  const { model } = routed;
  const arm = routed.assignment?.label;
  const { key, outOfDistribution } = encoded;
  try {
    // A lookup the hot front has read from Redis already is not read again.
    const readBefore = readByFront(incomingOf(c), model, key);
    if (readBefore?.error) throw readBefore.error;
    const hit = readBefore ? undefined : await deps.tiers.fromRedis(model, key);
    if (hit)
      return answerHit(c, deps, routed, key, hit, outOfDistribution, validators, started, hot);
    // Counted as demand (what traffic:K precomputes) only once within the miss budget.
    await takeMiss(c, deps);
    deps.traffic.recordMiss(model, key);
    const live = await awaitLive(deps, model, key, wait);
    annotate(c, { source: live.done ? "live" : "pending" });
    if (!live.done) {
      deps.stats.record(model, key, "pending", { seconds: secondsSince(started) });
      recordArm(deps, routed, key, "pending", undefined);
      return pending(c, live.jobId, model, key, arm);
    }
    deps.stats.record(model, key, "live", {
      seconds: secondsSince(started),
      prediction: live.prediction,
      outOfDistribution: outOfDistribution.length > 0,
    });
    recordArm(deps, routed, key, "live", live.prediction);
    // "*" asks whether an answer exists: now one does.
    if (ifNoneMatch(c, validators.etag) === "any") return notModifiedReply(c, validators);
    return plainResponse(
      c,
      200,
      JSON.stringify(predictionReply(model, key, "live", live.prediction, outOfDistribution, arm)),
      hitHeaders(validators.etag, validators.maxAge, "application/json", validators.scope),
    );
  } catch (error) {
    // A refusal (past the key's miss budget) is not a failed lookup, as a 422 is not.
    if (!(error instanceof PredcacheError && error.code === "rate_limited")) {
      deps.stats.record(model, key, "failed", { seconds: secondsSince(started) });
      recordArm(deps, routed, key, "failed", undefined);
    }
    throw error;
  }
}

/** A batch body, as documented (OpenAPI). */
export const batchSchema = z.strictObject({
  inputs: z.array(z.record(z.string(), z.unknown())).min(1),
  // multipleOf(1), not int(): int() documents a maximum (2^53) the wait does not have.
  wait: z
    .union([
      z.number().min(0).multipleOf(1),
      // The usual forms; " 250" and "2.5e2" are taken too (read as an integer feature is).
      z
        .string()
        .regex(/^\+?\d+(\.0*)?$/)
        .describe('whole milliseconds as text ("250", "250.0")'),
    ])
    .optional(),
});

/**
 * A batch body, as read: the envelope only. Each input is checked on its own (one that is
 * not an object fails its item, as an invalid one does), and the wait by parseWait.
 */
const batchEnvelope = z.strictObject({
  inputs: z.array(z.unknown()).min(1),
  wait: z.unknown().optional(),
});

const NOT_AN_OBJECT: EncodeOutcome = {
  ok: false,
  issues: [
    { field: "", code: "wrong_type", message: "an input must be a JSON object of features" },
  ],
};

function encodeItem(model: ModelVersion, input: unknown): EncodeOutcome {
  if (typeof input !== "object" || input === null || Array.isArray(input)) return NOT_AN_OBJECT;
  return model.encoder.encode(input as Record<string, unknown>);
}

/**
 * A batch body is JSON, sent as such: a form's or text/plain body (which a browser may
 * send cross-site without asking first) or an encoded one is refused, not guessed at.
 * No Content-Type at all is taken as JSON (some HTTP clients send none with a body).
 */
function requireJsonBody(c: Context): void {
  const type = requestHeader(c, "content-type");
  const encoding = requestHeader(c, "content-encoding");
  const encoded = encoding !== undefined && encoding.trim().toLowerCase() !== "identity";
  // What it takes instead (RFC 9110 §15.5.16): no content coding.
  if (encoded) setHeader(c, "Accept-Encoding", "identity");
  if ((type && !isJsonType(type)) || encoded)
    throw new PredcacheError(
      "unsupported_media_type",
      "the body must be JSON in UTF-8 (Content-Type: application/json), not encoded",
      {
        contentType: type?.slice(0, 100) ?? null,
        contentEncoding: encoding?.slice(0, 100) ?? null,
      },
    );
}

/** A batch takes only ?version= in its URL; the rest goes in its body. */
function onlyVersionParameter(c: Context): void {
  // Read as sent: Hono's parsed query leaves out a parameter with an empty name ("?=x").
  const url = c.req.url;
  const at = url.indexOf("?");
  const names = at === -1 ? [] : [...new URLSearchParams(url.slice(at + 1)).keys()];
  const others = [...new Set(names.filter((name) => name !== "version"))];
  if (names.filter((name) => name === "version").length > 1)
    throw new PredcacheError("bad_request", "version may be given once", {
      repeated: ["version"],
    });
  if (others.length > 0)
    throw new PredcacheError(
      "bad_request",
      "a batch takes only ?version= in its URL: inputs and wait go in the body",
      { unknown: others.slice(0, 20) },
    );
}

type ItemResult = Record<string, unknown> & { status: number };

const UTF8 = new TextDecoder("utf-8", { fatal: true });

async function predictMany(c: Context, deps: ApiDeps): Promise<Response> {
  onlyVersionParameter(c);
  const routed = routeToArm(c, deps, resolveModel(c, deps));
  const { model } = routed;
  const arm = routed.assignment?.label;
  annotate(c, { model: model.name, version: model.version });
  requireJsonBody(c);
  let text: string;
  try {
    // Strict UTF-8, as a query string is: invalid bytes are refused, not read as U+FFFD
    // (an unknown category that would then be computed and answered).
    text = UTF8.decode(await c.req.arrayBuffer());
  } catch {
    throw new PredcacheError("bad_request", "the body is not valid UTF-8");
  }
  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch {
    throw new PredcacheError("bad_request", 'the body must be JSON: { "inputs": [ {...}, ... ] }');
  }
  const count = (body as { inputs?: unknown })?.inputs;
  if (Array.isArray(count) && count.length > deps.settings.batchMaxItems) {
    throw new PredcacheError(
      "payload_too_large",
      `at most ${deps.settings.batchMaxItems} inputs per request`,
      {
        max: deps.settings.batchMaxItems,
        got: count.length,
      },
    );
  }
  const parsed = batchEnvelope.safeParse(body);
  if (!parsed.success) {
    throw new PredcacheError(
      "bad_request",
      'the body must be { "inputs": [ {...}, ... ], "wait"?: ms } (a version goes in the URL: ?version=)',
      {
        issues: parsed.error.issues.map((i) => ({ path: i.path.join("."), message: i.message })),
      },
    );
  }
  const wait = parseWait(parsed.data.wait, deps);
  // The inputs as parsed, not zod's copies: a copy drops a "__proto__" field (assigned,
  // it sets the prototype), which the encoder must see to refuse as unknown.
  const inputs = (body as { inputs: unknown[] }).inputs;
  const encoded = inputs.map((input) => encodeItem(model, input));
  const valid = encoded.flatMap((e, i) => (e.ok ? [{ index: i, value: e.value }] : []));
  for (const e of encoded) if (!e.ok) recordArm(deps, routed, "", "refused", undefined);
  const results: ItemResult[] = encoded.map((e) =>
    e.ok
      ? { status: 0 }
      : {
          status: 422,
          ...errorBody(
            "invalid_input",
            "the input does not match the model's schema",
            issuesDetail(e.issues),
          ),
        },
  );

  let hits: (Hit | undefined)[];
  try {
    hits = await deps.tiers.lookupMany(
      model,
      valid.map((v) => v.value.key),
    );
  } catch (error) {
    if (!(error instanceof PredcacheError)) throw error;
    // Redis is away: answer what L1 holds, the rest item by item with the error; with
    // nothing to answer, the batch is the error (503 and Retry-After, as a lookup's).
    hits = valid.map((v) => deps.tiers.withoutRedis(model, v.value.key));
    valid.forEach((v, j) => {
      if (!hits[j])
        results[v.index] = {
          status: error.status,
          key: v.value.key,
          ...errorBody(error.code, error.message, error.details),
        };
    });
    if (valid.length === inputs.length && hits.every((hit) => !hit)) {
      recordItems(deps, routed, inputs, valid, results);
      throw error;
    }
    fill(results, valid, hits, model);
    recordItems(deps, routed, inputs, valid, results);
    return batchResponse(c, model, arm, results);
  }
  fill(results, valid, hits, model);

  valid.forEach((v, j) => {
    if (hits[j]) deps.audit?.consider(model, v.value.key, hits[j] as Hit);
    if (hits[j]) deps.traffic.recordHit(model, v.value.key);
  });
  // Each distinct input missed once: charged to the miss budget once and asked once (the
  // model computes it once), every copy of it answered alike.
  const missed = new Map<string, (typeof valid)[number][]>();
  valid.forEach((v, j) => {
    if (hits[j]) return;
    const copies = missed.get(v.value.key);
    if (copies) copies.push(v);
    else missed.set(v.value.key, [v]);
  });
  const misses = [...missed.values()].map((copies) => copies[0] as (typeof valid)[number]);
  const outcomes = await Promise.all(
    misses.map((m) =>
      takeMiss(c, deps)
        .then(() => {
          // Demand (what traffic:K precomputes) only within the miss budget.
          deps.traffic.recordMiss(model, m.value.key);
          return awaitLive(deps, model, m.value.key, wait);
        })
        .catch((error: PredcacheError) => ({ error }) as const),
    ),
  );
  misses.forEach((m, j) => {
    const outcome = outcomes[j];
    if (!outcome) return;
    let result: ItemResult;
    if ("error" in outcome) {
      result = {
        status: outcome.error.status ?? 500,
        // Which lookup failed (a valid input has its key), not only where it stood.
        key: m.value.key,
        // With its details: a miss refused past the budget says when it comes back.
        ...errorBody(
          outcome.error.code ?? "internal",
          outcome.error.message,
          outcome.error.details,
        ),
      };
    } else if (outcome.done) {
      result = {
        status: 200,
        ...predictionReply(
          model,
          m.value.key,
          "live",
          outcome.prediction,
          m.value.outOfDistribution,
        ),
      };
    } else {
      // Which lookup it is, as a single lookup's 202 says (the arm is the batch's).
      result = {
        status: 202,
        ...pendingOf(model, m.value.key, undefined),
        job: jobLink(outcome.jobId),
      };
    }
    for (const copy of missed.get(m.value.key) ?? []) results[copy.index] = result;
  });
  recordItems(deps, routed, inputs, valid, results);
  return batchResponse(c, model, arm, results);
}

/** Never cached (it mixes answers and errors); Retry-After when Redis failed some items. */
function batchResponse(
  c: Context,
  model: ModelVersion,
  arm: ArmLabel | undefined,
  results: ItemResult[],
): Response {
  c.header("Cache-Control", "no-store");
  if (results.some((r) => r.status === 503)) c.header("Retry-After", "1");
  return c.json(batchReply(model, arm, results));
}

function batchReply(model: ModelVersion, arm: ArmLabel | undefined, results: ItemResult[]) {
  return {
    model: model.name,
    version: model.version,
    ...(arm ? { experiment: arm } : {}),
    results,
  };
}

function recordItems(
  deps: ApiDeps,
  routed: Routed,
  inputs: readonly unknown[],
  valid: { index: number; value: EncodedInput }[],
  results: ItemResult[],
): void {
  const { model } = routed;
  for (const v of valid) {
    const result = results[v.index] as ItemResult;
    // An item refused past the key's miss budget is not a failed lookup.
    if (result.status === 429) continue;
    const outcome =
      result.status === 200
        ? (result.source as Source)
        : result.status === 202
          ? "pending"
          : "failed";
    const prediction = result.status === 200 ? (result.prediction as Prediction) : undefined;
    deps.stats.record(model, v.value.key, outcome, {
      ...(prediction ? { prediction } : {}),
      outOfDistribution: v.value.outOfDistribution.length > 0,
    });
    const input = inputs[v.index] as Record<string, unknown>;
    recordArm(
      deps,
      routed.assignment ? { ...routed, input } : routed,
      v.value.key,
      outcome,
      prediction,
    );
  }
}

/** The items answered from the cache (the arm, if any, is named once, at the top). */
function fill(
  results: ItemResult[],
  valid: { index: number; value: EncodedInput }[],
  hits: (Hit | undefined)[],
  model: ModelVersion,
): void {
  valid.forEach((v, j) => {
    const hit = hits[j];
    if (hit)
      results[v.index] = {
        status: 200,
        ...predictionReply(
          model,
          v.value.key,
          hit.source,
          hit.prediction,
          v.value.outOfDistribution,
        ),
      };
  });
}

/**
 * `hot`: where lookups answered from the cache are remembered for the front, if any;
 * `compressed`: the batch's reply compression (../compression.ts).
 */
export function registerPredict(
  app: Hono,
  deps: ApiDeps,
  hot: HotLookups | undefined,
  compressed: MiddlewareHandler,
): void {
  const queries = new LookupQueries();
  app.get("/v1/models/:model/predict", (c) => predictOne(c, deps, queries, hot));
  app.post(
    "/v1/models/:model/predict",
    compressed,
    bodyLimit({
      maxSize: deps.settings.bodyMaxBytes,
      onError: (c) => {
        // An unknown model is the first thing wrong with the request: said first.
        resolveModel(c, deps);
        throw new PredcacheError(
          "payload_too_large",
          `the body is larger than ${deps.settings.bodyMaxBytes} bytes`,
          { max: deps.settings.bodyMaxBytes },
        );
      },
    }),
    (c) => predictMany(c, deps),
  );
}
