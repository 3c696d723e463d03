/**
 * Settings whose meaning moved, named when a process starts: a value tuned for the old
 * meaning would otherwise stop applying without a word.
 */

/**
 * Live workers once took their gather wait from PREDCACHE_LIVE_BATCH_WAIT_MS; they read
 * PREDCACHE_LIVE_WORKER_WAIT_MS now (jobs are already batches, gathered by the API).
 */
export function liveWorkerWaitNotice(env: Readonly<Record<string, string | undefined>>) {
  // As loadConfig reads them: an empty value is no value.
  const given = (name: string) => (env[name] ?? "") !== "";
  if (!given("PREDCACHE_LIVE_BATCH_WAIT_MS")) return undefined;
  if (given("PREDCACHE_LIVE_WORKER_WAIT_MS")) return undefined;
  return (
    "PREDCACHE_LIVE_BATCH_WAIT_MS is set but live workers no longer read it (API processes " +
    "do, to gather misses into jobs): the live worker waits PREDCACHE_LIVE_WORKER_WAIT_MS " +
    "(default 1 ms) for a run to fill; set that to tune it"
  );
}
