/**
 * When two versions' predictions for one input agree, judged on the main output: the
 * same decision for a probability (same side of 0.5), the same label for classes, and
 * within 5 % (or one rounding unit) for a regression.
 */
import { mainValueOf, type Prediction } from "../model/decoding.ts";
import { type Manifest, mainOutputOf } from "../model/manifest.ts";

export const AGREEMENT_RULE =
  "probability: same side of 0.5; classes: same label; regression: within 5% or one rounding unit";

export interface Agreement {
  agreed: boolean;
  /** |a − b| of the main output (top-class probability for classes). */
  absDiff: number;
}

export function agreementOf(manifest: Manifest, a: Prediction, b: Prediction): Agreement {
  const main = mainOutputOf(manifest);
  const x = mainValueOf(manifest, a);
  const y = mainValueOf(manifest, b);
  if (x === undefined || y === undefined) return { agreed: false, absDiff: Number.NaN };
  const absDiff = Math.abs(x - y);
  if (main.kind === "probability") return { agreed: x >= 0.5 === y >= 0.5, absDiff };
  if (main.kind === "classes") {
    const label = (p: Prediction) => (p[main.name] as { label?: string } | undefined)?.label;
    return { agreed: label(a) === label(b), absDiff };
  }
  const unit = 10 ** -main.digits;
  return { agreed: absDiff <= Math.max(unit, 0.05 * Math.max(Math.abs(x), Math.abs(y))), absDiff };
}
