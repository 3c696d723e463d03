/**
 * The delta between two stored tables, from their bytes, or why none is served: tables
 * no delta can join (delta.ts), or a delta that would not be smaller than the target
 * table (mostly new entries cost 8 bytes of hash each in a delta, fewer in the table's
 * own index: the table itself is then the cheaper download). Pure CPU work, run in the
 * delta thread (./delta-thread.ts).
 */
import { computeDelta, DeltaUnavailableError, deltaBlocker } from "./delta.ts";
import { parseTable } from "./format.ts";

export type DeltaOutcome = { delta: Uint8Array } | { blocked: string };

export function deltaOutcome(from: Uint8Array, to: Uint8Array): DeltaOutcome {
  const [fromView, toView] = [parseTable(from), parseTable(to)];
  const blocked = deltaBlocker(fromView, toView);
  if (blocked) return { blocked };
  try {
    const delta = computeDelta(fromView, toView);
    if (delta.length >= to.length)
      return {
        blocked: `the delta (${delta.length} bytes) is not smaller than the table (${to.length} bytes)`,
      };
    return { delta };
  } catch (error) {
    if (error instanceof DeltaUnavailableError) return { blocked: error.message };
    throw error;
  }
}
