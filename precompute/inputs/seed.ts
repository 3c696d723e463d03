/**
 * Seed files: CSV with a header row, or JSON lines (.jsonl / .ndjson), streamed row by
 * row. A `frequency` column/field says how common an input is and is not a feature.
 */
import { createReadStream } from "node:fs";
import { createInterface } from "node:readline";
import { parse } from "csv-parse";

export type RawInput = Record<string, unknown>;

const FREQUENCY = "frequency";
/** A count as a CSV cell spells it: decimal, maybe with a fraction or exponent (not 0x1F). */
const DECIMAL = /^\s*\+?(?:\d+\.?\d*|\.\d+)(?:e[+-]?\d+)?\s*$/i;

function countOf(frequency: unknown): number {
  if (typeof frequency === "number") return frequency;
  if (typeof frequency === "string" && DECIMAL.test(frequency)) return Number(frequency);
  return Number.NaN;
}

/** The row without its frequency, which, when given, must be a count (a number ≥ 0). */
function withoutFrequency(row: RawInput, where: string): RawInput {
  const { [FREQUENCY]: frequency, ...input } = row;
  if (frequency !== undefined && frequency !== null && frequency !== "") {
    const count = countOf(frequency);
    if (!(Number.isFinite(count) && count >= 0))
      throw new Error(
        `${where}: ${FREQUENCY} must be a number ≥ 0 (how common the input is), not ${JSON.stringify(frequency)}`,
      );
  }
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
    yield withoutFrequency(row as RawInput, `${file}:${n}`);
  }
}

async function* csvRows(file: string): AsyncGenerator<RawInput> {
  const parser = createReadStream(file).pipe(
    parse({ columns: true, skip_empty_lines: true, trim: true, bom: true }),
  );
  let n = 0;
  // Rows counted as a run's checks count them: 1 = the first input, the header not counted.
  for await (const row of parser) yield withoutFrequency(row as RawInput, `${file}: row ${++n}`);
}

export async function* seedInputs(file: string, limit?: number): AsyncGenerator<RawInput> {
  // A .json file (an array, or lines under the wrong name) would be read as CSV and fail
  // on its first quote: said plainly instead.
  if (/\.json$/i.test(file))
    throw new Error(
      `${file}: seed files are CSV (with a header row) or JSON lines named .jsonl or .ndjson (one object per line), not .json`,
    );
  const rows = /\.(jsonl|ndjson)$/i.test(file) ? jsonLines(file) : csvRows(file);
  if (limit !== undefined && limit <= 0) return;
  let n = 0;
  for await (const row of rows) {
    yield row;
    // Stop at the limit without reading (and checking) a row past it.
    if (limit !== undefined && ++n >= limit) return;
  }
}
