/**
 * Seed files: CSV with a header row, or JSON lines (.jsonl / .ndjson), streamed row by
 * row. A `frequency` column/field says how common an input is and is not a feature.
 */
import { createReadStream } from "node:fs";
import { createInterface } from "node:readline";
import { parse } from "csv-parse";

export type RawInput = Record<string, unknown>;

const FREQUENCY = "frequency";

function withoutFrequency(row: RawInput): RawInput {
  const { [FREQUENCY]: _, ...input } = row;
  return input;
}

async function* jsonLines(file: string): AsyncGenerator<RawInput> {
  const lines = createInterface({
    input: createReadStream(file),
    crlfDelay: Number.POSITIVE_INFINITY,
  });
  let n = 0;
  for await (const line of lines) {
    n++;
    if (line.trim() === "") continue;
    let row: unknown;
    try {
      row = JSON.parse(line);
    } catch {
      throw new Error(`${file}:${n}: not a JSON object`);
    }
    if (!row || typeof row !== "object" || Array.isArray(row))
      throw new Error(`${file}:${n}: not a JSON object`);
    yield withoutFrequency(row as RawInput);
  }
}

async function* csvRows(file: string): AsyncGenerator<RawInput> {
  const parser = createReadStream(file).pipe(
    parse({ columns: true, skip_empty_lines: true, trim: true, bom: true }),
  );
  for await (const row of parser) yield withoutFrequency(row as RawInput);
}

export async function* seedInputs(file: string, limit?: number): AsyncGenerator<RawInput> {
  // A .json file (an array, or lines under the wrong name) would be read as CSV and fail
  // on its first quote: said plainly instead.
  if (/\.json$/i.test(file))
    throw new Error(
      `${file}: seed files are CSV (with a header row) or JSON lines named .jsonl or .ndjson (one object per line), not .json`,
    );
  const rows = /\.(jsonl|ndjson)$/i.test(file) ? jsonLines(file) : csvRows(file);
  let n = 0;
  for await (const row of rows) {
    if (limit !== undefined && n >= limit) return;
    n++;
    yield row;
  }
}
