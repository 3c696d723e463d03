/** Runs the cleanup steps once on SIGTERM/SIGINT, bounded in time, then exits. */
import type { Logger } from "../log.ts";
import { InferenceThread } from "../model/inference-thread.ts";

let stopping = false;

/** Whether this process has begun its shutdown (a signal came). */
export function shuttingDown(): boolean {
  return stopping;
}

/** Marks the process as stopping without a signal (a failed start closing what it opened). */
export function markStopping(): void {
  stopping = true;
}

/** Longest a hurried exit waits for the inference threads' batches in progress (ms). */
const HURRIED_EXIT_WAIT_MS = 2_000;

/**
 * Exits without the shutdown steps, but not mid-inference: a thread's batch in progress is
 * let finish first (bounded), or the process aborts (134) instead of exiting with `code`.
 */
export async function exitNow(code: number): Promise<never> {
  await InferenceThread.closeAll(HURRIED_EXIT_WAIT_MS);
  process.exit(code);
}

/**
 * A start that failed (Redis not reachable in time, the port taken): one fatal log line,
 * what was started is stopped again, exit 1.
 */
export async function failedStart(
  log: Logger,
  error: unknown,
  steps: readonly (() => Promise<void>)[],
): Promise<never> {
  log.fatal({ err: error }, `could not start: ${(error as Error).message}`);
  markStopping();
  for (const step of steps) await step().catch(() => {});
  process.exit(1);
}

/** A signal this long after the first is a second one (an impatient Ctrl-C). */
const SECOND_SIGNAL_AFTER_MS = 1_000;

export function onShutdown(log: Logger, steps: (() => Promise<void>)[], timeoutMs = 10_000): void {
  let firstSignalAt: number | undefined;
  const stop = async (signal: NodeJS.Signals) => {
    // Ctrl-C again does not wait for the first one's steps. Not a signal right after the
    // first: a terminal's Ctrl-C reaches npm and node both, and npm passes it on too.
    if (firstSignalAt !== undefined) {
      if (performance.now() - firstSignalAt < SECOND_SIGNAL_AFTER_MS) return;
      log.warn({ signal }, "second signal: exiting without waiting for the shutdown");
      await exitNow(1);
    }
    firstSignalAt = performance.now();
    if (stopping) return;
    stopping = true;
    log.info({ signal }, "shutting down");
    const timer = setTimeout(() => {
      log.error("shutdown took too long; exiting");
      void exitNow(1);
    }, timeoutMs);
    timer.unref();
    for (const step of steps) {
      await step().catch((error: unknown) => log.error({ err: error }, "shutdown step failed"));
    }
    log.info("stopped");
    process.exit(0);
  };
  process.on("SIGTERM", stop);
  process.on("SIGINT", stop);
}
