/** Serves a Hono app on node:http and reports the address it actually got (port 0 → free). */
import type { AddressInfo } from "node:net";
import { serve } from "@hono/node-server";
import type { Hono } from "hono";

export interface Listening {
  url: string;
  port: number;
  /** Stops accepting, waits for in-flight requests, then resolves. */
  close(): Promise<void>;
}

export function listen(app: Hono, host: string, port: number): Promise<Listening> {
  return new Promise((done, fail) => {
    const server = serve({ fetch: app.fetch, hostname: host, port }, (info: AddressInfo) => {
      const shownHost = host.includes(":") ? `[${host}]` : host;
      done({
        url: `http://${shownHost}:${info.port}`,
        port: info.port,
        close: () =>
          new Promise((closed) => {
            server.close(() => closed());
            if ("closeIdleConnections" in server) server.closeIdleConnections();
          }),
      });
    });
    server.once("error", fail);
  });
}
