/** The HTTP listener's close: stops accepting, and answers what was already sent. */
import { connect } from "node:net";
import { Hono } from "hono";
import { describe, expect, it } from "vitest";
import { clientRefusal, listen } from "../../src/api/listen.ts";

describe("listen().close()", () => {
  it("answers a request sent just before the close on a kept-alive connection", async () => {
    const app = new Hono();
    app.get("/healthz", (c) => c.json({ status: "ok" }));
    const server = await listen(app, "127.0.0.1", 0);
    const socket = connect(Number(new URL(server.url).port), "127.0.0.1");
    socket.on("error", () => {});
    await new Promise((done) => socket.once("connect", done));
    let reply = "";
    socket.on("data", (chunk) => {
      reply += chunk;
    });
    const request = "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
    socket.write(request);
    // Answered and kept alive: the connection is idle between two requests.
    for (let i = 0; i < 100 && !reply.includes('{"status":"ok"}'); i++)
      await new Promise((done) => setTimeout(done, 10));
    const ended = new Promise((done) => socket.once("close", done));
    // Written to the kernel now, read by the server only on a later turn of the loop: the
    // close comes first, as when SIGTERM meets a busy event loop. node's own close would
    // reset the connection as idle.
    socket.write(request);
    const closed = server.close();
    await ended;
    await closed;
    expect(reply.match(/HTTP\/1\.1 200 OK/g)).toHaveLength(2);
  });
});

describe("clientRefusal", () => {
  it("answers a request node:http timed out with 408, not as a malformed one", () => {
    expect(clientRefusal("ERR_HTTP_REQUEST_TIMEOUT")).toMatchObject({
      status: 408,
      code: "request_timeout",
    });
    expect(clientRefusal("HPE_INVALID_CONSTANT")).toMatchObject({ status: 400 });
    expect(clientRefusal("HPE_HEADER_OVERFLOW")).toMatchObject({ status: 431 });
  });
});
