/**
 * The parent's side of a forked load generator (lib/live-client.ts by default,
 * lib/autocannon-client.ts for fixed-URL load): one child process, one job at a time.
 */
import { type ChildProcess, fork } from "node:child_process";
import { fileURLToPath } from "node:url";
import type { LiveClientJob, LiveClientResult } from "./live-client.ts";

export class ForkedLoad<Job = LiveClientJob, Result = LiveClientResult> {
  private readonly child: ChildProcess;

  // fork() passes on this process's --import tsx, so the child runs TypeScript too.
  constructor(module: URL = new URL("./live-client.ts", import.meta.url)) {
    this.child = fork(fileURLToPath(module));
  }

  /** The child's process id (to place it on other cores than the service: lib/placement.ts). */
  get pid(): number | undefined {
    return this.child.pid;
  }

  run(job: Job): Promise<Result> {
    return new Promise((done, fail) => {
      const exited = (code: number | null) => fail(new Error(`load generator exited (${code})`));
      this.child.once("exit", exited);
      this.child.once("message", (result) => {
        this.child.off("exit", exited);
        done(result as Result);
      });
      try {
        this.child.send(job as object);
      } catch (error) {
        this.child.off("exit", exited);
        fail(error);
      }
    });
  }

  /** Disconnecting lets the child exit by itself. */
  close(): Promise<void> {
    if (this.child.connected) this.child.disconnect();
    return Promise.resolve();
  }
}
