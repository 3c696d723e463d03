/**
 * The Redis key layout, in one place. Per-model control keys share a hash tag so a
 * model's pointer and history stay in one cluster slot; prediction buckets carry no
 * tag so they spread over the whole cluster.
 *
 *   <p>:{m:<model>}:active          string  active version id
 *   <p>:{m:<model>}:history         list    previously active versions, newest first
 *   <p>:{m:<model>}:switches        string  how many times the active version was switched
 *   <p>:active-changed              channel model name, published on every switch
 *   <p>:e:<model>:<version>:<enc>:<bucket>   hash  canonical key → msgpack prediction
 *   <p>:{m:<model>}:traffic:<enc>   zset    canonical key → how often it was asked
 *   <p>:{m:<model>}:v:<version>     hash    what precompute runs wrote for a version
 *   <p>:{m:<model>}:table-lock      string  the run building the model's next table (expires)
 *   <p>:{m:<model>}:gc:<version>    string  set while gc deletes the version (expires)
 *   <p>:runs                        zset    run id → creation time
 *   <p>:{r:<run>}:meta              hash    a precompute run's spec, state and counters
 *   <p>:{r:<run>}:done              set     indexes of the run's finished chunks
 *   <p>:{r:<run>}:keys:<i>          string  msgpack list of chunk i's keys (for the table builder)
 *   <p>:run-fp:<fingerprint>        string  id of the run started with this exact request
 *   <p>:audit                       stream  admin actions: who (token id), what, when
 *   <p>:audit:refused               stream  refused admin attempts (401/403), capped apart
 *   <p>:rl:<client>:<budget>:<w>    string  requests or misses of an API key in window w
 *   <p>:{m:<model>}:experiment      string  id of the model's running experiment
 *   <p>:{m:<model>}:experiments     hash    experiment id → JSON record (running and past)
 *   <p>:{m:<model>}:x:<id>:<arm>    hash    an experiment arm's tallies (lookups, hits, sums, bins)
 */
import { fnv1a32 } from "../model/hash.ts";

export class Keys {
  constructor(readonly prefix: string) {}

  active(model: string): string {
    return `${this.prefix}:{m:${model}}:active`;
  }

  history(model: string): string {
    return `${this.prefix}:{m:${model}}:history`;
  }

  /** Counts every switch of the active version (promote, rollback, experiment stop). */
  switches(model: string): string {
    return `${this.prefix}:{m:${model}}:switches`;
  }

  /** Published with the model name when a table is published. */
  tablesChannel(): string {
    return `${this.prefix}:tables-changed`;
  }

  /** Published when model folders were reloaded: every process rescans its models dir. */
  modelsChannel(): string {
    return `${this.prefix}:models-changed`;
  }

  activeChannel(): string {
    return `${this.prefix}:active-changed`;
  }

  /** Hash holding the bucket of entries `canonicalKey` belongs to. */
  bucket(
    model: string,
    version: string,
    encodingHash: string,
    canonicalKey: string,
    bucketBits: number,
  ): string {
    const bucket = fnv1a32(canonicalKey) >>> (32 - bucketBits);
    return `${this.prefix}:e:${model}:${version}:${encodingHash}:${bucket.toString(36)}`;
  }

  traffic(model: string, encodingHash: string): string {
    return `${this.prefix}:{m:${model}}:traffic:${encodingHash}`;
  }

  /** Versions of a model whose next table is rebuilt from Redis (table/rebuild-marks.ts). */
  tableRebuild(model: string): string {
    return `${this.prefix}:{m:${model}}:table-rebuild`;
  }

  /** Held while a run builds and publishes a model's next table: one build at a time. */
  tableLock(model: string): string {
    return `${this.prefix}:{m:${model}}:table-lock`;
  }

  /** Set while gc deletes a version: it cannot be made active meanwhile. */
  collecting(model: string, version: string): string {
    return `${this.prefix}:{m:${model}}:gc:${version}`;
  }

  versionMeta(model: string, version: string): string {
    return `${this.prefix}:{m:${model}}:v:${version}`;
  }

  runs(): string {
    return `${this.prefix}:runs`;
  }

  runMeta(run: string): string {
    return `${this.prefix}:{r:${run}}:meta`;
  }

  runDone(run: string): string {
    return `${this.prefix}:{r:${run}}:done`;
  }

  runChunkKeys(run: string, chunk: number): string {
    return `${this.prefix}:{r:${run}}:keys:${chunk}`;
  }

  /** The run started for one exact request, so an identical one is refused while it runs. */
  runFingerprint(fingerprint: string): string {
    return `${this.prefix}:run-fp:${fingerprint}`;
  }

  rateWindow(client: string, budget: string, window: number): string {
    return `${this.prefix}:rl:${client}:${budget}:${window}`;
  }

  /** Same hash tag as active/history: a stop that promotes is one script in one slot. */
  runningExperiment(model: string): string {
    return `${this.prefix}:{m:${model}}:experiment`;
  }

  experiments(model: string): string {
    return `${this.prefix}:{m:${model}}:experiments`;
  }

  experimentArm(model: string, id: string, arm: string): string {
    return `${this.prefix}:{m:${model}}:x:${id}:${arm}`;
  }

  audit(): string {
    return `${this.prefix}:audit`;
  }

  auditRefused(): string {
    return `${this.prefix}:audit:refused`;
  }

  /** Every bucket of one model version's entries (for SCAN when a version is collected). */
  bucketPattern(model: string, version: string): string {
    return `${this.prefix}:e:${model}:${version}:*`;
  }
}
