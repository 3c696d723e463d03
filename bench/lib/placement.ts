/**
 * Where a bench's processes run. On a machine of few cores, a load generator sharing the
 * measured service's cores measures their contention as much as the service: autocannon
 * parses each answer in JavaScript, so a reply with more headers costs the generator more,
 * and on shared cores that comes off the service's throughput. With `taskset` (util-linux)
 * and two CPUs or more, the process whose servers are measured gets the first CPU it may
 * use, alone, and the processes it talks to (load generator, redis-server, live worker) get
 * the rest: the service is then the bottleneck, as it is in production, where clients,
 * Redis and workers are elsewhere.
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

/** Puts `service` on a CPU of its own and `others` on the rest, when this machine allows. */
export function placeApart(service: number, others: readonly Placed[]): Placement {
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
  const placed = [service, ...others.map((other) => other.pid)]
    .filter((pid): pid is number => pid !== undefined)
    .map((pid) => ({ pid, had: pid === service ? all : cpusOf(pid) }));
  pin(service, String(first));
  for (const { pid } of placed.slice(1)) pin(pid, rest);
  const names = others.map((other) => other.name).join(", ");
  return {
    description: `servers on CPU ${first} alone; ${names} on CPU ${rest}`,
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
