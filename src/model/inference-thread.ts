/**
 * Workers' inference, off the event loop. onnxruntime-node runs a session on the calling
 * thread (its async run() only defers the call by a setImmediate), so inference on a
 * worker's own thread stalls everything else: Redis replies, encoding, writes, and under
 * npm start the API's requests. Here a worker thread holds its own session of the version
 * and runs the batches it is sent one after another, while the main thread prepares the
 * next batches and writes finished ones (precompute and live workers both use it). Same
 * model bytes, same session options and same decoding as the registry's runtime.
 */
import { readFile } from "node:fs/promises";
import { createRequire } from "node:module";
import { resolve } from "node:path";
import { Worker } from "node:worker_threads";
import { decodeRow, type OutputTensors, type Prediction } from "./decoding.ts";
import { type ModelVersion, versionOf } from "./registry.ts";
import { sessionOptions } from "./runtime.ts";

/** Plain CommonJS, so the thread needs no TypeScript loader (tsx, vitest or none). */
const THREAD_SOURCE = `
const { parentPort, workerData } = require("node:worker_threads");
const ort = require(workerData.ort);
const { input, dtype, options } = workerData;
const message = (error) => (error instanceof Error ? error.message : String(error));
const ready = ort.InferenceSession.create(workerData.model, options);
ready.then(
  () => parentPort.postMessage({ ready: true }),
  (error) => parentPort.postMessage({ ready: false, error: message(error) }),
);
parentPort.on("message", async ({ id, buffer, rows, width, close }) => {
  // Ends the thread between two runs (never terminate() it during one: onnxruntime
  // would abort the whole process); batches still queued are answered by the exit.
  if (close) process.exit(0);
  try {
    const session = await ready;
    const data = dtype === "int64" ? new BigInt64Array(buffer) : new Float32Array(buffer);
    const outputs = await session.run({ [input]: new ort.Tensor(dtype, data, [rows, width]) });
    const tensors = {};
    for (const [name, tensor] of Object.entries(outputs)) {
      if (tensor.type === "string") continue;
      tensors[name] = { data: tensor.data, width: tensor.dims[1] ?? 1 };
    }
    parentPort.postMessage({ id, tensors });
  } catch (error) {
    parentPort.postMessage({ id, error: message(error) });
  }
});
`;

type Reply = { id: number; tensors: OutputTensors } | { id: number; error: string };

/** Threads not yet exited, for closeAll(). */
const running = new Set<InferenceThread>();

export class InferenceThread {
  /**
   * Ends every thread once its current batch is done, waiting at most `ms`: what a process
   * must do before it exits in a hurry. A thread stopped mid-run (process.exit, terminate)
   * takes the whole process down with it: onnxruntime's finished run calls back into a
   * thread that is gone, which aborts (exit 134, not the code asked for).
   */
  static async closeAll(ms: number): Promise<void> {
    let timer: NodeJS.Timeout | undefined;
    const bound = new Promise<void>((done) => {
      timer = setTimeout(done, ms);
    });
    await Promise.race([Promise.allSettled([...running].map((t) => t.close())), bound]);
    clearTimeout(timer);
  }

  private readonly pending = new Map<
    number,
    { resolve: (t: OutputTensors) => void; reject: (e: Error) => void }
  >();
  private nextId = 0;
  private broken: Error | undefined;
  private readonly exited: Promise<void>;

  private constructor(
    private readonly model: ModelVersion,
    private readonly worker: Worker,
  ) {
    worker.on("message", (reply: Reply) => {
      const waiter = this.pending.get(reply.id);
      if (!waiter) return;
      this.pending.delete(reply.id);
      if ("error" in reply) waiter.reject(new Error(reply.error));
      else waiter.resolve(reply.tensors);
    });
    const fail = (error: Error) => {
      this.broken ??= error;
      for (const waiter of this.pending.values()) waiter.reject(error);
      this.pending.clear();
    };
    worker.on("error", fail);
    this.exited = new Promise((done) =>
      worker.once("exit", (code) => {
        running.delete(this);
        fail(new Error(`inference thread exited (code ${code})`));
        done();
      }),
    );
    running.add(this);
  }

  /**
   * A thread with a session of `model`, or undefined when the ONNX file on disk is no
   * longer the one the version was loaded from (the caller then infers in-process).
   */
  static async start(
    model: ModelVersion,
    options: { intraOpThreads: number },
  ): Promise<InferenceThread | undefined> {
    const bytes = new Uint8Array(await readFile(resolve(model.directory, model.manifest.model)));
    if (versionOf(bytes, model.manifest, model.encoder) !== model.version) return undefined;
    const worker = new Worker(THREAD_SOURCE, {
      eval: true,
      workerData: {
        ort: createRequire(import.meta.url).resolve("onnxruntime-node"),
        model: bytes,
        input: model.manifest.encoding.input.name,
        dtype: model.manifest.encoding.input.dtype,
        // The registry runtime's options.
        options: sessionOptions(options.intraOpThreads),
      },
    });
    worker.unref();
    const ready = await new Promise<{ ready: boolean; error?: string }>((done, fail) => {
      worker.once("message", done);
      worker.once("error", fail);
    });
    if (!ready.ready) {
      await worker.terminate();
      throw new Error(`inference thread: ${ready.error}`);
    }
    return new InferenceThread(model, worker);
  }

  /** Set once the thread died; a new one has to be started. */
  get failed(): boolean {
    return this.broken !== undefined;
  }

  /**
   * Runs `rows` as one batch; one prediction per row, in order. Batches sent while one
   * runs queue up in the thread, so it goes straight from one to the next.
   */
  async run(rows: readonly (readonly number[])[]): Promise<Prediction[]> {
    if (rows.length === 0) return [];
    if (this.broken) throw this.broken;
    const { manifest } = this.model;
    const width = manifest.encoding.features.length;
    const values =
      manifest.encoding.input.dtype === "int64"
        ? new BigInt64Array(rows.length * width)
        : new Float32Array(rows.length * width);
    let at = 0;
    for (const row of rows) {
      if (row.length !== width) throw new Error(`every row must have ${width} values`);
      if (values instanceof BigInt64Array) for (const v of row) values[at++] = BigInt(v);
      else for (const v of row) values[at++] = v;
    }
    const id = this.nextId++;
    const tensors = await new Promise<OutputTensors>((done, fail) => {
      this.pending.set(id, { resolve: done, reject: fail });
      this.worker.postMessage({ id, buffer: values.buffer, rows: rows.length, width }, [
        values.buffer,
      ]);
    });
    const predictions = new Array<Prediction>(rows.length);
    for (let i = 0; i < rows.length; i++) predictions[i] = decodeRow(manifest, tensors, i);
    return predictions;
  }

  /** Ends the thread once its current batch is done; batches still queued fail. */
  async close(): Promise<void> {
    this.worker.postMessage({ close: true });
    await this.exited;
  }
}
