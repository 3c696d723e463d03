/** GET /v1/jobs/:id — poll a live inference that did not finish within a request's wait. */
import type { Hono } from "hono";
import { PredcacheError, redisUnavailable } from "../../errors.ts";
import { parseLiveJobId } from "../../live/jobs.ts";
import type { ApiDeps } from "../deps.ts";
import { routeToArm } from "../experiment-routing.ts";
import { jsonReply } from "../headers.ts";
import { notModified, predictionEtag, predictionReply, setHitHeaders } from "../reply.ts";
import { jobLink, liveFailure, pendingOf } from "./predict.ts";

export function registerJobs(app: Hono, deps: ApiDeps): void {
  app.get("/v1/jobs/:id", async (c) => {
    const id = c.req.param("id");
    const notFound = new PredcacheError(
      "not_found",
      "no such job (finished jobs stay pollable for a while; ask for the prediction again)",
    );
    const ids = parseLiveJobId(id);
    const model = ids && deps.registry.get(ids.model, ids.version);
    if (!model) throw notFound;
    let poll: Awaited<ReturnType<typeof deps.live.poll>>;
    try {
      poll = await deps.live.poll(id);
    } catch (error) {
      throw redisUnavailable(error);
    }
    if (!poll) throw notFound;
    const { key } = poll;
    if (poll.state === "completed" && poll.prediction && key !== undefined) {
      const decoded = model.encoder.encode(model.encoder.decodeKey(key));
      const ood = decoded.ok ? decoded.value.outOfDistribution : [];
      // In an experiment, the arm this client's lookup named, when the job is of its version.
      const routed = routeToArm(c, deps, model);
      const arm = routed.model === model ? routed.assignment?.label : undefined;
      const etag = predictionEtag(model, key, arm);
      setHitHeaders(c, etag, deps.settings.hitMaxAgeSeconds, deps.settings.cacheScope);
      // The same validator as the lookup's answer: a client that has it gets no body again.
      if (notModified(c, etag)) return c.body(null, 304);
      return jsonReply(
        c,
        { status: "completed", ...predictionReply(model, key, "live", poll.prediction, ood, arm) },
        200,
      );
    }
    // Finished without this key's answer: the job failed, or the model failed on it alone.
    if (poll.state === "completed" || poll.state === "failed") throw liveFailure();
    c.header("Retry-After", "1");
    c.header("Cache-Control", "no-store");
    const routed = key === undefined ? undefined : routeToArm(c, deps, model);
    const arm = routed?.model === model ? routed.assignment?.label : undefined;
    return jsonReply(
      c,
      {
        status: "pending",
        state: pendingState(poll.state),
        ...(key === undefined ? {} : pendingOf(model, key, arm)),
        job: jobLink(id),
      },
      202,
    );
  });
}

/** Where a pending job is, in the API's words rather than the queue's. */
export type PendingState = "queued" | "running" | "retrying";

function pendingState(state: string): PendingState {
  if (state === "active") return "running";
  // The live queue delays a job only to try it again after a failed attempt.
  if (state === "delayed") return "retrying";
  return "queued";
}
