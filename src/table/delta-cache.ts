/**
 * Deltas as served, kept by the pair of table checksums that decides them (a table never
 * changes under its checksum). After a publish every client asks for the same delta: it
 * is built once, concurrent requests sharing the build, and a revalidation (304) reads
 * no table at all. A pair no delta can join is remembered too. Bounded by bytes.
 */
import { LRUCache } from "lru-cache";
import type { DeltaOutcome } from "./delta-outcome.ts";

/** Bytes a remembered outcome is counted as, beyond its delta. */
const ENTRY_OVERHEAD = 128;

/**
 * The bytes in a buffer of their own size: as they are, or copied out of a larger one
 * (with new Uint8Array: a Buffer's slice() would be a view of the same memory).
 */
function ownSized(bytes: Uint8Array): Uint8Array {
  const whole = bytes.byteOffset === 0 && bytes.byteLength === bytes.buffer.byteLength;
  return whole ? bytes : new Uint8Array(bytes);
}

export class DeltaCache {
  private readonly built: LRUCache<string, DeltaOutcome>;
  private readonly building = new Map<string, Promise<DeltaOutcome>>();

  constructor(maxBytes: number) {
    this.built = new LRUCache<string, DeltaOutcome>({
      maxSize: maxBytes,
      sizeCalculation: (outcome) =>
        ENTRY_OVERHEAD + ("delta" in outcome ? outcome.delta.byteLength : outcome.blocked.length),
    });
  }

  /** The outcome for `from` → `to`, built (once, however many ask at a time) when not kept. */
  get(from: string, to: string, build: () => Promise<DeltaOutcome>): Promise<DeltaOutcome> {
    const id = `${from}>${to}`;
    const kept = this.built.get(id);
    if (kept) return Promise.resolve(kept);
    let running = this.building.get(id);
    if (!running) {
      running = build().then(
        (built) => {
          this.building.delete(id);
          // Kept at its own size: a delta msgpackr packed in process is a view of a buffer
          // a few times larger, which the bound would not count (the delta thread's come
          // exact). One larger than the whole bound is served, not kept (lru-cache skips it).
          const outcome = "delta" in built ? { delta: ownSized(built.delta) } : built;
          this.built.set(id, outcome);
          return outcome;
        },
        (error: unknown) => {
          // A failed read is not an outcome: the next request tries again.
          this.building.delete(id);
          throw error;
        },
      );
      this.building.set(id, running);
    }
    return running;
  }
}
