/**
 * The active (served) version of every model, kept in Redis so every API process and
 * worker agrees. Each process caches it in memory and learns of a switch through
 * pub/sub, with a short poll as a safety net when a message is lost: a promote is seen
 * everywhere within a second.
 */
import type { Keys } from "../cache/keys.ts";
import { PredcacheError } from "../errors.ts";
import { type Redis, subscribe } from "../redis/connection.ts";
import type { ModelRegistry } from "./registry.ts";

export interface ActiveVersionsOptions {
  /** Poll period (ms) in case a pub/sub message is missed. */
  pollMs?: number;
  /** The connection switches are made on (default: the one polls read on). */
  writer?: Redis;
  /** Told when this process put back a pointer Redis had lost (see refreshOne). */
  onRestored?: (model: string, version: string) => void;
}

export class ActiveVersions {
  private readonly cache = new Map<string, string>();
  private timer: NodeJS.Timeout | undefined;
  private readonly listeners = new Set<(model: string, version: string) => void>();

  constructor(
    private readonly redis: Redis,
    private readonly subscriber: Redis,
    private readonly keys: Keys,
    private readonly registry: ModelRegistry,
    private readonly options: ActiveVersionsOptions = {},
  ) {}

  /** Sets unset pointers to each model's default version, loads all, starts listening. */
  async start(): Promise<void> {
    for (const name of this.registry.names()) {
      const fallback = this.registry.defaultVersion(name);
      if (fallback) await this.redis.set(this.keys.active(name), fallback.version, "NX");
    }
    await this.refresh();
    this.subscriber.on("message", (channel: string, model: string) => {
      if (channel === this.keys.activeChannel()) void this.refreshOne(model).catch(() => {});
    });
    await subscribe(this.subscriber, this.keys.activeChannel());
    this.timer = setInterval(() => void this.refresh().catch(() => {}), this.options.pollMs ?? 500);
    this.timer.unref();
  }

  /** The cached active version id (undefined when unknown). */
  get(model: string): string | undefined {
    return this.cache.get(model);
  }

  /** Every model's cached active version. */
  entries(): IterableIterator<[model: string, version: string]> {
    return this.cache.entries();
  }

