/**
 * Where a bench's processes run. On a machine of few cores, a load generator sharing the
 * measured service's cores measures their contention as much as the service: autocannon
 * parses each answer in JavaScript, so a reply with more headers costs the generator more,
 * and on shared cores that comes off the service's throughput. With `taskset` (util-linux)
 * and two CPUs or more, the process whose servers are measured gets the first CPU it may
 * use, with only what it waits on (its redis-server), and the processes driving or
 * serving it from elsewhere (load generator, live worker) get the rest: the service is
 * then the bottleneck, as it is in production, where clients and workers are elsewhere.
 * redis-server goes with the service, not with the generator: on the generator's busy
 * core each Redis reply waited for the generator to yield the CPU (a Redis hit measured
 * 0.85–0.87× an L1 hit, the service idle ~8% of the time; with the service, ~1.0×),
 * and its CPU is then charged to the service's core, as a dependency's should be.
 */
import { execFileSync } from "node:child_process";

export interface Placement {
  /** What was done, for the report. */
  description: string;
  /** Gives every process its CPUs back (before parts that need all of them). */
  undo(): void;
}

/** The CPUs `pid` may run on ("0,1" or "0-3,6"), or undefined without taskset. */
function cpusOf(pid: number): string | undefined {
  try {
    const out = execFileSync("taskset", ["-c", "-p", String(pid)], { encoding: "utf8" });
    return /:\s*(\S+)\s*$/.exec(out)?.[1];
  } catch {
    return undefined;
  }
}

/** "0-2,5" → [0, 1, 2, 5]. */
function expand(list: string): number[] {
  return list.split(",").flatMap((part) => {
    const [from, to] = part.split("-").map(Number) as [number, number | undefined];
    return Array.from({ length: (to ?? from) - from + 1 }, (_, i) => from + i);
  });
}

function pin(pid: number, cpus: string): void {
  // -a: every thread the process already has (V8's, libuv's); new ones inherit it.
  execFileSync("taskset", ["-a", "-c", "-p", cpus, String(pid)], { stdio: "ignore" });
}

/** A process to place, by what it is (for the report). */
export interface Placed {
  name: string;
  pid: number | undefined;
}

/**
 * Puts `service` on a CPU of its own, with `companions` (what it waits on, whose CPU it
 * should pay for), and `others` on the rest, when this machine allows.
 */
export function placeApart(
  service: number,
  others: readonly Placed[],
  companions: readonly Placed[] = [],
): Placement {
  const all = cpusOf(service);
  const cpus = all ? expand(all) : [];
  const first = cpus[0];
  if (all === undefined || first === undefined || cpus.length < 2)
    return {
      description: all === undefined ? "not placed (no taskset)" : "not placed (one CPU)",
      undo: () => {},
    };
  const rest = cpus.slice(1).join(",");
  // Each with the CPUs it had, to give back (another may have been started on fewer).
  const had = (pid: number | undefined) =>
    pid === undefined ? [] : [{ pid, had: pid === service ? all : cpusOf(pid) }];
  const near = [service, ...companions.map((c) => c.pid)].flatMap(had);
  const far = others.flatMap((other) => had(other.pid));
  for (const { pid } of near) pin(pid, String(first));
  for (const { pid } of far) pin(pid, rest);
  const placed = [...near, ...far];
  const names = (list: readonly Placed[]) => list.map((p) => p.name).join(", ");
  const withService = companions.length > 0 ? ` with ${names(companions)}` : " alone";
  return {
    description: `servers on CPU ${first}${withService}; ${names(others)} on CPU ${rest}`,
    undo: () => {
      // Once: a second call (the bench's cleanup) could pin a new process given a freed pid.
      for (const { pid, had } of placed.splice(0)) {
        try {
          if (had !== undefined) pin(pid, had);
        } catch {
          // gone already (a stopped redis-server): nothing to give back
        }
      }
    },
  };
}
