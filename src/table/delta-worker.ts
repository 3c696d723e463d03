/** The delta thread's side (./delta-thread.ts): one request at a time, answered in order. */
import { parentPort } from "node:worker_threads";
import { deltaOutcome } from "./delta-outcome.ts";

export interface DeltaRequest {
  id: number;
  from: Uint8Array;
  to: Uint8Array;
}

export type DeltaAnswer =
  | { id: number; delta: Uint8Array }
  | { id: number; blocked: string }
  | { id: number; error: string };

parentPort?.on("message", ({ id, from, to }: DeltaRequest) => {
  let answer: DeltaAnswer;
  try {
    const outcome = deltaOutcome(from, to);
    answer = { id, ...outcome };
  } catch (error) {
    answer = { id, error: (error as Error).message };
  }
  // The delta is a view of a larger buffer msgpackr packed into: sent as its own copy
  // (new Uint8Array copies; a Buffer's slice() would be a view of the same memory).
  if ("delta" in answer) {
    const delta = new Uint8Array(answer.delta);
    parentPort?.postMessage({ id, delta }, [delta.buffer]);
  } else parentPort?.postMessage(answer);
});
parentPort?.postMessage({ ready: true });
