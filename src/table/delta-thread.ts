/**
 * Table deltas built off the event loop. A delta of two big tables is hundreds of ms of
 * CPU (310 ms from 1M to 1.5M entries on this machine); built on the API's event loop,
 * it held up every hit and health check meanwhile (up to 1.2 s in a review). One worker
 * thread, started on first use and unref'd (it never keeps a process alive), builds them
 * one after another. It loads the TypeScript modules through tsx's API, as the process
 * does; should it not start, deltas are built in process.
 */
import { Worker } from "node:worker_threads";
import { type DeltaOutcome, deltaOutcome } from "./delta-outcome.ts";
import type { DeltaAnswer, DeltaRequest } from "./delta-worker.ts";

/** Registers tsx in the thread, then runs ./delta-worker.ts. */
const BOOT = `
const { workerData } = require("node:worker_threads");
(async () => {
  const { register } = await import(workerData.tsx);
  register();
  await import(workerData.module);
})().catch((error) => {
  throw error;
});
`;

interface Pending {
  resolve: (outcome: DeltaOutcome) => void;
  reject: (error: Error) => void;
}

/** The buffers a request may hand over: each its own whole buffer, once (else copied). */
function transferable(...views: Uint8Array[]): ArrayBuffer[] {
  const buffers = new Set<ArrayBuffer>();
  for (const view of views) {
    const buffer = view.buffer;
    if (
      buffer instanceof ArrayBuffer &&
      view.byteOffset === 0 &&
      view.byteLength === buffer.byteLength
    )
      buffers.add(buffer);
  }
  return [...buffers];
}

export class DeltaThread {
  /** Deltas built in the thread and, when it could not start, in process. */
  readonly built = { inThread: 0, inProcess: 0 };
  private starting: Promise<Worker | undefined> | undefined;
  private current: Worker | undefined;
  private unavailable = false;
  private readonly pending = new Map<number, Pending>();
  private next = 0;

  /**
   * The delta from `from` to `to` (table bytes), or why none is served. The bytes are
   * handed to the thread: the caller must not use them afterwards.
   */
  async build(from: Uint8Array, to: Uint8Array): Promise<DeltaOutcome> {
    const worker = this.unavailable ? undefined : await this.start();
    if (!worker) {
      this.built.inProcess++;
      return deltaOutcome(from, to);
    }
    const id = ++this.next;
    const answer = new Promise<DeltaOutcome>((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
    });
    const request: DeltaRequest = { id, from, to };
    worker.postMessage(request, transferable(from, to));
    const outcome = await answer;
    this.built.inThread++;
    return outcome;
  }

  async close(): Promise<void> {
    const worker = await this.starting;
    this.starting = undefined;
    await worker?.terminate();
  }

  private start(): Promise<Worker | undefined> {
    this.starting ??= new Promise<Worker | undefined>((started) => {
      let worker: Worker;
      try {
        worker = new Worker(BOOT, {
          eval: true,
          workerData: {
            tsx: import.meta.resolve("tsx/esm/api"),
            module: new URL("./delta-worker.ts", import.meta.url).href,
          },
        });
      } catch {
        this.unavailable = true;
        started(undefined);
        return;
      }
      worker.unref();
      this.current = worker;
      let ready = false;
      worker.on("message", (message: DeltaAnswer | { ready: true }) => {
        if ("ready" in message) {
          ready = true;
          started(worker);
        } else this.answer(message);
      });
      worker.once("error", (error) => this.lost(worker, error, ready, started));
      worker.once("exit", (code) =>
        this.lost(worker, new Error(`the delta thread exited (${code})`), ready, started),
      );
    });
    return this.starting;
  }

  private answer(answer: DeltaAnswer): void {
    const pending = this.pending.get(answer.id);
    if (!pending) return;
    this.pending.delete(answer.id);
    if ("error" in answer) pending.reject(new Error(answer.error));
    else pending.resolve("delta" in answer ? { delta: answer.delta } : { blocked: answer.blocked });
  }

  /** A thread that never started is not tried again; one that died is, on the next build. */
  private lost(
    worker: Worker,
    error: Error,
    ready: boolean,
    started: (worker: Worker | undefined) => void,
  ): void {
    // "error" and then "exit" both come here: the first one settles it.
    if (this.current !== worker) return;
    this.current = undefined;
    if (!ready) {
      this.unavailable = true;
      started(undefined);
    }
    void worker.terminate();
    this.starting = undefined;
    for (const [id, pending] of this.pending) {
      this.pending.delete(id);
      pending.reject(error);
    }
  }
}
