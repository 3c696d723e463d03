/**
 * A run's inputs checked against the target version's schema before any is computed: a
 * file with bad rows is refused whole, every bad row counted and the first ones named by
 * their row number (1 = the first input, the header not counted), instead of failing in
 * the middle of the run on the first one, with half of it written.
 */
import type { Encoder } from "../../src/model/encoding.ts";
import type { RawInput } from "./seed.ts";

/** Bad rows named in full; the rest are counted. */
const NAMED = 20;

export interface InvalidRow {
  row: number;
  issues: string[];
}

export interface InputCheck {
  total: number;
  invalid: number;
  /** The first bad rows (up to 20). */
  rows: InvalidRow[];
}

export async function checkInputs(
  encoder: Encoder,
  inputs: AsyncIterable<RawInput> | Iterable<RawInput>,
): Promise<InputCheck> {
  const check: InputCheck = { total: 0, invalid: 0, rows: [] };
  for await (const input of inputs) {
    check.total++;
    const outcome = encoder.encode(input);
    if (outcome.ok) continue;
    check.invalid++;
    if (check.rows.length < NAMED)
      check.rows.push({ row: check.total, issues: outcome.issues.map((i) => i.message) });
  }
  return check;
}

/** "2 of 9 inputs are invalid: row 2: hour must be …; row 5: …" */
export function describeInvalid(check: InputCheck): string {
  const named = check.rows.map((r) => `row ${r.row}: ${r.issues.join(", ")}`).join("; ");
  const more =
    check.invalid > check.rows.length ? ` (and ${check.invalid - check.rows.length} more)` : "";
  return `${check.invalid} of ${check.total} inputs are invalid: ${named}${more}`;
}
