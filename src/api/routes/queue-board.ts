/**
 * bull-board, the BullMQ dashboard, at /admin/queues behind the admin token. Browsers
 * get an HTTP Basic prompt (any user name, the token as password); API clients may send
 * the Bearer header as everywhere else under /admin.
 */
import { createBullBoard } from "@bull-board/api";
import { BullMQAdapter } from "@bull-board/api/bullMQAdapter";
import { HonoAdapter } from "@bull-board/hono";
import { serveStatic } from "@hono/node-server/serve-static";
import { type Context, Hono, type MiddlewareHandler } from "hono";
import { auditActions } from "../../admin/audit.ts";
import { requireAdmin } from "../../admin/auth.ts";
import type { AdminDeps } from "../../admin/deps.ts";
import { PredcacheError, redisUnavailable } from "../../errors.ts";
import type { Logger } from "../../log.ts";
import { isRedisOutage } from "../../redis/outage.ts";
import { errorBody, handleError } from "../errors.ts";

export const QUEUE_BOARD_PATH = "/admin/queues";

/** The dashboard's own routes, per app it was registered on (for the OpenAPI document). */
const served = new WeakMap<Hono, readonly { method: string; path: string }[]>();

export function queueBoardRoutes(app: Hono): readonly { method: string; path: string }[] {
  return served.get(app) ?? [];
}

/** Sent by a page of another site: by Sec-Fetch-Site, else by an Origin of another host. */
function crossSite(c: Context): boolean {
  const site = c.req.header("sec-fetch-site");
  if (site) return site !== "same-origin" && site !== "none";
  const origin = c.req.header("origin");
  if (!origin) return false;
  try {
    return new URL(origin).host !== c.req.header("host");
  } catch {
    return true;
  }
}

export function registerQueueBoard(app: Hono, admin: AdminDeps, log: Logger): void {
  const board = new HonoAdapter(serveStatic);
  createBullBoard({
    queues: Object.values(admin.queues).map((queue) => new BullMQAdapter(queue)),
    serverAdapter: board,
    options: { uiConfig: { boardTitle: "predcache queues" } },
  });
  board.setBasePath(QUEUE_BOARD_PATH);
  // Pausing, cleaning, retrying or deleting jobs here are changes like any other: audited,
  // and so are refused attempts.
  const audited = auditActions(admin.audit, (c) =>
    `${c.req.method} /queues${c.req.path.slice(QUEUE_BOARD_PATH.length)}`.slice(0, 200),
  );
  const guard = requireAdmin(admin.tokens, { basic: true });
  // A browser resends cached Basic credentials with any request, cross-site ones too, and
  // bull-board reads any body as JSON: a change must come from the dashboard's own page.
  const sameSite: MiddlewareHandler = async (c, next) => {
    if (c.req.method !== "GET" && c.req.method !== "HEAD" && crossSite(c))
      throw new PredcacheError(
        "forbidden",
        "the queue dashboard takes changes from its own page only",
      );
    await next();
    // Its pages are not to be framed by another site (clickjacking).
    c.res.headers.set("X-Frame-Options", "DENY");
    c.res.headers.set("Content-Security-Policy", "frame-ancestors 'none'");
  };
  // "/admin/queues/*" also matches "/admin/queues" itself: one registration, so a
  // request is guarded and audited once.
  app.use(`${QUEUE_BOARD_PATH}/*`, audited);
  app.use(`${QUEUE_BOARD_PATH}/*`, guard);
  app.use(`${QUEUE_BOARD_PATH}/*`, sameSite);
  // Its own app, reached through one wildcard: bull-board's route patterns would push the
  // whole API off Hono's fastest router (RegExpRouter) if merged into the main one.
  const boardApp = new Hono().route(QUEUE_BOARD_PATH, board.registerPlugin());
  served.set(app, boardApp.routes);
  boardApp.notFound((c) => c.json(errorBody("not_found", "no such queue board page"), 404));
  boardApp.onError(handleError(log));
  const forward = async (c: Context) => {
    const response = await boardApp.fetch(c.req.raw, c.env);
    if (response.status < 500) return response;
    // bull-board answers a failed Redis command itself, 500 with its own body: an outage
    // is a 503 with Retry-After here as on every other route that needs Redis.
    const message = await response
      .clone()
      .json()
      .then((body: { message?: unknown }) => String(body?.message ?? ""))
      .catch(() => "");
    if (isRedisOutage(new Error(message))) throw redisUnavailable(new Error(message));
    return response;
  };
  // The page with a trailing slash (as typed, or as a proxy rewrites it) is the page:
  // bull-board routes only the bare path.
  app.all(`${QUEUE_BOARD_PATH}/`, (c) => {
    const query = c.req.url.indexOf("?");
    return c.redirect(QUEUE_BOARD_PATH + (query === -1 ? "" : c.req.url.slice(query)), 308);
  });
  app.all(QUEUE_BOARD_PATH, forward);
  app.all(`${QUEUE_BOARD_PATH}/*`, forward);
}
