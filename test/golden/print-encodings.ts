/**
 * Prints the fixture encoding's hash and, for every golden input, its key and row, as
 * JSON. Run by the golden test in a fresh process; with --write it (re)writes the golden
 * file — only do that when the encoding format changes on purpose.
 */
import { readFileSync, writeFileSync } from "node:fs";
import { createEncoder } from "../../src/model/encoding.ts";
import { fixtureEncoding } from "../fixtures/encoding.ts";

const path = new URL("./encoding.golden.json", import.meta.url);
const golden = JSON.parse(readFileSync(path, "utf8")) as { inputs: Record<string, unknown>[] };
const encoder = createEncoder(fixtureEncoding);
const cases = golden.inputs.map((input) => {
  const outcome = encoder.encode(input);
  return outcome.ok
    ? {
        key: outcome.value.key,
        row: outcome.value.row,
        outOfDistribution: outcome.value.outOfDistribution,
      }
    : { issues: outcome.issues.map((i) => `${i.field}:${i.code}`) };
});
const result = { encodingHash: encoder.hash, cases };
if (process.argv.includes("--write")) {
  writeFileSync(path, `${JSON.stringify({ inputs: golden.inputs, ...result }, null, 2)}\n`);
} else {
  process.stdout.write(JSON.stringify(result));
}
