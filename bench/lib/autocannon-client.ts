/**
 * autocannon as a process of its own (forked by lib/forked-load.ts): the load generator's
 * work — autocannon parses every answer in JavaScript, each header costing it more — is
 * not done by the process whose servers are measured, nor, once placed (lib/placement.ts),
 * on the core they run on. It exits when the parent disconnects.
 */
import autocannon from "autocannon";

export interface AutocannonJob {
  url: string;
  connections: number;
  seconds: number;
  /** Paths (with query) to cycle through across all connections, instead of the URL's own. */
  paths?: string[] | undefined;
}

export interface AutocannonResult {
  requests: number;
  /** Seconds, as autocannon measured the run. */
  duration: number;
  p50: number;
  p99: number;
  /** Connection errors, timeouts and non-2xx answers. */
  failures: number;
}

async function run(job: AutocannonJob): Promise<AutocannonResult> {
  const paths = job.paths;
  let next = 0;
  const result = await autocannon({
    url: job.url,
    connections: job.connections,
    duration: job.seconds,
    ...(paths?.length
      ? {
          requests: [
            {
              setupRequest: (request) => {
                request.path = paths[next++ % paths.length] as string;
                return request;
              },
            },
          ],
        }
      : {}),
  });
  return {
    requests: result.requests.total,
    duration: result.duration,
    p50: result.latency.p50,
    p99: result.latency.p99,
    failures: result.errors + result.timeouts + result.non2xx,
  };
}

process.on("message", (message) => {
  void run(message as AutocannonJob).then((result) => process.send?.(result));
});