  onChange(listener: (model: string, version: string) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  async refresh(): Promise<void> {
    await Promise.all(this.registry.names().map((name) => this.refreshOne(name)));
  }

  private async refreshOne(model: string): Promise<void> {
    let version = await this.redis.get(this.keys.active(model));
    const cached = this.cache.get(model);
    if (version === null && cached === undefined) {
      // A model new to this process since start() (a reload loaded its first folder): its
      // default version is made active as start() does, unless another process did first.
      const fallback = this.registry.defaultVersion(model);
      if (!fallback) return;
      const writer = this.options.writer ?? this.redis;
      await writer.set(this.keys.active(model), fallback.version, "NX");
      version = await writer.get(this.keys.active(model));
    }
    if (version === null && cached !== undefined) {
      // Redis came back without its data (restarted with no persistence, flushed): the
      // version served until then is put back, before a process starting now sets its
      // default (the newest folder) and every process switches to it. Only if still unset.
      const restored = await (this.options.writer ?? this.redis).set(
        this.keys.active(model),
        cached,
        "NX",
      );
      if (restored) this.options.onRestored?.(model, cached);
      return;
    }
    if (version && cached !== version) {
      this.cache.set(model, version);
      for (const listener of this.listeners) listener(model, version);
    }
  }

  /** Makes `version` active and tells every process; returns the version it replaced. */
  async set(model: string, version: string): Promise<string | undefined> {
    const previous = await switchActiveVersion(
      this.options.writer ?? this.redis,
      this.keys,
      model,
      version,
    );
    await this.refreshOne(model);
    return previous;
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
  }
}

/** The reply of a switch refused because gc is deleting the version. */
export const COLLECTING = "COLLECTING";

/**
 * The reply of a switch refused because the active version was switched since a count was
 * read (not "MOVED": a Redis Cluster client takes an error starting so for a redirection).
 */
export const ACTIVE_CHANGED = "ACTIVE_CHANGED";

// Pointer, history, switch count and announcement change together: a crash between them
// cannot lose the rollback target. A version gc is deleting is not switched to. KEYS:
// active, history, the version's gc mark, switch count. ARGV: version, channel, model,
// history cap[, the switch count expected: any switch since refuses this one].
const SWITCH = `
if redis.call('EXISTS', KEYS[3]) == 1 then return redis.error_reply('${COLLECTING}') end
local previous = redis.call('GET', KEYS[1])
if ARGV[5] and (redis.call('GET', KEYS[4]) or '0') ~= ARGV[5] then
  return redis.error_reply('${ACTIVE_CHANGED} ' .. (previous or ''))
end
redis.call('INCR', KEYS[4])
redis.call('SET', KEYS[1], ARGV[1])
if previous and previous ~= ARGV[1] then
  redis.call('LPUSH', KEYS[2], previous)
  redis.call('LTRIM', KEYS[2], 0, tonumber(ARGV[4]) - 1)
end
redis.call('PUBLISH', ARGV[2], ARGV[3])
return previous`;

// Back to the newest history entry, which is taken off the history (a second rollback
// goes one further back). KEYS: active, history, the target's gc mark, switch count.
// ARGV: expected target (guards a race), channel, model.
const ROLLBACK = `
if redis.call('EXISTS', KEYS[3]) == 1 then return redis.error_reply('${COLLECTING}') end
local target = redis.call('LINDEX', KEYS[2], 0)
if not target or target ~= ARGV[1] then return false end
redis.call('INCR', KEYS[4])
redis.call('LPOP', KEYS[2])
local previous = redis.call('GET', KEYS[1])
redis.call('SET', KEYS[1], target)
redis.call('PUBLISH', ARGV[2], ARGV[3])
return previous or ''`;

export const HISTORY_CAP = 100;

// Marks a version as being deleted unless it is, by now, active, the rollback target or an
// arm of the running experiment (a change since gc chose it), in one step: from then on
// the scripts above (and the experiments') refuse to serve it. KEYS: active, history,
// mark, running experiment id, experiment records. ARGV: version, lifetime (ms).
const MARK_COLLECTING = `
if redis.call('GET', KEYS[1]) == ARGV[1] or redis.call('LINDEX', KEYS[2], 0) == ARGV[1] then
  return 0
end
local running = redis.call('GET', KEYS[4])
if running then
  local record = redis.call('HGET', KEYS[5], running)
  if record then
    local experiment = cjson.decode(record)
    if experiment.control == ARGV[1] or experiment.candidate == ARGV[1] then return 0 end
  end
end
redis.call('SET', KEYS[3], '1', 'PX', ARGV[2])
return 1`;

/** How long a gc mark lives unless renewed: a gc that died leaves none for long. */
const MARK_MS = 60_000;

export interface CollectingMark {
  /** False once the mark was found gone (expired: the deletion must stop). */
  held(): boolean;
  release(): Promise<void>;
}

/**
 * Claims a version for deletion by gc: undefined when it is active or the rollback target
 * (then it must be kept); else, until released, it cannot be made active.
 */
export async function markCollecting(
  redis: Redis,
  keys: Keys,
  model: string,
  version: string,
): Promise<CollectingMark | undefined> {
  const mark = keys.collecting(model, version);
  const marked = await redis.eval(
    MARK_COLLECTING,
    5,
    keys.active(model),
    keys.history(model),
    mark,
    keys.runningExperiment(model),
    keys.experiments(model),
    version,
    MARK_MS,
  );
  if (marked !== 1) return undefined;
  // Renewed on a timer, however long a SCAN goes without a match.
  let held = true;
  const renewal = setInterval(() => {
    redis.pexpire(mark, MARK_MS).then(
      (renewed) => {
        if (renewed === 0) held = false;
      },
      () => {},
    );
  }, MARK_MS / 4);
  renewal.unref();
  return {
    held: () => held,
    release: async () => {
      clearInterval(renewal);
      await redis.del(mark);
    },
  };
}

/** A switch refused by the scripts above: 409, the version is being deleted. */
function collectingConflict(error: Error): never {
  if (error.message.includes(COLLECTING))
    throw new PredcacheError(
      "conflict",
      "gc is deleting this version (it is outside what retention keeps): it cannot be made active",
    );
  throw error;
}

/** A switch made only if none happened since a count was read found one had. */
export class ActiveMovedError extends Error {
  constructor(
    /** The version active now ("" none). */
    readonly active: string,
  ) {
    super(`the active version was switched meanwhile (now ${active || "none"})`);
    this.name = "ActiveMovedError";
  }
}

/** How many times the model's active version has been switched ("0" never). */
export async function switchCount(redis: Redis, keys: Keys, model: string): Promise<string> {
  return (await redis.get(keys.switches(model))) ?? "0";
}

/**
 * The pointer switch: the old version goes on the history (for rollback) and every
 * process is told. Usable without an ActiveVersions (workers, admin tools). With
 * `ifSwitches` (a switchCount() read earlier), only if no switch happened since, else
 * ActiveMovedError.
 */
export async function switchActiveVersion(
  redis: Redis,
  keys: Keys,
  model: string,
  version: string,
  ifSwitches?: string,
): Promise<string | undefined> {
  const previous = (await redis
    .eval(
      SWITCH,
      4,
      keys.active(model),
      keys.history(model),
      keys.collecting(model, version),
      keys.switches(model),
      version,
      keys.activeChannel(),
      model,
      HISTORY_CAP,
      ...(ifSwitches === undefined ? [] : [ifSwitches]),
    )
    .catch((error: Error) => {
      const moved = new RegExp(`^${ACTIVE_CHANGED} (.*)$`).exec(error.message);
      if (moved && ifSwitches !== undefined) throw new ActiveMovedError(moved[1] ?? "");
      return collectingConflict(error);
    })) as string | null;
  return previous ?? undefined;
}

/** The version a rollback would go back to: the newest history entry. */
export async function rollbackTarget(
  redis: Redis,
  keys: Keys,
  model: string,
): Promise<string | undefined> {
  return (await redis.lindex(keys.history(model), 0)) ?? undefined;
}

/**
 * Makes `target` (which must be the newest history entry) active again and takes it off
 * the history; returns the version it replaced, or undefined when the history moved on.
 */
export async function rollbackActiveVersion(
  redis: Redis,
  keys: Keys,
  model: string,
  target: string,
): Promise<{ previous: string | undefined } | undefined> {
  const result = (await redis
    .eval(
      ROLLBACK,
      4,
      keys.active(model),
      keys.history(model),
      keys.collecting(model, target),
      keys.switches(model),
      target,
      keys.activeChannel(),
      model,
    )
    .catch(collectingConflict)) as string | null;
  if (result === null) return undefined;
  return { previous: result || undefined };
}
