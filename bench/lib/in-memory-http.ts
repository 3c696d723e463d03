/**
 * The CPU time a node:http server spends per request, measured without the network: the
 * server is handed an in-memory socket that carries pipelined requests in and counts the
 * answers going out. No syscalls and no load generator compete for the machine's cores,
 * so the figure is the server's own work (node:http, framework, handler), steadier from
 * run to run than req/s over loopback on a small shared machine.
 */
import type { Server } from "node:http";
import { Duplex } from "node:stream";

/** Requests written to the socket at once; the next batch goes in once they are answered. */
const BATCH = 50;

/** A client socket in memory: what the server writes is counted, then dropped. */
class CountingSocket extends Duplex {
  readonly remoteAddress = "127.0.0.1";
  readonly remotePort = 1;
  answers = 0;
  private wanted = 0;
  private reached: (() => void) | undefined;

  /** Resolves once `count` answers have been written in all. */
  answered(count: number): Promise<void> {
    this.wanted = count;
    if (this.answers >= count) return Promise.resolve();
    return new Promise((done) => {
      this.reached = done;
    });
  }

  override _read(): void {}

  override _write(chunk: Buffer, _encoding: string, callback: () => void): void {
    this.count(chunk);
    callback();
  }

  override _writev(chunks: { chunk: Buffer }[], callback: () => void): void {
    for (const { chunk } of chunks) this.count(chunk);
    callback();
  }

  // node:http calls these on its sockets; nothing to do in memory.
  setNoDelay(): this {
    return this;
  }
  setKeepAlive(): this {
    return this;
  }
  setTimeout(): this {
    return this;
  }

  /** Each answer starts a chunk with its status line (node writes headers first). */
  private count(chunk: Buffer | string): void {
    const text = typeof chunk === "string" ? chunk : chunk.toString("latin1", 0, 9);
    if (!text.startsWith("HTTP/1.1 ")) return;
    this.answers++;
    if (this.answers >= this.wanted && this.reached) {
      const done = this.reached;
      this.reached = undefined;
      done();
    }
  }
}

/**
 * Sends `requests` keep-alive GETs of `path` to `server` (not listening: handed the socket
 * directly) and returns the process CPU time per request, in µs.
 */
export async function cpuPerRequest(server: Server, path: string, requests: number) {
  const socket = new CountingSocket();
  server.emit("connection", socket);
  const one = Buffer.from(`GET ${path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n`);
  const batch = Buffer.concat(Array.from({ length: BATCH }, () => one));
  const started = process.cpuUsage();
  for (let sent = 0; sent < requests; sent += BATCH) {
    socket.push(batch);
    await socket.answered(sent + BATCH);
  }
  const used = process.cpuUsage(started);
  socket.destroy();
  return (used.user + used.system) / (Math.ceil(requests / BATCH) * BATCH);
}
