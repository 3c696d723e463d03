/** Serves a Hono app on node:http and reports the address it actually got (port 0 → free). */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo, Socket } from "node:net";
import type { Duplex } from "node:stream";
import { getRequestListener } from "@hono/node-server";
import type { Hono } from "hono";
import type { Logger } from "../log.ts";
import { processMetrics } from "../observability/metrics.ts";
import { refuseConnect } from "./connect-refusal.ts";
import { frontOf, type NodeListener } from "./edge.ts";
import { requestIdOf } from "./request-log.ts";

export interface Listening {
  url: string;
  port: number;
  /** Stops accepting (new connections, and new requests on kept-alive ones), waits for in-flight requests, then resolves. */
  close(): Promise<void>;
}

/** Sweeps (50 ms apart) a connection must be seen idle on before it is closed at shutdown. */
const QUIET_SWEEPS = 3;

/** The response a connection is answering, if any (node keeps it on the socket). */
type HttpSocket = Socket & { _httpMessage?: ServerResponse | null };

/** node:http's server for an app, its front (./edge.ts) first if it has one; not listening. */
export function nodeServer(app: Hono, hostname?: string, log?: Logger): Server {
  const front = frontOf(app);
  const adapter: NodeListener = getRequestListener(app.fetch, {
    ...(hostname === undefined ? {} : { hostname }),
    // A request the adapter cannot make a Request of (a Host or target it refuses): a JSON
    // error like every other refusal, not its empty 400.
    errorHandler: (error) => refusalOf(error, log),
  });
  // The front is node's listener; what it does not answer it hands to Hono's.
  const next: NodeListener = front
    ? (incoming, outgoing) => front(incoming, outgoing, adapter)
    : adapter;
  // node answers an HTTP/1.1 request without Host with a bare 400; refused here, it gets
  // a JSON error like every other refusal.
  const server = createServer({ requireHostHeader: false }, (incoming, outgoing) => {
    if (incoming.httpVersion === "1.1" && incoming.headers.host === undefined)
      refuse(outgoing, 400, "bad_request", "an HTTP/1.1 request needs a Host header", log);
    // node keeps the first of two; which one a proxy before it read is anyone's guess
    // (RFC 9112 §3.2: a 400).
    else if (hostCount(incoming.rawHeaders) > 1)
      refuse(outgoing, 400, "bad_request", "a request has one Host header", log);
    else next(incoming, outgoing);
  });
  // Expect: 100-continue: node would say 100 at once. Said once the app starts reading the
  // body instead, a request refused on its headers alone (a body over the limit, an unknown
  // model, no token) gets its answer before the client sends a byte of the body.
  server.on("checkContinue", (incoming: IncomingMessage, outgoing: ServerResponse) => {
    // No body to hold back: said at once (node closes a connection whose 100 went unsaid).
    if (!hasBody(incoming)) outgoing.writeContinue();
    else
      incoming.once("resume", () => {
        if (!outgoing.headersSent && !outgoing.writableEnded) outgoing.writeContinue();
      });
    server.emit("request", incoming, outgoing);
  });
  // An expectation other than 100-continue (RFC 9110 §10.1.1): node would send a bare 417.
  server.on("checkExpectation", (incoming: IncomingMessage, outgoing: ServerResponse) => {
    const expect = String(incoming.headers.expect).slice(0, 100);
    refuse(outgoing, 417, "expectation_failed", `Expect: ${expect} is not supported`, log);
  });
  // CONNECT (a proxy's method): node would close the connection without a word.
  server.on("connect", (request: IncomingMessage, socket: Duplex) => {
    processMetrics().countHttp("other", 405);
    refuseConnect(socket, requestIdOf(request));
  });
  return server;
}

/**
 * The adapter's refusal of a request it cannot make a Request of (its RequestError: a Host
 * or target it does not take), or of an app that threw outside Hono's error handling.
 */
function refusalOf(error: unknown, log: Logger | undefined): Response {
  const refused = error instanceof Error && error.name === "RequestError";
  const status = refused ? 400 : 500;
  // The adapter gives the error alone, not the request: an id of its own.
  const id = requestIdOf(undefined);
  if (refused)
    log?.info({ reqId: id, status, reason: (error as Error).message }, "request refused");
  else log?.error({ reqId: id, err: error }, "request failed outside the app");
  processMetrics().countHttp("other", status);
  const body = refused
    ? { code: "bad_request", message: `the request is not valid: ${(error as Error).message}` }
    : { code: "internal", message: "internal error" };
  return new Response(JSON.stringify({ error: body }), {
    status,
    headers: {
      "Content-Type": "application/json",
      "Cache-Control": "no-store",
      "X-Request-Id": id,
    },
  });
}

/** What node:http's parser error (llhttp's code) is to the client. */
export function clientRefusal(code: string | undefined) {
  // Too slow (headersTimeout, requestTimeout), not malformed: RFC 9110 §15.5.9, as node's own.
  if (code === "ERR_HTTP_REQUEST_TIMEOUT")
    return {
      status: 408,
      reason: "Request Timeout",
      code: "request_timeout",
      message: "the request did not arrive in time (headers within 15 s, all of it within 2 min)",
    };
  if (code === "HPE_HEADER_OVERFLOW")
    return {
      status: 431,
      reason: "Request Header Fields Too Large",
      code: "headers_too_large",
      message: "the request line and headers exceed 16 KiB",
    };
  // A method node:http does not know at all (RFC 9110 §9.1: 501, not a malformed request).
  if (code === "HPE_INVALID_METHOD")
    return {
      status: 501,
      reason: "Not Implemented",
      code: "not_implemented",
      message: "the method is not one this server knows",
    };
  return {
    status: 400,
    reason: "Bad Request",
    code: "bad_request",
    message: "malformed HTTP request",
  };
}

