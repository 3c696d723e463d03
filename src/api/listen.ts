/** Serves a Hono app on node:http and reports the address it actually got (port 0 → free). */
import type { IncomingMessage, Server, ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import type { Duplex } from "node:stream";
import { serve } from "@hono/node-server";
import type { Hono } from "hono";

export interface Listening {
  url: string;
  port: number;
  /** Stops accepting (new connections, and new requests on kept-alive ones), waits for in-flight requests, then resolves. */
  close(): Promise<void>;
}

export function listen(app: Hono, host: string, port: number): Promise<Listening> {
  return new Promise((done, fail) => {
    let closing = false;
    const server = serve({ fetch: app.fetch, hostname: host, port }, (info: AddressInfo) => {
      const shownHost = host.includes(":") ? `[${host}]` : host;
      done({
        url: `http://${shownHost}:${info.port}`,
        port: info.port,
        close: () =>
          new Promise((closed) => {
            closing = true;
            const http = server as Server;
            // Keep-alive connections would keep bringing requests: answers now close
            // them, and those already idle are closed as they go idle.
            const sweep = setInterval(() => http.closeIdleConnections(), 50);
            http.close(() => {
              clearInterval(sweep);
              closed();
            });
            http.closeIdleConnections();
          }),
      });
    });
    server.on("request", (_req: IncomingMessage, res: ServerResponse) => {
      if (closing) res.shouldKeepAlive = false;
    });
    // Requests node:http refuses before the app sees them (headers or URL over 16 KiB,
    // malformed HTTP) still get a JSON error like every other refusal.
    server.on("clientError", (error: NodeJS.ErrnoException, socket: Duplex) => {
      if (!socket.writable || (error.code === "ECONNRESET" && socket.destroyed)) {
        socket.destroy();
        return;
      }
      const tooLarge = error.code === "HPE_HEADER_OVERFLOW";
      const body = JSON.stringify({
        error: tooLarge
          ? { code: "headers_too_large", message: "the request line and headers exceed 16 KiB" }
          : { code: "bad_request", message: "malformed HTTP request" },
      });
      socket.end(
        `HTTP/1.1 ${tooLarge ? "431 Request Header Fields Too Large" : "400 Bad Request"}\r\n` +
          `Content-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n${body}`,
      );
    });
    server.once("error", fail);
  });
}
