import { Writable } from "node:stream";
import { ReplyError } from "ioredis";
import { describe, expect, it } from "vitest";
import { createLogger } from "../../src/log.ts";
import { survivable, unhandledRejectionHandler } from "../../src/main/unhandled.ts";

function recorded(stopping = false) {
  const lines: { level: number; msg: string }[] = [];
  const sink = new Writable({
    write(chunk, _encoding, done) {
      lines.push(JSON.parse(chunk.toString()));
      done();
    },
  });
  const exits: number[] = [];
  const handle = unhandledRejectionHandler(createLogger("info", "test", sink), {
    stopping: () => stopping,
    exit: (code) => exits.push(code),
  });
  return { lines, exits, handle };
}

const flushed = () => new Promise((r) => setImmediate(r));

function named(name: string, message: string): Error {
  const error = new Error(message);
  error.name = name;
  return error;
}

describe("unhandled rejections in the service's processes", () => {
  it("logs an error that only says Redis is unreachable and keeps running", async () => {
    const { lines, exits, handle } = recorded();
    handle(named("MaxRetriesPerRequestError", "Reached the max retries per request limit"));
    handle(new Error("Command aborted due to connection close"));
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

  it("lets a closed connection's leftovers through only while the process stops", async () => {
    const running = recorded(false);
    running.handle(new Error("Connection is closed."));
    const stopping = recorded(true);
    stopping.handle(new Error("Connection is closed."));
    await flushed();
    expect(running.exits).toEqual([1]);
    expect(stopping.exits).toEqual([]);
  });

  it("tells outages and failovers from Redis's refusals and from other libraries' errors", () => {
    expect(
      survivable(named("ClusterAllFailedError", "Failed to refresh slots cache."), false),
    ).toBe(true);
    expect(survivable(new Error("Command timed out"), false)).toBe(true);
    expect(survivable(new Error("None of startup nodes is available"), false)).toBe(true);
    expect(
      survivable(new ReplyError("LOADING Redis is loading the dataset in memory"), false),
    ).toBe(true);
    expect(
      survivable(new ReplyError("READONLY You can't write against a read only replica."), false),
    ).toBe(true);
    expect(survivable(new ReplyError("WRONGTYPE Operation against a key"), false)).toBe(false);
    expect(survivable(new ReplyError("NOPERM this user has no permissions"), false)).toBe(false);
    // Not Redis's: an HTTP client hanging up, an aborted fetch.
    const reset = Object.assign(new Error("socket hang up"), { code: "ECONNRESET" });
    expect(survivable(reset, false)).toBe(false);
    expect(survivable(new DOMException("This operation was aborted", "AbortError"), false)).toBe(
      false,
    );
    expect(survivable(undefined, true)).toBe(false);
  });
});
