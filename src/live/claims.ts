/**
 * Claims: which batch computes a key. A key's claim is set when its batch is queued, lasts
 * while the batch waits and runs, and expires once the answer stops being pollable (the
 * worker sets that when the batch is done); an API process that misses a key already
 * claimed waits for that batch instead of computing the key again. Scripts, so a batch's
 * claims are taken (or released) in one step and in one slot (the queue's hash tag).
 *
 * A claim's value is its batch's job id, which names the time to live the claim was set
 * with (jobs.ts batchJobId): with its PTTL that tells the claim's age, the same in every
 * process whatever their own settings, and a process from before that reads it as the
 * plain job id it is. An id without it (such a process's) is aged by local settings.
 */
import type { Result } from "ioredis";
import { isCluster, type Redis } from "../redis/connection.ts";
import { batchClaimTtlMs } from "./jobs.ts";

// KEYS: claim keys. ARGV: batch id, time to live (ms). Per key: '' when claimed for this
// batch now, else the batch that holds it.
const CLAIM = `
local owners = {}
for i, key in ipairs(KEYS) do
  local owner = redis.call('GET', key)
  if owner then
    owners[i] = owner
  else
    redis.call('SET', key, ARGV[1], 'PX', ARGV[2])
    owners[i] = ''
  end
end
return owners`;

// KEYS: claim keys. ARGV: batch id. Deletes only the claims this batch still holds.
const RELEASE = `
local released = 0
for _, key in ipairs(KEYS) do
  if redis.call('GET', key) == ARGV[1] then
    redis.call('DEL', key)
    released = released + 1
  end
end
return released`;

// KEYS: claim keys. ARGV: batch id, time to live (ms). The claims this batch still holds
// expire in that time (its answers are pollable that long after it is done).
const SETTLE = `
local settled = 0
for _, key in ipairs(KEYS) do
  if redis.call('GET', key) == ARGV[1] then
    redis.call('PEXPIRE', key, ARGV[2])
    settled = settled + 1
  end
end
return settled`;

// KEYS: claim keys, then their failure marks (as many). ARGV: batch id, the marks' time to
// live (ms). Marks each key as failed by the batch, and gives up the claims it still holds.
const FAIL = `
local n = #KEYS / 2
for i = 1, n do
  redis.call('SET', KEYS[n + i], ARGV[1], 'PX', ARGV[2])
  if redis.call('GET', KEYS[i]) == ARGV[1] then
    redis.call('DEL', KEYS[i])
  end
end
return n`;

declare module "ioredis" {
  interface RedisCommander<Context> {
    predcacheClaim(
      numKeys: number,
      ...keysThenArgs: (string | number)[]
    ): Result<string[], Context>;
    predcacheRelease(numKeys: number, ...keysThenArgs: string[]): Result<number, Context>;
    predcacheSettle(numKeys: number, ...keysThenArgs: (string | number)[]): Result<number, Context>;
  }
}

/**
 * On one Redis, makes the scripts commands of the connection (sent by SHA, not as their
 * text each time). Call once, when the connection is set up: with auto-pipelining, a
 * command defined in the same event-loop turn as other commands is missing from their
 * pipeline (ioredis #1931). On a cluster they stay EVALs: ioredis routes an auto-pipelined
 * custom command by its first argument, here the key count, not by its first key.
 */
export function defineClaimScripts(redis: Redis): void {
  if (isCluster(redis)) return;
  redis.defineCommand("predcacheClaim", { lua: CLAIM });
  redis.defineCommand("predcacheRelease", { lua: RELEASE });
  redis.defineCommand("predcacheSettle", { lua: SETTLE });
}

/** For each claim key: undefined when this batch holds it now, else the holder's batch id. */
export async function claim(
  redis: Redis,
  batchId: string,
  claimKeys: readonly string[],
  ttlMs: number,
): Promise<(string | undefined)[]> {
  const args = [...claimKeys, batchId, Math.max(1, Math.round(ttlMs))];
  const owners = isCluster(redis)
    ? ((await redis.eval(CLAIM, claimKeys.length, ...args)) as string[])
    : await redis.predcacheClaim(claimKeys.length, ...args);
  return owners.map((owner) => owner || undefined);
}

/** Gives up the claims `batchId` still holds (its job failed or was never queued). */
export async function release(
  redis: Redis,
  batchId: string,
  claimKeys: readonly string[],
): Promise<number> {
  if (claimKeys.length === 0) return 0;
  return isCluster(redis)
    ? ((await redis.eval(RELEASE, claimKeys.length, ...claimKeys, batchId)) as number)
    : redis.predcacheRelease(claimKeys.length, ...claimKeys, batchId);
}

/**
 * A batch is done: the claims it still holds expire `ttlMs` from now, so its keys' polls
 * find it while its answers are kept, however long it was queued, and not for longer.
 */
export async function settleClaims(
  redis: Redis,
  batchId: string,
  claimKeys: readonly string[],
  ttlMs: number,
): Promise<number> {
  if (claimKeys.length === 0) return 0;
  const args = [...claimKeys, batchId, Math.max(1, Math.round(ttlMs))];
  return isCluster(redis)
    ? ((await redis.eval(SETTLE, claimKeys.length, ...args)) as number)
    : redis.predcacheSettle(claimKeys.length, ...args);
}

/**
 * Ends a failed batch's claims in one step: each key is marked as failed by the batch
 * (polls tell of the failure while the job is kept) and its claim, if the batch still
 * holds it, given up (the next miss tries again). Claims and marks share the queue's
 * slot. Rare: sent as a script each time, not defined as a command.
 */
export async function failClaims(
  redis: Redis,
  batchId: string,
  claimKeys: readonly string[],
  failedKeys: readonly string[],
  ttlMs: number,
): Promise<void> {
  if (claimKeys.length === 0) return;
  await redis.eval(
    FAIL,
    claimKeys.length * 2,
    ...claimKeys,
    ...failedKeys,
    batchId,
    Math.max(1, Math.round(ttlMs)),
  );
}

export interface Claimed {
  holder: string;
  /** How long ago the claim was taken (ms); from `fallbackTtlMs` for an id naming no TTL. */
  ageMs: number;
}

/**
 * The batch holding a claim and the claim's age; undefined when none does. A claim of a
 * process that did not store its time to live is aged as if set with `fallbackTtlMs`.
 */
export async function holderOf(
  redis: Redis,
  claimKey: string,
  fallbackTtlMs: number,
): Promise<Claimed | undefined> {
  const [holder, ttlLeftMs] = await Promise.all([redis.get(claimKey), redis.pttl(claimKey)]);
  if (holder === null) return undefined;
  const ttlMs = batchClaimTtlMs(holder) ?? fallbackTtlMs;
  // A claim without an expiry (-1) has no age to tell: taken as old.
  const ageMs = ttlLeftMs < 0 ? Number.POSITIVE_INFINITY : ttlMs - ttlLeftMs;
  return { holder, ageMs };
}
