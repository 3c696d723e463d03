import { describe, expect, it } from "vitest";
import { BuildGate } from "../../src/table/build-gate.ts";

/** A build that ends when told to. */
function held() {
  let end: () => void = () => {};
  const done = new Promise<void>((resolve) => {
    end = resolve;
  });
  return { end, build: () => done };
}

describe("BuildGate", () => {
  it("runs at most `running` builds, lines up `waiting` more in order, refuses the rest", async () => {
    const gate = new BuildGate(1, 2);
    const refused = () => new Error("full");
    const order: string[] = [];
    const first = held();
    const a = gate.run(async () => {
      order.push("a");
      await first.build();
    }, refused);
    const b = gate.run(async () => {
      order.push("b");
    }, refused);
    const c = gate.run(async () => {
      order.push("c");
    }, refused);
    await expect(gate.run(async () => {}, refused)).rejects.toThrow("full");
    expect(gate.load).toEqual({ running: 1, waiting: 2 });
    expect(order).toEqual(["a"]);
    first.end();
    await Promise.all([a, b, c]);
    expect(order).toEqual(["a", "b", "c"]);
    expect(gate.load).toEqual({ running: 0, waiting: 0 });
  });

  it("gives the slot on when a build fails", async () => {
    const gate = new BuildGate(1, 1);
    const failing = gate.run(async () => {
      throw new Error("read failed");
    }, Error);
    const next = gate.run(async () => "built", Error);
    await expect(failing).rejects.toThrow("read failed");
    expect(await next).toBe("built");
    expect(gate.load).toEqual({ running: 0, waiting: 0 });
  });
});
