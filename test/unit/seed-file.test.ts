/** Seed files: rows as inputs, the frequency column dropped, a bad frequency refused by row. */
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { type RawInput, seedInputs } from "../../precompute/inputs/seed.ts";

const folder = mkdtempSync(join(tmpdir(), "predcache-seed-"));

function file(name: string, text: string): string {
  const path = join(folder, name);
  writeFileSync(path, text);
  return path;
}

async function rows(path: string, limit?: number): Promise<RawInput[]> {
  const all: RawInput[] = [];
  for await (const row of seedInputs(path, limit)) all.push(row);
  return all;
}

describe("seed files", () => {
  it("CSV and JSON lines give inputs without their frequency", async () => {
    const csv = file("a.csv", "origin,hour,frequency\nSFO,7,120\nLAX,8,\n");
    expect(await rows(csv)).toEqual([
      { origin: "SFO", hour: "7" },
      { origin: "LAX", hour: "8" },
    ]);
    const lines = file("a.jsonl", '{"origin":"SFO","hour":7,"frequency":3}\n\n{"origin":"LAX"}\n');
    expect(await rows(lines)).toEqual([{ origin: "SFO", hour: 7 }, { origin: "LAX" }]);
    expect(await rows(csv, 1)).toHaveLength(1);
  });

  it("a frequency that is not a count is refused, naming the row", async () => {
    const csv = file("bad.csv", "origin,frequency\nSFO,12\nLAX,often\n");
    await expect(rows(csv)).rejects.toThrow(
      /bad\.csv: row 2: frequency must be a number ≥ 0.*"often"/,
    );
    const negative = file("neg.csv", "origin,frequency\nSFO,-1\n");
    await expect(rows(negative)).rejects.toThrow(/row 1: frequency/);
    const lines = file(
      "bad.jsonl",
      '{"origin":"SFO","frequency":1}\n{"origin":"LAX","frequency":"x"}\n',
    );
    await expect(rows(lines)).rejects.toThrow(/bad\.jsonl:2: frequency must be/);
    for (const odd of ["0x1F", "1e", "Infinity", "  ", "1,000"]) {
      const cell = file("odd.jsonl", `${JSON.stringify({ origin: "SFO", frequency: odd })}\n`);
      await expect(rows(cell), odd).rejects.toThrow(/odd\.jsonl:1: frequency/);
    }
    const fine = file("fine.csv", "origin,frequency\nSFO, 12 \nLAX,2.5e3\nJFK,.5\n");
    expect(await rows(fine)).toHaveLength(3);
    const object = file("obj.jsonl", '{"origin":"SFO","frequency":{"n":1}}\n');
    await expect(rows(object)).rejects.toThrow(/obj\.jsonl:1: frequency/);
  });
});

describe("seed file limits", () => {
  it("a row past the limit is not read, so not checked", async () => {
    const csv = file("limited.csv", "origin,frequency\nSFO,3\nLAX,often\n");
    expect(await rows(csv, 1)).toEqual([{ origin: "SFO" }]);
    const lines = file("limited.jsonl", '{"origin":"SFO"}\n{"origin":"LAX","frequency":-2}\n');
    expect(await rows(lines, 1)).toEqual([{ origin: "SFO" }]);
  });
});