function hasBody(incoming: IncomingMessage): boolean {
  const length = incoming.headers["content-length"];
  return incoming.headers["transfer-encoding"] !== undefined || (!!length && length !== "0");
}

/** How many Host headers a request has (rawHeaders: name, value, name, value…). */
function hostCount(raw: readonly string[]): number {
  let count = 0;
  for (let at = 0; at < raw.length; at += 2) {
    const name = raw[at] as string;
    if (name.length === 4 && name.toLowerCase() === "host") count++;
  }
  return count;
}

/** A refusal made before the app sees the request: logged and counted as the app's are. */
function refuse(
  outgoing: ServerResponse,
  status: number,
  code: string,
  message: string,
  log: Logger | undefined,
): void {
  const id = requestIdOf(outgoing.req);
  log?.info({ reqId: id, status, reason: message }, "request refused by node:http");
  processMetrics().countHttp("other", status);
  const body = JSON.stringify({ error: { code, message } });
  outgoing.shouldKeepAlive = false;
  outgoing.writeHead(status, {
    "Content-Type": "application/json",
    "Content-Length": Buffer.byteLength(body),
    "Cache-Control": "no-store",
    "X-Request-Id": id,
  });
  outgoing.end(body);
}

export function listen(
  app: Hono,
  host: string,
  port: number,
  /** Where requests node:http refuses before the app sees them are logged. */
  log?: Logger,
): Promise<Listening> {
  return new Promise((done, fail) => {
    let closing = false;
    /** Open connections, with the sweeps in a row each was seen idle on. */
    const connections = new Map<HttpSocket, number>();
    // node's own close() closes idle connections at once; a request already sent may then
    // sit unread on one the event loop has not got to (busy), and be cut off. Sweeps are
    // timers, and between two of them the loop reads what has arrived: a connection idle
    // on several in a row is closed, one that started a request meanwhile is not.
    const closeQuiet = () => {
      for (const [socket, quiet] of connections) {
        // Answers under way close their connection when done: no next request on it.
        if (socket._httpMessage) socket._httpMessage.shouldKeepAlive = false;
        const idle = !socket._httpMessage;
        if (idle && quiet + 1 >= QUIET_SWEEPS) socket.destroy();
        else connections.set(socket, idle ? quiet + 1 : 0);
      }
    };
    const server = nodeServer(app, host, log);
    server.listen(port, host, () => {
      const info = server.address() as AddressInfo;
      const shownHost = host.includes(":") ? `[${host}]` : host;
      done({
        url: `http://${shownHost}:${info.port}`,
        port: info.port,
        close: () =>
          new Promise((closed) => {
            closing = true;
            // close() calls this at once (node 19+): the sweeps do it, gently, instead.
            server.closeIdleConnections = () => {};
            // Keep-alive connections would keep bringing requests: answers now close
            // them, and those idle are closed once quiet.
            const sweep = setInterval(closeQuiet, 50);
            server.close(() => {
              clearInterval(sweep);
              closed();
            });
            closeQuiet();
          }),
      });
    });
    // Slow clients: headers within 15 s and a whole request (a 16 MiB admin upload at
    // most) within 2 min, not node's 60 s and 5 min, so trickling clients free up sooner.
    server.headersTimeout = 15_000;
    server.requestTimeout = 120_000;
    server.on("connection", (socket: HttpSocket) => {
      connections.set(socket, 0);
      socket.once("close", () => connections.delete(socket));
    });
    // Ahead of the app's listener: a reply written at once (a hit) then says "close" too.
    server.prependListener("request", (_req: IncomingMessage, res: ServerResponse) => {
      if (closing) res.shouldKeepAlive = false;
    });
    // Requests node:http refuses before the app sees them (headers or URL over 16 KiB,
    // malformed HTTP) still get a JSON error like every other refusal.
    server.on("clientError", (error: NodeJS.ErrnoException, socket: Duplex) => {
      if (!socket.writable || (error.code === "ECONNRESET" && socket.destroyed)) {
        socket.destroy();
        return;
      }
      const refusal = clientRefusal(error.code);
      // Its headers were not read: an id of its own, not one it may have sent.
      const id = requestIdOf(undefined);
      // One line like the request log's, and counted like its requests: these never reach it.
      // reqId, as the request log's lines say it (log queries join on it).
      log?.info(
        { reqId: id, status: refusal.status, reason: error.code ?? error.message },
        "request refused by node:http",
      );
      processMetrics().countHttp("other", refusal.status);
      const body = JSON.stringify({ error: { code: refusal.code, message: refusal.message } });
      socket.end(
        `HTTP/1.1 ${refusal.status} ${refusal.reason}\r\n` +
          `Content-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\nCache-Control: no-store\r\nX-Request-Id: ${id}\r\nConnection: close\r\n\r\n${body}`,
      );
    });
    // A start that cannot listen says which settings to change (the fatal log line).
    server.once("error", (error: NodeJS.ErrnoException) => {
      const hint =
        error.code === "EADDRINUSE" || error.code === "EACCES"
          ? "set PORT to a free port (0: any)"
          : error.code === "ENOTFOUND" || error.code === "EADDRNOTAVAIL"
            ? "set HOST to an address of this machine"
            : undefined;
      fail(
        hint ? Object.assign(new Error(`${error.message}: ${hint}`), { code: error.code }) : error,
      );
    });
  });
}
