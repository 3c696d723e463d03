/**
 * Experiments in Redis, per model: the running one's id and every record, in one hash
 * tag with the model's active pointer and history. Start, change and stop are scripts,
 * so a stop that promotes switches the pointer and ends the experiment in one step, and
 * every process hears of each change on the active-version channel.
 */
import type { Keys } from "../cache/keys.ts";
import { PredcacheError } from "../errors.ts";
import { HISTORY_CAP } from "../model/active.ts";
import type { Redis } from "../redis/connection.ts";
import type { Experiment } from "./experiment.ts";

// KEYS: running id, records, then the gc marks of control and candidate (a version gc is
// deleting is not served). ARGV: id, record JSON, channel, model.
const START = `
local running = redis.call('GET', KEYS[1])
if running then return {'running', running} end
if redis.call('EXISTS', KEYS[3]) == 1 or redis.call('EXISTS', KEYS[4]) == 1 then
  return {'collecting', ''}
end
if redis.call('HEXISTS', KEYS[2], ARGV[1]) == 1 then return {'exists', ARGV[1]} end
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
redis.call('SET', KEYS[1], ARGV[1])
redis.call('PUBLISH', ARGV[3], ARGV[4])
return {'ok', ARGV[1]}`;

// KEYS: running id, records. ARGV: id, record JSON, channel, model, the record as read.
// 0: not running; -2: changed since it was read (the caller reads again).
const UPDATE = `
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if redis.call('HGET', KEYS[2], ARGV[1]) ~= ARGV[5] then return -2 end
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
redis.call('PUBLISH', ARGV[3], ARGV[4])
return 1`;

// KEYS: running id, records, active, history, the gc mark of the version to make active,
// the switch count.
// ARGV: id, record JSON, channel, model, version to make active ('' to leave the
// pointer), history cap, the record as read. -2: changed since it was read.
const STOP = `
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if redis.call('HGET', KEYS[2], ARGV[1]) ~= ARGV[7] then return -2 end
if ARGV[5] ~= '' and redis.call('EXISTS', KEYS[5]) == 1 then return -1 end
if ARGV[5] ~= '' then
  local previous = redis.call('GET', KEYS[3])
  redis.call('INCR', KEYS[6])
  redis.call('SET', KEYS[3], ARGV[5])
  if previous and previous ~= ARGV[5] then
    redis.call('LPUSH', KEYS[4], previous)
    redis.call('LTRIM', KEYS[4], 0, tonumber(ARGV[6]) - 1)
  end
end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
redis.call('PUBLISH', ARGV[3], ARGV[4])
return 1`;

/** What a change of a running experiment came to. */
export type Written = "ok" | "ended" | "changed";

function written(reply: unknown): Written {
  return reply === 1 ? "ok" : reply === -2 ? "changed" : "ended";
}

function gcConflict(): PredcacheError {
  return new PredcacheError(
    "conflict",
    "gc is deleting a version this would serve (it is outside what retention keeps)",
  );
}

export class ExperimentStore {
  constructor(
    private readonly redis: Redis,
    private readonly keys: Keys,
  ) {}

  async start(experiment: Experiment): Promise<void> {
    const { model, control, candidate } = experiment;
    const [status, id] = (await this.script(START, experiment, [
      this.keys.collecting(model, control),
      this.keys.collecting(model, candidate),
    ])) as [string, string];
    if (status === "collecting") throw gcConflict();
    if (status === "running")
      throw new PredcacheError(
        "conflict",
        `model ${experiment.model} already runs experiment ${id}: stop it first`,
        { running: id },
      );
    if (status === "exists")
      throw new PredcacheError("conflict", `an experiment named ${id} existed already`, { id });
  }

  /**
   * Saves a running experiment's changed split over the record `read` (as record() gave
   * it): "changed" when another change was saved since, "ended" when it is not running.
   */
  async update(experiment: Experiment, read: string): Promise<Written> {
    return written(await this.script(UPDATE, experiment, [], [read]));
  }

  /**
   * Ends a running experiment over the record `read`, making `activate` the active version
   * in the same step.
   */
  async stop(experiment: Experiment, activate: string | undefined, read: string): Promise<Written> {
    const { model } = experiment;
    const done = await this.script(
      STOP,
      experiment,
      [
        this.keys.active(model),
        this.keys.history(model),
        this.keys.collecting(model, activate ?? ""),
        this.keys.switches(model),
      ],
      [activate ?? "", HISTORY_CAP, read],
    );
    if (done === -1) throw gcConflict();
    return written(done);
  }

  /**
   * Runs one of the scripts above. They share a layout: KEYS running id, records (then
   * `keys`); ARGV id, record JSON, channel, model (then `args`).
   */
  private script(
    lua: string,
    experiment: Experiment,
    keys: string[] = [],
    args: (string | number)[] = [],
  ): Promise<unknown> {
    const { model } = experiment;
    return this.redis.eval(
      lua,
      2 + keys.length,
      this.keys.runningExperiment(model),
      this.keys.experiments(model),
      ...keys,
      experiment.id,
      JSON.stringify(experiment),
      this.keys.activeChannel(),
      model,
      ...args,
    );
  }

  async runningId(model: string): Promise<string | undefined> {
    return (await this.redis.get(this.keys.runningExperiment(model))) ?? undefined;
  }

  async get(model: string, id: string): Promise<Experiment | undefined> {
    return (await this.record(model, id))?.experiment;
  }

  /** An experiment and its record as stored (what update and stop compare with). */
  async record(
    model: string,
    id: string,
  ): Promise<{ experiment: Experiment; read: string } | undefined> {
    const json = await this.redis.hget(this.keys.experiments(model), id);
    return json ? { experiment: JSON.parse(json) as Experiment, read: json } : undefined;
  }

  /** The running experiment, if any. */
  async running(model: string): Promise<Experiment | undefined> {
    const id = await this.runningId(model);
    return id ? this.get(model, id) : undefined;
  }

  /** Every experiment of the model, newest first. */
  async list(model: string): Promise<Experiment[]> {
    const all = await this.redis.hvals(this.keys.experiments(model));
    return all
      .map((json) => JSON.parse(json) as Experiment)
      .sort((a, b) => b.startedAt.localeCompare(a.startedAt));
  }
}
