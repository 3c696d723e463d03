/**
 * An app that answers flight-delay predictions offline from a downloaded lookup table,
 * as a mobile or desktop app would: no model on the device, no network for covered inputs.
 *
 *   sync    download (or delta-update) the table from a predcache server and keep it on disk
 *   lookup  answer inputs from the stored table only — no server needed
 *   ask     stored table first, the server for inputs it does not cover
 *
 * Run (from the repo, with `npm start` running for sync/ask):
 *   node --import tsx examples/offline-app/app.ts sync
 *   node --import tsx examples/offline-app/app.ts lookup origin=LAS destination=LAX hour=16 dayOfWeek=6
 *   node --import tsx examples/offline-app/app.ts ask origin=ABQ destination=ORD hour=3 dayOfWeek=2
 * Options: --server <url> (default http://127.0.0.1:8787), --file <path> (default
 * ./flight-delay.pctable), --model <name> (default flight-delay).
 */
import { readFile, rename, rm, writeFile } from "node:fs/promises";
import { parseArgs } from "node:util";
import { HybridClient, InvalidInputError, LookupTable, TableFormatError } from "predcache/client";

const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: {
    server: { type: "string", default: "http://127.0.0.1:8787" },
    file: { type: "string", default: "flight-delay.pctable" },
    model: { type: "string", default: "flight-delay" },
  },
});
const [command, ...pairs] = positionals;
const { server, file, model } = values as { server: string; file: string; model: string };

/** `name=value` arguments as an input; the shared encoding checks and converts them. */
function inputOf(args: string[]): Record<string, string> {
  return Object.fromEntries(
    args.map((pair) => {
      const at = pair.indexOf("=");
      if (at < 1) throw new Error(`expected name=value, got "${pair}"`);
      return [pair.slice(0, at), pair.slice(at + 1)];
    }),
  );
}

/** The stored table, or undefined when the app has not synced yet. */
async function storedTable(): Promise<LookupTable | undefined> {
  const bytes = await readFile(file).catch(() => undefined);
  // open() verifies magic, version, checksum and encoding: a damaged file is refused.
  return bytes ? LookupTable.open(bytes, { model }) : undefined;
}

/** The stored table; a damaged one is said on stderr (with what is done instead) and skipped. */
async function verifiedTable(instead: string): Promise<LookupTable | undefined> {
  return storedTable().catch((error: unknown) => {
    if (!(error instanceof TableFormatError)) throw error;
    console.error(`${file} fails verification (${error.message}): ${instead}`);
    return undefined;
  });
}

async function sync(): Promise<void> {
  // A damaged file is what sync exists to repair: start as if there were none.
  const stored = await verifiedTable("downloading the full table");
  const client = new HybridClient({ baseUrl: server, model, table: stored });
  const outcome = await client.refresh();
  const table = client.table;
  if (!table && stored) {
    // The version served now has no table yet: the stored one answers for an older one.
    await rm(file, { force: true });
    console.log(`none: ${model} is served by a version with no table yet; removed ${file}`);
    return;
  }
  if (!table) throw new Error(`the server has no table for ${model} yet: run a precompute`);
  if (outcome !== "unchanged") {
    // Write then rename: a crash mid-write never leaves a half table where the app looks.
    await writeFile(`${file}.tmp`, table.bytes);
    await rename(`${file}.tmp`, file);
  }
  const { generation, modelVersion, entryCount } = table.header;
  console.log(
    `${outcome}: ${file} holds ${entryCount} predictions of ${model} ${modelVersion} (generation ${generation}, ${table.bytes.length} bytes)`,
  );
}

async function lookup(input: Record<string, string>): Promise<void> {
  const table = await storedTable();
  if (!table) throw new Error(`no table at ${file}: run "sync" first`);
  const prediction = table.get(input);
  console.log(
    JSON.stringify(
      prediction ? { source: "table", prediction } : { source: "none", covered: false },
    ),
  );
}

async function ask(input: Record<string, string>): Promise<void> {
  // A damaged table answers nothing: the server answers all (sync repairs the file).
  const table = await verifiedTable('asking the server (run "sync" to repair it)');
  const client = new HybridClient({ baseUrl: server, model, table });
  console.log(JSON.stringify(await client.predict(input)));
}

try {
  if (command === "sync") await sync();
  else if (command === "lookup") await lookup(inputOf(pairs));
  else if (command === "ask") await ask(inputOf(pairs));
  else {
    console.error(
      "usage: app.ts sync | lookup name=value... | ask name=value... [--server URL] [--file PATH]",
    );
    process.exitCode = 2;
  }
} catch (error) {
  console.error(error instanceof InvalidInputError ? error.message : String(error));
  process.exitCode = 1;
}
