/** Runs the cleanup steps once on SIGTERM/SIGINT, bounded in time, then exits. */
import type { Logger } from "../log.ts";

let stopping = false;

/** Whether this process has begun its shutdown (a signal came). */
export function shuttingDown(): boolean {
  return stopping;
}

/** Marks the process as stopping without a signal (a failed start closing what it opened). */
export function markStopping(): void {
  stopping = true;
}

export function onShutdown(log: Logger, steps: (() => Promise<void>)[], timeoutMs = 10_000): void {
  const stop = async (signal: NodeJS.Signals) => {
    if (stopping) return;
    stopping = true;
    log.info({ signal }, "shutting down");
    const timer = setTimeout(() => {
      log.error("shutdown took too long; exiting");
      process.exit(1);
    }, timeoutMs);
    timer.unref();
    for (const step of steps) {
      await step().catch((error: unknown) => log.error({ err: error }, "shutdown step failed"));
    }
    log.info("stopped");
    process.exit(0);
  };
  process.once("SIGTERM", stop);
  process.once("SIGINT", stop);
}
