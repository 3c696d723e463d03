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

/** Registers tsx in the thread, then runs the worker module. */
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

/** A thread not ready by then is given up: deltas are built in process from then on. */
const BOOT_TIMEOUT_MS = 15_000;

export interface DeltaThreadOptions {
  /** The worker module (tests point it elsewhere); ./delta-worker.ts by default. */
  module?: string;
}

interface Pending {
  resolve: (outcome: DeltaOutcome) => void;
  reject: (error: Error) => void;
}

/** One started thread and the builds it owes. */
interface Running {
  worker: Worker;
  pending: Map<number, Pending>;
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
  private starting: Promise<Running | undefined> | undefined;
  private current: Running | undefined;
  private unavailable = false;
  private next = 0;

  constructor(private readonly options: DeltaThreadOptions = {}) {}

  /**
   * The delta from `from` to `to` (table bytes), or why none is served. The bytes are
   * handed to the thread: the caller must not use them afterwards.
   */
  async build(from: Uint8Array, to: Uint8Array): Promise<DeltaOutcome> {
    const running = this.unavailable ? undefined : await this.start();
    if (!running) {
      this.built.inProcess++;
      return deltaOutcome(from, to);
    }
    const id = ++this.next;
    const answer = new Promise<DeltaOutcome>((resolve, reject) => {
      running.pending.set(id, { resolve, reject });
    });
    try {
      const request: DeltaRequest = { id, from, to };
      running.worker.postMessage(request, transferable(from, to));
    } catch (error) {
      running.pending.delete(id);
      throw error;
    }
    const outcome = await answer;
    this.built.inThread++;
    return outcome;
  }

  /** Stops the thread; builds it owed are rejected. */
  async close(): Promise<void> {
    const running = await this.starting;
    this.starting = undefined;
    this.current = undefined;
    if (!running) return;
    this.settleAll(running, new Error("the delta thread was closed"));
    await running.worker.terminate();
  }

  private start(): Promise<Running | undefined> {
    this.starting ??= new Promise<Running | undefined>((started) => {
      let worker: Worker;
      try {
        worker = new Worker(BOOT, {
          eval: true,
          workerData: {
            tsx: import.meta.resolve("tsx/esm/api"),
            module: this.options.module ?? new URL("./delta-worker.ts", import.meta.url).href,
          },
        });
      } catch {
        this.unavailable = true;
        started(undefined);
        return;
      }
      worker.unref();
      const running: Running = { worker, pending: new Map() };
      this.current = running;
      let ready = false;
      const giveUp = () => {
        // Never ready: not tried again; deltas are built in process.
        this.unavailable = true;
        this.starting = undefined;
        started(undefined);
        void worker.terminate();
      };
      const booting = setTimeout(giveUp, BOOT_TIMEOUT_MS);
      booting.unref();
      worker.on("message", (message: DeltaAnswer | { ready: true }) => {
        if ("ready" in message) {
          ready = true;
          clearTimeout(booting);
          started(running);
        } else this.answer(running, message);
      });
      const lost = (error: Error) => {
        clearTimeout(booting);
        if (!ready) return giveUp();
        // Died after it started: its builds fail; the next build starts a new thread.
        if (this.current === running) {
          this.current = undefined;
          this.starting = undefined;
        }
        this.settleAll(running, error);
        void worker.terminate();
      };
      worker.once("error", lost);
      worker.once("exit", (code) => lost(new Error(`the delta thread exited (${code})`)));
      worker.on("messageerror", (error) => lost(error));
    });
    return this.starting;
  }

  private answer(running: Running, answer: DeltaAnswer): void {
    const pending = running.pending.get(answer.id);
    if (!pending) return;
    running.pending.delete(answer.id);
    if ("error" in answer) pending.reject(new Error(answer.error));
    else pending.resolve("delta" in answer ? { delta: answer.delta } : { blocked: answer.blocked });
  }

  private settleAll(running: Running, error: Error): void {
    for (const [id, pending] of running.pending) {
      running.pending.delete(id);
      pending.reject(error);
    }
  }
}
