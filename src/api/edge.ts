/**
 * Edge hooks: what every request gets before the app sees it, on node:http's request and
 * response (a request id and the log line, CORS headers). Not Hono middleware: any
 * middleware on a route makes Hono dispatch through its async compose, whereas a route
 * with one handler that answers synchronously (an L1 hit) is written out in the same
 * turn. Measured on an L1 hit: the two middlewares cost more main-thread time than the
 * lookup.
 */
import type { IncomingMessage, ServerResponse } from "node:http";
import type { Hono } from "hono";
import { flushHeaders } from "./headers.ts";

/** Runs on a request before the app; a Response answers it there (the app is not run). */
export type EdgeHook = (
  incoming: IncomingMessage,
  outgoing: ServerResponse,
) => Response | undefined;

interface NodeBindings {
  incoming?: IncomingMessage;
  outgoing?: ServerResponse;
}

/**
 * Runs `hooks` on each node:http request, then the app; its answer is returned as it
 * came, synchronous or not, after the headers the hooks and handlers added and no reply
 * took (see ./headers.ts) are given to node's response.
 */
export function withEdge(app: Hono, hooks: readonly EdgeHook[]): Hono {
  const dispatch = app.fetch;
  app.fetch = (request, env, executionContext) => {
    const { incoming, outgoing } = (env ?? {}) as NodeBindings;
    if (!incoming || !outgoing) return dispatch(request, env, executionContext);
    let answer: Response | Promise<Response> | undefined;
    for (const hook of hooks) answer ??= hook(incoming, outgoing);
    answer ??= dispatch(request, env, executionContext);
    if (!(answer instanceof Promise)) {
      flushHeaders(incoming, outgoing);
      return answer;
    }
    return answer.finally(() => flushHeaders(incoming, outgoing));
  };
  return app;
}
