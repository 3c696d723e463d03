/**
 * A private redis-server child on loopback and a free port: the quick start's embedded
 * default (with persistence under the data dir) and the test harness's Redis (none).
 */
import { type ChildProcess, spawn } from "node:child_process";
import { mkdir } from "node:fs/promises";
import { createServer, type Socket } from "node:net";
import { resolve } from "node:path";

export interface EmbeddedRedis {
  url: string;
  port: number;
  /** The running server's (a new one after a restart). */
  readonly pid: number;
  /** Stops the server (it saves first when persistent) and waits for it to exit. */
  stop(): Promise<void>;
  /** Freezes (SIGSTOP) or thaws (SIGCONT) the server: fault-injection tests. */
  pause(): void;
  resume(): void;
}

export interface EmbeddedRedisOptions {
  /** Persist (append-only file) under this folder; undefined: keep nothing on disk. */
  dataDir?: string | undefined;
  binary?: string;
  /** Listen on this port instead of a free one (restarts on the same address). */
  port?: number;
  extraArgs?: string[];
  /**
   * Start it again, on the same port and folder, whenever it exits by itself (killed, out
   * of memory): npm start's Redis, which nothing else would bring back. Told of each exit
   * and of each start after one.
   */
  restart?: {
    onExit(exit: { code: number | null; signal: string | null; restartInMs: number }): void;
    onRestart(pid: number): void;
    onFailedRestart(error: Error): void;
  };
}

/** Pauses before a restart (ms): the first at once-ish, then longer while restarts fail. */
const RESTART_DELAYS_MS = [100, 500, 1_000, 2_000, 5_000];

export class RedisNotInstalledError extends Error {
  override readonly name = "RedisNotInstalledError";
  constructor(binary: string) {
    super(
      `${binary} was not found on PATH. Install Redis (Debian/Ubuntu: apt-get install redis-server; macOS: brew install redis) or set REDIS_URL to a Redis you already run.`,
    );
  }
}

export function freePort(): Promise<number> {
  return new Promise((done, fail) => {
    const server = createServer();
    server.once("error", fail);
    server.listen(0, "127.0.0.1", () => {
      const address = server.address();
      server.close(() =>
        typeof address === "object" && address ? done(address.port) : fail(new Error("no port")),
      );
    });
  });
}

function waitForReady(child: ChildProcess, binary: string): Promise<void> {
  return new Promise((done, fail) => {
    let output = "";
    const timer = setTimeout(
      () => fail(new Error(`redis-server did not start within 10 s:\n${output}`)),
      10_000,
    );
    const finish = (error?: Error) => {
      clearTimeout(timer);
      child.stdout?.removeAllListeners("data");
      if (error) fail(error);
      else done();
    };
    child.once("error", (error: NodeJS.ErrnoException) =>
      finish(error.code === "ENOENT" ? new RedisNotInstalledError(binary) : error),
    );
    child.once("exit", (code) =>
      finish(new Error(`redis-server exited with code ${code}:\n${output}`)),
    );
    child.stdout?.on("data", (chunk: Buffer) => {
      output += chunk.toString();
      if (output.includes("Ready to accept connections")) finish();
    });
  });
}

/**
 * Stops the server when this process dies without running any exit code (SIGKILL, OOM
 * killer). Node has no parent-death signal; instead a shell holds the read end of a pipe
 * that only this process writes to. The pipe closes the moment this process is gone
 * (whatever state it is left in, and no PID to be fooled by), and the shell then stops the
 * server: SIGTERM, which saves a persistent one, and SIGKILL 5 s later.
 */
const WATCHDOG = `
read _ignored
kill -CONT "$1" 2>/dev/null; kill -TERM "$1" 2>/dev/null || exit 0
i=0; while kill -0 "$1" 2>/dev/null && [ $i -lt 50 ]; do sleep 0.1; i=$((i+1)); done
kill -KILL "$1" 2>/dev/null; exit 0
`;

