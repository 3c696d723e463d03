import { Writable } from "node:stream";
import { afterEach, describe, expect, it, vi } from "vitest";
import { createLogger, repeatedErrors } from "../../src/log.ts";

function capture() {
  const lines: Record<string, unknown>[] = [];
  const sink = new Writable({
    write(chunk, _encoding, done) {
      lines.push(JSON.parse(String(chunk)));
      done();
    },
  });
  return { log: createLogger("info", "test", sink), lines };
}

afterEach(() => {
  vi.useRealTimers();
});

describe("repeatedErrors", () => {
  it("logs the first of a run of equal errors, counts the repeats into the next line", async () => {
    vi.useFakeTimers({ now: 0, toFake: ["Date"] });
    const { log, lines } = capture();
    const onError = repeatedErrors(log, "worker error", 10_000);
    for (let i = 0; i < 12; i++) onError(new Error("Command timed out"));
    vi.setSystemTime(10_001);
    onError(new Error("Command timed out"));
    onError(new Error("something else"));
    await new Promise((r) => setImmediate(r));
    expect(lines.map((l) => [l.level, l.err, l.repeatsBefore])).toEqual([
      [40, "Command timed out", undefined], // an outage: a warning
      [40, "Command timed out", 11],
      [50, "something else", undefined], // anything else: an error
    ]);
  });
});
