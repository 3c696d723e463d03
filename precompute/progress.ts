/** How a watched run is shown: a redrawn progress bar on a TTY, plain lines otherwise. */
import type { RunStatus } from "./runs.ts";

function eta(seconds: number | null): string {
  if (seconds === null) return "?";
  if (seconds < 90) return `${Math.round(seconds)}s`;
  return `${Math.floor(seconds / 60)}m${String(Math.round(seconds % 60)).padStart(2, "0")}s`;
}

export function progressLine(s: RunStatus): string {
  return `${s.state} chunks ${s.chunks.done}/${s.chunks.total ?? `${s.chunks.planned}+`} rows ${s.rows} written ${s.written} ${Math.round(s.rate)}/s eta ${eta(s.etaSeconds)}`;
}

export function progressBar(s: RunStatus, width = 30): string {
  const total = s.chunks.total;
  const share = total ? Math.min(1, s.chunks.done / total) : 0;
  const filled = Math.round(share * width);
  const bar = `${"█".repeat(filled)}${"░".repeat(width - filled)}`;
  const percent = total ? `${Math.round(share * 100)}%`.padStart(4) : "  ?%";
  return `${bar} ${percent} ${s.chunks.done}/${total ?? "?"} chunks · ${s.rows} rows · ${Math.round(s.rate)}/s · ETA ${eta(s.etaSeconds)} · ${s.state}`;
}

export class ProgressView {
  private last = "";

  constructor(private readonly stream: NodeJS.WriteStream) {}

  show(status: RunStatus): void {
    if (this.stream.isTTY) {
      const line = progressBar(status);
      this.stream.write(`\r\x1b[2K${line}`);
      this.last = line;
      return;
    }
    const line = progressLine(status);
    if (line !== this.last) this.stream.write(`${line}\n`);
    this.last = line;
  }

  end(): void {
    if (this.stream.isTTY && this.last) this.stream.write("\n");
  }
}
