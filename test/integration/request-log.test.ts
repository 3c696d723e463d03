/** Request logs: one JSON line per request with id, route facts and timing, and no inputs. */
import { Writable } from "node:stream";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createLogger } from "../../src/log.ts";
import { eventually, getJson, startTestService, type TestService } from "../helpers/service.ts";

const lines: Record<string, unknown>[] = [];
let t: TestService;

beforeAll(async () => {
  const sink = new Writable({
    write(chunk, _encoding, done) {
      for (const line of String(chunk).split("\n").filter(Boolean)) lines.push(JSON.parse(line));
      done();
    },
  });
  t = await startTestService({ log: createLogger("info", "test", sink) });
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
    expect(made).toMatch(/^[0-9a-f-]{36}$/);
    expect(await eventually(async () => lines.find((l) => l.reqId === made))).toMatchObject({
      path: "/healthz",
      status: 200,
    });
  });
});
