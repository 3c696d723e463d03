import { afterAll, describe, expect, it } from "vitest";
import { outputsSchema } from "../../src/model/manifest.ts";
import type { DeltaOutcome } from "../../src/table/delta-outcome.ts";
import { deltaOutcome } from "../../src/table/delta-outcome.ts";
import { DeltaThread } from "../../src/table/delta-thread.ts";
import { EntryCollector, settleEntries } from "../../src/table/entries.ts";
import { encodeTable, pickEntries } from "../../src/table/format.ts";
import { keyHash } from "../../src/table/key-hash.ts";
import { fixtureEncoding } from "../fixtures/encoding.ts";

const outputs = outputsSchema.parse([
  { name: "p", tensor: "p", kind: "probability", digits: 4 },
  { name: "minutes", tensor: "m", kind: "regression", digits: 1 },
]);

/** A table of keys k<from>…k<to - 1>, each with values that follow from its number. */
async function table(from: number, to: number, generation: string) {
  const collected = new EntryCollector(outputs);
  for (let i = from; i < to; i++) {
    const { hi, lo } = keyHash(`k${i}`);
    collected.push(hi, lo, [(i % 1000) / 1000, ((i * 7) % 600) / 10]);
  }
  const settled = settleEntries(collected, 0, generation);
  return encodeTable(
    {
      model: "fixture",
      modelVersion: "0123456789ab",
      encodingHash: "e".repeat(16),
      inputSchema: fixtureEncoding,
      outputs,
      created: "2026-12-03T00:00:00.000Z",
      generation,
      source: "delta thread test",
    },
    pickEntries(collected.entries(), settled.order),
  );
}

/** An outcome with its delta as plain bytes (the process's is a Buffer). */
function plain(outcome: DeltaOutcome): DeltaOutcome {
  return "delta" in outcome ? { delta: new Uint8Array(outcome.delta) } : outcome;
}

const thread = new DeltaThread();
afterAll(() => thread.close());

describe("delta thread", () => {
  it("builds in its thread the very delta the process would build", async () => {
    const [a, b] = [
      await table(0, 20_000, "0123456789ab.a"),
      await table(100, 20_100, "0123456789ab.b"),
    ];
    const expected = plain(deltaOutcome(a, b));
    expect("delta" in expected).toBe(true);
    // Handed over (transferred): the thread gets copies of what the test keeps.
    const outcome = await thread.build(a.slice(), b.slice());
    expect(outcome).toEqual(expected);
    expect(thread.built).toEqual({ inThread: 1, inProcess: 0 });
  });

  it("says why no delta is served, as the process would", async () => {
    const small = await table(0, 10, "0123456789ab.c");
    const grown = await table(0, 5_000, "0123456789ab.d");
    const outcome = await thread.build(small, grown);
    expect(outcome).toEqual({ blocked: expect.stringMatching(/is not smaller than the table/) });
  });

  it("rejects bytes that are no table, and goes on building", async () => {
    await expect(thread.build(new Uint8Array(64), new Uint8Array(64))).rejects.toThrow();
    const [a, b] = [await table(0, 500, "0123456789ab.e"), await table(0, 510, "0123456789ab.f")];
    const expected = plain(deltaOutcome(a, b));
    // Handed over: the caller's bytes are the thread's now (detached here).
    expect(await thread.build(a, b)).toEqual(expected);
    expect(a.byteLength).toBe(0);
    expect(thread.built.inProcess).toBe(0);
  });

  it("builds in process when its thread cannot start", async () => {
    const broken = new DeltaThread({ module: "file:///nonexistent/delta-worker.ts" });
    try {
      const [a, b] = [await table(0, 500, "0123456789ab.g"), await table(0, 510, "0123456789ab.h")];
      const expected = plain(deltaOutcome(a, b));
      expect(plain(await broken.build(a, b))).toEqual(expected);
      expect(plain(await broken.build(a, b))).toEqual(expected);
      expect(broken.built).toEqual({ inThread: 0, inProcess: 2 });
    } finally {
      await broken.close();
    }
  });
});
