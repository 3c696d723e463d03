/**
 * bull-board, the BullMQ dashboard, at /admin/queues behind the admin token. Browsers
 * get an HTTP Basic prompt (any user name, the token as password); API clients may send
 * the Bearer header as everywhere else under /admin.
 */
import { createBullBoard } from "@bull-board/api";
import { BullMQAdapter } from "@bull-board/api/bullMQAdapter";
import { HonoAdapter } from "@bull-board/hono";
import { serveStatic } from "@hono/node-server/serve-static";
import { type Context, Hono } from "hono";
import { requireAdmin } from "../../admin/auth.ts";
import type { AdminDeps } from "../../admin/deps.ts";
import type { Logger } from "../../log.ts";
import { errorBody, handleError } from "../errors.ts";

export const QUEUE_BOARD_PATH = "/admin/queues";

export function registerQueueBoard(app: Hono, admin: AdminDeps, log: Logger): void {
  const board = new HonoAdapter(serveStatic);
  createBullBoard({
    queues: Object.values(admin.queues).map((queue) => new BullMQAdapter(queue)),
    serverAdapter: board,
    options: { uiConfig: { boardTitle: "predcache queues" } },
  });
  board.setBasePath(QUEUE_BOARD_PATH);
  app.use(`${QUEUE_BOARD_PATH}/*`, requireAdmin(admin.tokens, { basic: true }));
  app.use(QUEUE_BOARD_PATH, requireAdmin(admin.tokens, { basic: true }));
  // Its own app, reached through one wildcard: bull-board's route patterns would push the
  // whole API off Hono's fastest router (RegExpRouter) if merged into the main one.
  const boardApp = new Hono().route(QUEUE_BOARD_PATH, board.registerPlugin());
  boardApp.notFound((c) => c.json(errorBody("not_found", "no such queue board page"), 404));
  boardApp.onError(handleError(log));
  const forward = (c: Context) => boardApp.fetch(c.req.raw, c.env);
  app.all(QUEUE_BOARD_PATH, forward);
  app.all(`${QUEUE_BOARD_PATH}/*`, forward);
}
