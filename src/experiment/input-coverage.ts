/**
 * Inputs the control version answers and a candidate refuses (422): a candidate with a
 * narrower schema fails part of its cohort's lookups, which an experiment start should
 * say before any client sees it (the report counts them afterwards, as `refused`).
 * Compared on the encodings alone: what each version's encoder takes, not its model.
 */
import type { EncodingDefinition, Feature } from "../model/manifest.ts";

function required(f: Feature): boolean {
  return f.default === undefined;
}

/** Why `candidate` refuses some values of a feature `control` takes, or undefined. */
function narrower(control: Feature, candidate: Feature): string | undefined {
  const name = control.name;
  if (control.type !== candidate.type)
    return `${name} is ${candidate.type} for the candidate, ${control.type} for control`;
  if (required(candidate) && !required(control))
    return `the candidate requires ${name}, which control fills in when it is left out`;
  if (control.type === "categorical" && candidate.type === "categorical") {
    if (candidate.unknown === "flag") return undefined;
    if (control.unknown === "flag")
      return `control answers unknown ${name} values (flagged), the candidate refuses them`;
    const known = new Set(candidate.vocabulary);
    const missing = control.vocabulary.filter((v) => !known.has(v));
    if (missing.length === 0) return undefined;
    const shown = missing.slice(0, 5).join(", ");
    return `the candidate refuses ${missing.length} ${name} value${missing.length === 1 ? "" : "s"} control takes (${shown}${missing.length > 5 ? ", …" : ""})`;
  }
  if (
    (control.type === "integer" || control.type === "number") &&
    (candidate.type === "integer" || candidate.type === "number")
  ) {
    if (candidate.outOfRange === "flag") return undefined;
    if (control.outOfRange === "flag")
      return `control answers ${name} outside ${control.min}–${control.max} (flagged), the candidate refuses it`;
    if (candidate.min > control.min || candidate.max < control.max)
      return `the candidate takes ${name} from ${candidate.min} to ${candidate.max}, control from ${control.min} to ${control.max}`;
    return undefined;
  }
  if (control.type === "string" && candidate.type === "string")
    if (candidate.maxLength < control.maxLength)
      return `the candidate takes ${name} up to ${candidate.maxLength} characters, control up to ${control.maxLength}`;
  return undefined;
}

/** One line per way the candidate refuses input the control answers (none: it takes all). */
export function refusedByCandidate(
  control: EncodingDefinition,
  candidate: EncodingDefinition,
): string[] {
  const theirs = new Map(candidate.features.map((f) => [f.name, f]));
  const ours = new Set(control.features.map((f) => f.name));
  const lines: string[] = [];
  for (const f of control.features) {
    const other = theirs.get(f.name);
    if (!other) lines.push(`the candidate does not take ${f.name}: a lookup giving it is refused`);
    else {
      const why = narrower(f, other);
      if (why) lines.push(why);
    }
  }
  for (const f of candidate.features)
    if (!ours.has(f.name) && required(f))
      lines.push(`the candidate requires ${f.name}, which control does not take`);
  return lines;
}
