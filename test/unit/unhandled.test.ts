import { Writable } from "node:stream";
import { describe, expect, it } from "vitest";
import { createLogger } from "../../src/log.ts";
import { isRedisConnectionError, unhandledRejectionHandler } from "../../src/main/unhandled.ts";

function recorded() {
  const lines: { level: number; msg: string }[] = [];
  const sink = new Writable({
    write(chunk, _encoding, done) {
      lines.push(JSON.parse(chunk.toString()));
      done();
    },
  });
  const exits: number[] = [];
  const handle = unhandledRejectionHandler(createLogger("info", "test", sink), (code) =>
    exits.push(code),
  );
  return { lines, exits, handle };
}

const flushed = () => new Promise((r) => setImmediate(r));

describe("unhandled rejections in the service's processes", () => {
  it("logs a Redis connection error and keeps running", async () => {
    const { lines, exits, handle } = recorded();
    handle(new Error("Connection is closed."));
    handle(
      Object.assign(new Error("connect ECONNREFUSED 127.0.0.1:6379"), { code: "ECONNREFUSED" }),
    );
    await flushed();
    expect(exits).toEqual([]);
    expect(lines.map((l) => l.level)).toEqual([40, 40]);
    expect(lines[0]?.msg).toMatch(/keeps running/);
  });

  it("logs anything else as fatal and exits 1, as Node would", async () => {
    const { lines, exits, handle } = recorded();
    handle(new TypeError("cannot read properties of undefined"));
    handle("not even an error");
    await flushed();
    expect(exits).toEqual([1, 1]);
    expect(lines.map((l) => l.level)).toEqual([60, 60]);
  });

  it("tells connection failures from Redis's own refusals", () => {
    const retries = new Error("Reached the max retries per request limit (which is 1).");
    retries.name = "MaxRetriesPerRequestError";
    expect(isRedisConnectionError(retries)).toBe(true);
    expect(isRedisConnectionError(new Error("Command timed out"))).toBe(true);
    expect(isRedisConnectionError(new Error("WRONGTYPE Operation against a key"))).toBe(false);
    expect(isRedisConnectionError(new Error("NOPERM this user has no permissions"))).toBe(false);
    expect(isRedisConnectionError(undefined)).toBe(false);
  });
});
