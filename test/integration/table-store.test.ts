/** The table store under a crash: a publisher killed mid-write leaves the old table, never a partial one. */
import { spawn } from "node:child_process";
import { copyFile, readdir } from "node:fs/promises";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { LookupTable } from "../../src/client/lookup-table.ts";
import { createEncoder } from "../../src/model/encoding.ts";
import { outputsSchema } from "../../src/model/manifest.ts";
import { encodeTable, packValue, sortEntries } from "../../src/table/format.ts";
import { keyHash } from "../../src/table/key-hash.ts";
import { DirectoryTableStore } from "../../src/table/store.ts";
import { fixtureEncoding } from "../fixtures/encoding.ts";
import { tempDataDir } from "../helpers/service.ts";

const encoder = createEncoder(fixtureEncoding);
const outputs = outputsSchema.parse([{ name: "p", tensor: "p", kind: "probability", digits: 4 }]);

async function tableBytes(generation: string, n: number): Promise<Uint8Array> {
  const keys = Array.from({ length: n }, (_, i) => {
    const e = encoder.encode({
      airport: i % 2 ? "SFO" : "LAX",
      hour: i % 24,
      bags: i % 3,
      distance: i,
    });
    if (!e.ok) throw new Error("fixture input invalid");
    return e.value.key;
  });
  const hashes = keys.map(keyHash);
  return encodeTable(
    {
      model: "fixture",
      modelVersion: "0123456789ab",
      encodingHash: encoder.hash,
      inputSchema: fixtureEncoding,
      outputs,
      created: new Date().toISOString(),
      generation,
      source: "crash test",
    },
    sortEntries(
      Uint32Array.from(hashes, (h) => h.hi),
      Uint32Array.from(hashes, (h) => h.lo),
      keys.map((_, i) => packValue([(i % 100) / 100])),
    ),
  );
}

async function publish(store: DirectoryTableStore, dir: string, generation: string, n: number) {
  const { writeFile } = await import("node:fs/promises");
  const source = join(dir, `${generation}.src`);
  await writeFile(source, await tableBytes(generation, n));
  const temp = await store.tempPath("fixture", generation);
  await copyFile(source, temp);
  return store.publish("fixture", generation, temp);
}

describe("table store", () => {
  it("keeps the old table when a publisher is SIGKILLed mid-write, and publishes the next one whole", async () => {
    const dir = await tempDataDir();
    const root = join(dir, "tables");
    const store = new DirectoryTableStore(root);
    const old = await publish(store, dir, "0123456789ab.old", 500);

    const { writeFile } = await import("node:fs/promises");
    const source = join(dir, "next.src");
    await writeFile(source, await tableBytes("0123456789ab.next", 5_000));
    const child = spawn(
      process.execPath,
      [
        "--import",
        "tsx",
        "test/fixtures/crash-publish.ts",
        root,
        "fixture",
        "0123456789ab.next",
        source,
      ],
      { stdio: ["ignore", "pipe", "inherit"] },
    );
    const temp = await new Promise<string>((done) =>
      child.stdout.once("data", (d) => done(String(d).trim())),
    );
    child.kill("SIGKILL");
    await new Promise((done) => child.once("exit", done));

    expect((await readdir(join(root, "fixture"))).sort()).toEqual(
      ["0123456789ab.old.pctable", temp.split("/").at(-1)].sort(),
    );
    const listed = await store.list("fixture");
    expect(listed.map((t) => t.generation)).toEqual(["0123456789ab.old"]);
    expect(await store.get("fixture", "0123456789ab.next")).toBeUndefined();
    const read = await LookupTable.open(await store.read("fixture", "0123456789ab.old"));
    expect(read.checksum).toBe(old.checksum);

    const next = await publish(store, dir, "0123456789ab.next", 5_000);
    expect((await store.list("fixture")).map((t) => t.generation)).toEqual([
      "0123456789ab.next",
      "0123456789ab.old",
    ]);
    expect((await LookupTable.open(await store.read("fixture", next.generation))).size).toBe(5_000);
    console.log(
      `table store: publisher killed mid-write; listing kept ${listed.length} whole table, the half-written temp file was never listed`,
    );
  });
});
