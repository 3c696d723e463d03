/**
 * The live worker as a process of its own, started as deployments start it (src/main/work.ts,
 * PREDCACHE_WORKERS=live): its work — the misses it computes, and the audit recomputations
 * a share of Redis hits ask for — is not done in the process whose servers are measured.
 */
import { spawn } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";

export interface WorkerProcess {
  pid: number | undefined;
  close(): Promise<void>;
}

const READY_MS = 60_000;

export async function startWorkerProcess(
  redisUrl: string,
  env: Record<string, string>,
): Promise<WorkerProcess> {
  const dataDir = await mkdtemp(join(tmpdir(), "predcache-bench-worker-"));
  const child = spawn(
    process.execPath,
    ["--import", "tsx", fileURLToPath(new URL("../../src/main/work.ts", import.meta.url))],
    {
      env: {
        ...process.env,
        LOG_LEVEL: "info",
        LOG_FORMAT: "json",
        PREDCACHE_WORKERS: "live",
        PREDCACHE_METRICS_PORT: "0",
        PREDCACHE_DATA_DIR: dataDir,
        ...env,
        REDIS_URL: redisUrl,
      },
      stdio: ["ignore", "pipe", "inherit"],
    },
  );
  // A bench that dies without its cleanup does not leave the worker running.
  const orphaned = () => child.kill("SIGKILL");
  process.once("exit", orphaned);
  const exited = new Promise<void>((done) =>
    child.once("exit", () => {
      process.off("exit", orphaned);
      done();
    }),
  );
  const close = async () => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill("SIGTERM");
      const killed = setTimeout(() => child.kill("SIGKILL"), 10_000);
      await exited;
      clearTimeout(killed);
    }
    await rm(dataDir, { recursive: true, force: true });
  };
  try {
    await new Promise<void>((ready, fail) => {
      const timer = setTimeout(() => fail(new Error("the live worker did not start")), READY_MS);
      let seen = "";
      let started = false;
      child.stdout.on("data", (chunk: Buffer) => {
        // Read to the end, so its log never fills the pipe; only the first lines matter.
        if (started) return;
        seen += chunk.toString();
        if (!seen.includes("workers ready")) return;
        started = true;
        clearTimeout(timer);
        ready();
      });
      child.once("exit", (code) => {
        clearTimeout(timer);
        fail(new Error(`the live worker exited (${code})`));
      });
    });
  } catch (error) {
    await close();
    throw error;
  }
  return { pid: child.pid, close };
}
