/**
 * Micro-batching: items submitted close together run as one batch — up to maxItems, or
 * whatever has arrived maxWaitMs after the first item, whichever comes first. Each caller
 * gets its own result: the batch's answer for its item, an ItemFailed of its own, or the
 * batch's error.
 */
export interface MicroBatcherOptions {
  maxItems: number;
  maxWaitMs: number;
}

/** A batch's answer for one item that failed (the others' answers stand). */
export class ItemFailed {
  constructor(readonly error: unknown) {}
}

interface Pending<I, O> {
  item: I;
  resolve: (value: O) => void;
  reject: (error: unknown) => void;
}

export class MicroBatcher<I, O> {
  private queue: Pending<I, O>[] = [];
  private timer: NodeJS.Timeout | undefined;
  /** Sizes of the batches run so far (for tests and metrics). */
  readonly batchSizes: number[] = [];

  constructor(
    private readonly runBatch: (items: I[]) => Promise<(O | ItemFailed)[]>,
    private readonly options: MicroBatcherOptions,
  ) {}

  submit(item: I): Promise<O> {
    return new Promise<O>((resolve, reject) => {
      this.queue.push({ item, resolve, reject });
      if (this.queue.length >= this.options.maxItems) this.flush();
      else if (!this.timer) this.timer = setTimeout(() => this.flush(), this.options.maxWaitMs);
    });
  }

  /** Runs what is queued now (called by the size and time triggers). */
  flush(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    const batch = this.queue.splice(0, this.options.maxItems);
    if (this.queue.length > 0) this.timer = setTimeout(() => this.flush(), this.options.maxWaitMs);
    if (batch.length === 0) return;
    this.batchSizes.push(batch.length);
    const settle = (results: (O | ItemFailed)[]) => {
      if (results.length !== batch.length)
        throw new Error(`batch returned ${results.length} results for ${batch.length} items`);
      batch.forEach((p, i) => {
        const result = results[i] as O | ItemFailed;
        if (result instanceof ItemFailed) p.reject(result.error);
        else p.resolve(result);
      });
    };
    Promise.resolve()
      .then(() => this.runBatch(batch.map((p) => p.item)))
      .then(settle)
      .catch((error: unknown) => {
        for (const p of batch) p.reject(error);
      });
  }
}
