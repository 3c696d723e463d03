/**
 * L1: an in-process LRU of decoded predictions, bounded by bytes (an estimate of the
 * heap each entry holds), not only by count.
 */
import { LRUCache } from "lru-cache";
import type { Prediction } from "../model/decoding.ts";

export interface MemoryCacheOptions {
  maxBytes: number;
}

/** Rough heap cost: key characters (UTF-16) + the prediction as JSON + object overhead. */
function sizeOf(key: string, prediction: Prediction): number {
  return 2 * key.length + 2 * JSON.stringify(prediction).length + 96;
}

export class MemoryCache {
  /** Undefined when maxBytes is 0: no L1 at all. */
  private readonly lru: LRUCache<string, Prediction> | undefined;

  constructor(options: MemoryCacheOptions) {
    this.lru =
      options.maxBytes > 0
        ? new LRUCache<string, Prediction>({
            maxSize: options.maxBytes,
            sizeCalculation: (prediction, key) => sizeOf(key, prediction),
          })
        : undefined;
  }

  static id(model: string, version: string, key: string): string {
    return `${model}@${version}|${key}`;
  }

  get(id: string): Prediction | undefined {
    return this.lru?.get(id);
  }

  set(id: string, prediction: Prediction): void {
    this.lru?.set(id, prediction);
  }

  clear(): void {
    this.lru?.clear();
  }

  get size(): number {
    return this.lru?.size ?? 0;
  }

  get bytes(): number {
    return this.lru?.calculatedSize ?? 0;
  }
}
