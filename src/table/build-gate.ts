/**
 * Bounds expensive builds (table deltas): at most `running` at a time, at most `waiting`
 * more in line, the rest refused at once. A build holds both whole tables in memory:
 * dozens of requests for different pairs at once (each client asking from its own old
 * generation) held 2 GB and stalled hits for seconds before they were bounded.
 */
export class BuildGate {
  private active = 0;
  private readonly line: (() => void)[] = [];

  constructor(
    private readonly running: number,
    private readonly waiting: number,
  ) {}

  /** Runs `build` when its turn comes; throws `refused()` when the line is full. */
  async run<T>(build: () => Promise<T>, refused: () => Error): Promise<T> {
    if (this.active < this.running) this.active++;
    else {
      if (this.line.length >= this.waiting) throw refused();
      // Woken with the slot of the build that finished.
      await new Promise<void>((turn) => this.line.push(turn));
    }
    try {
      return await build();
    } finally {
      const next = this.line.shift();
      if (next) next();
      else this.active--;
    }
  }

  /** Builds running and waiting, for tests and metrics. */
  get load(): { running: number; waiting: number } {
    return { running: this.active, waiting: this.line.length };
  }
}
