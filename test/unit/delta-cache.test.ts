/** The delta cache: one build per pair however many ask, kept by bytes, failures not kept. */
import { describe, expect, it } from "vitest";
import { DeltaCache } from "../../src/table/delta-cache.ts";
import type { DeltaOutcome } from "../../src/table/delta-outcome.ts";

/** A build that counts its calls and answers when released. */
function counted(outcome: DeltaOutcome) {
  let calls = 0;
  let release: () => void = () => {};
  const gate = new Promise<void>((done) => {
    release = done;
  });
  return {
    build: async () => {
      calls++;
      await gate;
      return outcome;
    },
    release: () => release(),
    get calls() {
      return calls;
    },
  };
}

describe("DeltaCache", () => {
  it("builds a pair's delta once for concurrent and later requests", async () => {
    const cache = new DeltaCache(1024);
    const delta = { delta: new Uint8Array(100) };
    const b = counted(delta);
    const asked = Array.from({ length: 20 }, () => cache.get("a", "b", b.build));
    b.release();
    const outcomes = await Promise.all(asked);
    expect(outcomes.every((o) => o === outcomes[0])).toBe(true);
    expect(outcomes[0]).toEqual(delta);
    expect(await cache.get("a", "b", b.build)).toBe(outcomes[0]);
    expect(b.calls).toBe(1);
  });

  it("keeps a delta at its own size, not the larger buffer it may be a view of", async () => {
    const cache = new DeltaCache(1024);
    const big = new Uint8Array(4096);
    big.set([1, 2, 3], 100);
    // As msgpackr's pack() returns on Node: a Buffer (whose slice() is a view too).
    for (const view of [big.subarray(100, 110), Buffer.from(big.buffer).subarray(100, 110)]) {
      const b = counted({ delta: view });
      b.release();
      const kept = (await cache.get("a", `b${view.constructor.name}`, b.build)) as {
        delta: Uint8Array;
      };
      expect([...kept.delta.subarray(0, 3)]).toEqual([1, 2, 3]);
      expect(kept.delta.buffer.byteLength).toBe(10);
    }
  });

  it("keeps each pair apart, in its direction", async () => {
    const cache = new DeltaCache(1024);
    const ab = counted({ delta: new Uint8Array(1) });
    const ba = counted({ delta: new Uint8Array(2) });
    ab.release();
    ba.release();
    const one = await cache.get("a", "b", ab.build);
    const other = await cache.get("b", "a", ba.build);
    expect(one).not.toBe(other);
    expect([ab.calls, ba.calls]).toEqual([1, 1]);
  });

  it("remembers a pair no delta can join", async () => {
    const cache = new DeltaCache(1024);
    const b = counted({ blocked: "deltas join version 2 tables only" });
    b.release();
    await cache.get("v1", "v2", b.build);
    expect(await cache.get("v1", "v2", b.build)).toEqual({
      blocked: "deltas join version 2 tables only",
    });
    expect(b.calls).toBe(1);
  });

  it("does not keep a failed build: the next request tries again", async () => {
    const cache = new DeltaCache(1024);
    let calls = 0;
    const failing = async (): Promise<DeltaOutcome> => {
      calls++;
      throw new Error("table read failed");
    };
    await expect(cache.get("a", "b", failing)).rejects.toThrow("table read failed");
    await expect(cache.get("a", "b", failing)).rejects.toThrow("table read failed");
    expect(calls).toBe(2);
  });

  it("stays within its bytes: the least recent delta goes, one over the bound is not kept", async () => {
    const cache = new DeltaCache(1000);
    const first = counted({ delta: new Uint8Array(600) });
    const second = counted({ delta: new Uint8Array(600) });
    const huge = counted({ delta: new Uint8Array(5000) });
    for (const b of [first, second, huge]) b.release();
    await cache.get("a", "b", first.build);
    await cache.get("b", "c", second.build);
    await cache.get("a", "b", first.build);
    expect(first.calls).toBe(2);
    expect((await cache.get("c", "d", huge.build)) as { delta: Uint8Array }).toHaveProperty(
      "delta.byteLength",
      5000,
    );
    await cache.get("c", "d", huge.build);
    expect(huge.calls).toBe(2);
  });
});
