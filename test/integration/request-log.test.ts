/** Request logs: one JSON line per request with id, route facts and timing, and no inputs. */
import { connect } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  capturedLog,
  eventually,
  getJson,
  startTestService,
  type TestService,
} from "../helpers/service.ts";

const { log, lines } = capturedLog();
let t: TestService;

beforeAll(async () => {
  t = await startTestService({ log });
});
afterAll(() => t.close());

describe("request logs", () => {
  it("log id, method, path, status, duration, model, version and source, never the inputs", async () => {
    const r = await getJson(
      `${t.url}/v1/models/flight-delay/predict?origin=SFO&destination=LAX&hour=7&dayOfWeek=1&wait=3000`,
      { headers: { "x-request-id": "trace-123" } },
    );
    expect(r.headers.get("x-request-id")).toBe("trace-123");
    const line = await eventually(async () => lines.find((l) => l.reqId === "trace-123"));
    expect(line).toMatchObject({
      msg: "request",
      method: "GET",
      path: "/v1/models/flight-delay/predict",
      status: 200,
      model: "flight-delay",
      version: r.body.version,
      source: r.body.source,
    });
    expect(typeof line.ms).toBe("number");
    expect(JSON.stringify(lines)).not.toMatch(/SFO|origin=/);

    const odd = await getJson(`${t.url}/healthz`, {
      headers: { "x-request-id": "bad id <forged>" },
    });
    const made = odd.headers.get("x-request-id") as string;
    // Made here: 64 random bits, a new one per request (no count to read traffic from).
    expect(made).toMatch(/^[0-9a-f]{16}$/);
    const more = await Promise.all(
      Array.from({ length: 600 }, () => fetch(`${t.url}/healthz`).then((r) => r.headers)),
    );
    const ids = new Set([made, ...more.map((h) => h.get("x-request-id"))]);
    expect(ids.size).toBe(601);
    expect(await eventually(async () => lines.find((l) => l.reqId === made))).toMatchObject({
      path: "/healthz",
      status: 200,
    });
  });

  it("logs a client gone mid-body as aborted, not as an unhandled error", async () => {
    const { port } = new URL(t.url);
    const socket = connect(Number(port), "127.0.0.1");
    await new Promise((done) => socket.once("connect", done));
    socket.write(
      "POST /v1/models/flight-delay/predict HTTP/1.1\r\nHost: 127.0.0.1\r\n" +
        "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n" +
        'X-Request-Id: gone-mid-body\r\n\r\n5\r\n{"inp\r\n',
    );
    await new Promise((done) => setTimeout(done, 200));
    socket.destroy();
    const line = await eventually(async () => lines.find((l) => l.reqId === "gone-mid-body"));
    expect(line).toMatchObject({ aborted: true });
    expect(line.msg).not.toBe("request failed");
    expect(lines.some((l) => l.msg === "unhandled error")).toBe(false);
  });

  it("names the model of refused and batch lookups, and logs an absolute target's path only", async () => {
    const predict = `${t.url}/v1/models/flight-delay/predict`;
    await getJson(`${predict}?origin=SFO&hour=99`, { headers: { "x-request-id": "refused-1" } });
    await getJson(`${predict}?origin=SFO&version=nope`, {
      headers: { "x-request-id": "refused-2" },
    });
    const batch = await getJson(predict, {
      method: "POST",
      headers: { "content-type": "application/json", "x-request-id": "batch-1" },
      body: JSON.stringify({ inputs: [{ origin: "SFO" }] }),
    });
    expect(batch.status).toBe(200);
    const line = (id: string) => eventually(async () => lines.find((l) => l.reqId === id));
    expect(await line("refused-1")).toMatchObject({ status: 422, model: "flight-delay" });
    expect((await line("refused-1")).version).toBeDefined();
    expect(await line("refused-2")).toMatchObject({ status: 404, model: "flight-delay" });
    expect(await line("batch-1")).toMatchObject({
      status: 200,
      model: "flight-delay",
      version: expect.any(String),
    });

    const { port } = new URL(t.url);
    const socket = connect(Number(port), "127.0.0.1");
    socket.write(
      "GET http://user:s3cretpass@example.com/healthz HTTP/1.1\r\nHost: example.com\r\n" +
        "X-Request-Id: absolute-1\r\nConnection: close\r\n\r\n",
    );
    socket.resume();
    expect(await line("absolute-1")).toMatchObject({ path: "/healthz" });
    expect(JSON.stringify(lines)).not.toContain("s3cretpass");
  });

  it("logs a request node:http refuses before the app sees it", async () => {
    const { port } = new URL(t.url);
    const socket = connect(Number(port), "127.0.0.1");
    socket.on("error", () => {});
    socket.write("NOT A REQUEST\r\n\r\n");
    socket.resume();
    const line = await eventually(async () =>
      lines.find((l) => l.msg === "request refused by node:http"),
    );
    expect(line).toMatchObject({ status: 400, reqId: expect.any(String) });
    socket.destroy();
  });

  it("refuses an HTTP/1.1 request without Host with a JSON 400, logged; HTTP/1.0 needs none", async () => {
    const { port } = new URL(t.url);
    const exchange = (request: string) =>
      new Promise<string>((done, fail) => {
        const socket = connect(Number(port), "127.0.0.1");
        let reply = "";
        socket.setEncoding("utf8");
        socket.on("data", (chunk: string) => {
          reply += chunk;
        });
        socket.on("end", () => done(reply));
        socket.on("error", fail);
        socket.write(request);
      });
    const refused = await exchange("GET /healthz HTTP/1.1\r\nConnection: close\r\n\r\n");
    expect(refused).toMatch(/^HTTP\/1\.1 400 /);
    expect(refused).toMatch(/content-type: application\/json/i);
    expect(JSON.parse(refused.slice(refused.indexOf("\r\n\r\n") + 4))).toEqual({
      error: { code: "bad_request", message: "an HTTP/1.1 request needs a Host header" },
    });
    expect(
      await eventually(async () =>
        lines.find(
          (l) => l.msg === "request refused by node:http" && /Host/.test(String(l.reason)),
        ),
      ),
    ).toMatchObject({ status: 400, reqId: expect.any(String) });
    expect(await exchange("GET /healthz HTTP/1.0\r\n\r\n")).toMatch(/^HTTP\/1\.1 200 /);
  });
});