function watchParent(server: ChildProcess): void {
  if (!server.pid) return;
  const watchdog = spawn("sh", ["-c", WATCHDOG, "redis-watchdog", String(server.pid)], {
    stdio: ["pipe", "ignore", "ignore"],
    detached: true, // its own process group: a Ctrl-C meant for this process is not its
  });
  watchdog.on("error", () => {}); // no sh: only the watchdog is missing, the server still runs
  watchdog.stdin?.on("error", () => {});
  (watchdog.stdin as Socket | null)?.unref();
  watchdog.unref();
  // Once the server has exited its PID is free for others: the watchdog must not outlive it.
  server.once("exit", () => watchdog.kill());
}

export async function startRedisServer(options: EmbeddedRedisOptions = {}): Promise<EmbeddedRedis> {
  const binary = options.binary ?? "redis-server";
  const port = options.port ?? (await freePort());
  const args = [
    "--port",
    String(port),
    "--bind",
    "127.0.0.1",
    "--protected-mode",
    "yes",
    "--daemonize",
    "no",
  ];
  if (options.dataDir) {
    const dir = resolve(options.dataDir);
    await mkdir(dir, { recursive: true });
    args.push("--dir", dir, "--appendonly", "yes", "--save", "");
  } else {
    args.push("--save", "", "--appendonly", "no");
  }
  args.push(...(options.extraArgs ?? []));
  let stopping = false;
  let failures = 0;
  let restartTimer: NodeJS.Timeout | undefined;

  /** Spawns a server and waits until it accepts connections. */
  const launch = async (): Promise<ChildProcess> => {
    // Its own process group: a Ctrl-C in the terminal reaches this process, whose shutdown
    // stops the server last, not the server while the workers still write to it.
    const spawned = spawn(binary, args, { stdio: ["ignore", "pipe", "inherit"], detached: true });
    watchParent(spawned);
    await waitForReady(spawned, binary).catch((error) => {
      spawned.kill("SIGKILL");
      throw error;
    });
    spawned.stdout?.resume(); // keep draining its log so the pipe never fills
    if (options.restart) spawned.once("exit", (code, signal) => exitedByItself(code, signal));
    return spawned;
  };

  const restartDelayMs = () =>
    RESTART_DELAYS_MS[Math.min(failures, RESTART_DELAYS_MS.length - 1)] as number;

  const exitedByItself = (code: number | null, signal: string | null) => {
    if (stopping || !options.restart) return;
    options.restart.onExit({ code, signal, restartInMs: restartDelayMs() });
    restartLater();
  };

  const restartLater = () => {
    const restart = options.restart;
    if (!restart) return;
    restartTimer = setTimeout(() => {
      restartTimer = undefined;
      if (stopping) return;
      launch().then(
        (started) => {
          if (stopping) {
            started.kill("SIGTERM");
            return;
          }
          failures = 0;
          child = started;
          restart.onRestart(started.pid ?? -1);
        },
        (error: Error) => {
          failures++;
          restart.onFailedRestart(error);
          restartLater();
        },
      );
    }, restartDelayMs());
  };

  let child = await launch();
  // When this process exits without stop(): the server shuts down by itself (and saves).
  const stopOnExit = () => {
    child.kill("SIGCONT");
    child.kill("SIGTERM");
  };
  process.once("exit", stopOnExit);
  return {
    url: `redis://127.0.0.1:${port}`,
    port,
    get pid() {
      return child.pid ?? -1;
    },
    pause: () => child.kill("SIGSTOP"),
    resume: () => child.kill("SIGCONT"),
    async stop() {
      stopping = true;
      if (restartTimer) clearTimeout(restartTimer);
      process.removeListener("exit", stopOnExit);
      if (child.exitCode !== null || child.signalCode !== null) return;
      const exited = new Promise<void>((done) => child.once("exit", () => done()));
      child.kill("SIGCONT");
      child.kill("SIGTERM");
      const timer = setTimeout(() => child.kill("SIGKILL"), 5_000);
      await exited;
      clearTimeout(timer);
    },
  };
}
