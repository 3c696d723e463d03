/**
 * A lock in Redis for work that must not run twice at once across processes (a model's
 * table build: each build starts from the newest table, so two at a time would each
 * publish a table without the other's entries). It expires, so a holder that died frees
 * it; a live holder renews it while it works. Waiting is polling: holds are seconds long
 * and rare, and pub/sub would need a connection of its own.
 */
import { randomBytes } from "node:crypto";
import type { Redis } from "./connection.ts";

// KEYS: lock. ARGV: token, ttl ms. Extends the lock only while this token holds it.
const RENEW = `
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0`;

// KEYS: lock. ARGV: token. Frees the lock only while this token holds it.
const RELEASE = `
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0`;

export interface LockOptions {
  /** How long the lock outlives a holder that stopped renewing it (ms). */
  ttlMs: number;
  /** Longest wait for the lock before giving up (ms). */
  waitMs: number;
  /** Pause between tries while another holds it (ms). */
  pollMs?: number;
}

export class LockTimeoutError extends Error {
  override readonly name = "LockTimeoutError";
}

/**
 * Runs `work` holding `key`; waits its turn while another holder has it. `work` is given
 * `held()`: false once the lock may have passed to another (a renewal found it gone, or
 * none succeeded for a whole time to live), so it can check before an effect that must
 * not happen twice at once. `label` is kept as the lock's value, to tell who holds it.
 */
export async function withLock<T>(
  redis: Redis,
  key: string,
  options: LockOptions & { label?: string },
  work: (held: () => boolean) => Promise<T>,
): Promise<T> {
  const token = `${options.label ?? "holder"}:${randomBytes(9).toString("base64url")}`;
  const deadline = Date.now() + options.waitMs;
  while (!(await redis.set(key, token, "PX", options.ttlMs, "NX"))) {
    if (Date.now() >= deadline)
      throw new LockTimeoutError(
        `${key} was held by ${(await redis.get(key).catch(() => null)) ?? "another"} for over ${options.waitMs} ms`,
      );
    await new Promise((done) => setTimeout(done, options.pollMs ?? 100));
  }
  let confirmed = Date.now();
  let lost = false;
  const renew = setInterval(
    () =>
      void redis.eval(RENEW, 1, key, token, options.ttlMs).then(
        (renewed) => {
          if (renewed === 1) confirmed = Date.now();
          else lost = true;
        },
        () => {},
      ),
    Math.max(50, Math.floor(options.ttlMs / 3)),
  );
  const held = () => !lost && Date.now() - confirmed < options.ttlMs;
  try {
    return await work(held);
  } finally {
    clearInterval(renew);
    await redis.eval(RELEASE, 1, key, token).catch(() => {});
  }
}
