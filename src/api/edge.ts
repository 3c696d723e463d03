/**
 * Edge hooks: what every request gets before the app sees it, on node:http's request and
 * response (a request id and the log line, CORS headers). Not Hono middleware: any
 * middleware on a route makes Hono dispatch through its async compose, whereas a route
 * with one handler that answers synchronously (an L1 hit) is written out in the same
 * turn. Measured on an L1 hit: the two middlewares cost more main-thread time than the
 * lookup.
 *
 * A front (see ./hot-lookups.ts) may answer a request on node:http before Hono builds
 * anything for it; it runs the hooks itself, once, through `enter`.
 */
import type { IncomingMessage, ServerResponse } from "node:http";
import type { Hono } from "hono";
import { flushHeaders } from "./headers.ts";

/**
 * Runs on a request before the app; a Response answers it there (the app is not run).
 * `answering`: a front answers the request itself and says when it has, or when it hands
 * the request on (logAnswered, ./request-log.ts): nothing need wait on its events.
 */
export type EdgeHook = (
  incoming: IncomingMessage,
  outgoing: ServerResponse,
  answering?: boolean,
) => Response | undefined;

/** node:http's request listener (the app, as @hono/node-server serves it). */
export type NodeListener = (incoming: IncomingMessage, outgoing: ServerResponse) => unknown;

/**
 * Answers a request on node's response, or hands it to `app` (at once or later). Before
 * it answers, it calls `enter`, which runs the edge hooks and says whether one answered
 * (a hook answers CORS preflights, OPTIONS, only): then the app must. A request it
 * entered and then hands to the app is marked first (markEntered), so the hooks do not
 * run twice. It enters with `answering` (see EdgeHook): it calls logAnswered once it has
 * answered, or as it hands the request on.
 */
export type Front = (
  incoming: IncomingMessage,
  outgoing: ServerResponse,
  app: NodeListener,
  enter: (incoming: IncomingMessage, outgoing: ServerResponse, answering?: boolean) => boolean,
) => void;

interface NodeBindings {
  incoming?: IncomingMessage;
  outgoing?: ServerResponse;
}

/** Marks a request whose hooks have run (a front entered it, then handed it to the app). */
const ENTERED = Symbol("edge hooks ran");
type Entered = IncomingMessage & { [ENTERED]?: true };

/** Marks a request whose hooks a front has run, before it hands the request to the app. */
export function markEntered(incoming: IncomingMessage): void {
  (incoming as Entered)[ENTERED] = true;
}

/** A front with its app's hooks bound: what listen() puts first, before Hono's listener. */
export type BoundFront = (
  incoming: IncomingMessage,
  outgoing: ServerResponse,
  app: NodeListener,
) => void;

const fronts = new WeakMap<Hono, BoundFront>();

/** The front of an app made by withEdge, if it has one. */
export function frontOf(app: Hono): BoundFront | undefined {
  return fronts.get(app);
}

/**
 * Runs `hooks` on each node:http request, then the app; its answer is returned as it
 * came, synchronous or not, after the headers the hooks and handlers added and no reply
 * took (see ./headers.ts) are given to node's response.
 */
export function withEdge(app: Hono, hooks: readonly EdgeHook[], front?: Front): Hono {
  const dispatch = app.fetch;
  app.fetch = (request, env, executionContext) => {
    const { incoming, outgoing } = (env ?? {}) as NodeBindings;
    if (!incoming || !outgoing) return dispatch(request, env, executionContext);
    let answer: Response | Promise<Response> | undefined;
    if (!(incoming as Entered)[ENTERED])
      for (const hook of hooks) answer ??= hook(incoming, outgoing);
    answer ??= dispatch(request, env, executionContext);
    if (!(answer instanceof Promise)) {
      flushHeaders(incoming, outgoing);
      return answer;
    }
    return answer.finally(() => flushHeaders(incoming, outgoing));
  };
  if (front) {
    const enter = (incoming: IncomingMessage, outgoing: ServerResponse, answering?: boolean) => {
      for (const hook of hooks) if (hook(incoming, outgoing, answering)) return true;
      return false;
    };
    fronts.set(app, (incoming, outgoing, next) => front(incoming, outgoing, next, enter));
  }
  return app;
}
