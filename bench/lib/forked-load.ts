/** The parent's side of lib/live-client.ts: one forked load generator, one job at a time. */
import { type ChildProcess, fork } from "node:child_process";
import { fileURLToPath } from "node:url";
import type { LiveClientJob, LiveClientResult } from "./live-client.ts";

export class ForkedLoad {
  // fork() passes on this process's --import tsx, so the child runs TypeScript too.
  private readonly child: ChildProcess = fork(
    fileURLToPath(new URL("./live-client.ts", import.meta.url)),
  );

  run(job: LiveClientJob): Promise<LiveClientResult> {
    return new Promise((done, fail) => {
      const exited = (code: number | null) => fail(new Error(`load generator exited (${code})`));
      this.child.once("exit", exited);
      this.child.once("message", (result) => {
        this.child.off("exit", exited);
        done(result as LiveClientResult);
      });
      this.child.send(job);
    });
  }

  /** Disconnecting lets the child exit by itself. */
  close(): Promise<void> {
    if (this.child.connected) this.child.disconnect();
    return Promise.resolve();
  }
}
