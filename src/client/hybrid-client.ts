/**
 * The hybrid pattern on the app's side: answer from a local lookup table first (offline,
 * no model on the device), fall back to the server for inputs the table does not cover,
 * and keep the table fresh with conditional requests and deltas. Browser-safe.
 */
import { LRUCache } from "lru-cache";
import type { Prediction } from "../model/decoding.ts";
import type { InputIssue } from "../model/encoding.ts";
import { applyDelta } from "../table/delta.ts";
import { InvalidInputError, LookupTable } from "./lookup-table.ts";

export interface HybridClientOptions {
  /** The predcache server, e.g. "https://predictions.example.com". */
  baseUrl: string;
  model: string;
  /** A table the app already holds (e.g. stored from an earlier session). */
  table?: LookupTable | undefined;
  /**
   * Server answers remembered for inputs the table lacks, or for any input while there is
   * no table (default 1,000; 0: none); forgotten when the version served changes.
   */
  fallbackCacheSize?: number;
  /** fetch to use (default globalThis.fetch). */
  fetch?: typeof fetch;
  /** Longest wait (ms, a whole number) the server may take for a live answer (default 2,000). */
  wait?: number;
  /**
   * Longest the client waits on the server (ms), for a reply or for more of one, before
   * failing the request with a RequestTimeoutError (default `wait` + 10,000). Waiting
   * again at each part received, a large table on a slow link is not cut short.
   */
  timeoutMs?: number;
  /**
   * Sent with every request: an API key (`X-API-Key` or `Authorization: Bearer …`) when
   * the server wants one, the client id (`X-Client-Id`) that puts the app in an
   * experiment's arm, whose version then answers from the table and from the server.
   */
  headers?: Record<string, string>;
}

export interface HybridAnswer {
  prediction: Prediction;
  /** "table": answered locally; "server:<source>": the server's tier; "cache": an earlier server answer. */
  source: string;
  key: string;
  /** The model version that answered. */
  version: string;
  outOfDistribution: boolean;
  /** The fields whose values the model has not seen (the API's outOfDistributionFields). */
  outOfDistributionFields: string[];
  /** Below the model's confidence bar (the API's lowConfidence). */
  lowConfidence: boolean;
  /**
   * While the model runs an experiment: its id and this client's arm (the server's reply
   * names it; a table answer has the arm the table listing named), to tie outcomes to arms.
   */
  experiment?: ExperimentArm;
}

/** An experiment and the arm a client is in, as the server names them. */
export interface ExperimentArm {
  id: string;
  arm: "control" | "candidate";
}

/**
 * "none": the active version has no table yet; the client asks the server meanwhile.
 * "unchanged" also when none is listed but the table held is of the version still served.
 */
export type RefreshOutcome = "unchanged" | "delta" | "full" | "none";

/**
 * The server is still computing the answer (it said 202): poll `jobUrl` (absolute; send
 * the client's headers with it) or ask again later.
 */
export class PendingAnswerError extends Error {
  override readonly name = "PendingAnswerError";
  constructor(readonly jobUrl: string | undefined) {
    super("the server is still computing this answer");
  }
}

/**
 * The server refused or failed (an HTTP error other than invalid input): its status, and
 * its error's `code` and `details` when it sent them (e.g. `redis_unavailable`,
 * `unauthorized`, `model_not_found`), with `retryAfter` (seconds) when it said when to come
 * back: what an app tells "retry later" from "wrong key" or "wrong model" by.
 */
export class ServerError extends Error {
  override readonly name = "ServerError";
  constructor(
    readonly what: string,
    readonly status: number,
    readonly code: string | undefined,
    serverMessage: string | undefined,
    readonly details: unknown,
    readonly retryAfter: number | undefined,
    readonly requestId: string | undefined,
  ) {
    super(
      `${what}: HTTP ${status}${code ? ` ${code}` : ""}${serverMessage ? `: ${serverMessage}` : ""}`,
    );
  }
}

/** The error of a reply that is not the answer asked for, read from its JSON if it has one. */
function serverError(what: string, reply: Reply): ServerError {
  let error: { code?: unknown; message?: unknown; details?: unknown } | undefined;
  try {
    error = JSON.parse(new TextDecoder().decode(reply.bytes))?.error;
  } catch {
    // not JSON (a proxy's page): the status alone
  }
  const retry = reply.headers.get("retry-after");
  const seconds = retry !== null && /^\d+$/.test(retry.trim()) ? Number(retry) : undefined;
  return new ServerError(
    what,
    reply.status,
    typeof error?.code === "string" ? error.code : undefined,
    typeof error?.message === "string" ? error.message : undefined,
    error?.details,
    seconds,
    reply.headers.get("x-request-id") ?? undefined,
  );
}

/** The server went silent for longer than the client's `timeoutMs`. */
export class RequestTimeoutError extends Error {
  override readonly name = "RequestTimeoutError";
  constructor(
    readonly what: string,
    readonly timeoutMs: number,
  ) {
    super(`${what}: the server sent nothing within ${timeoutMs} ms`);
  }
}

/**
 * The server could not be reached (refused, reset, no route, name not found): `cause` is
 * what fetch threw. Inputs the table covers are still answered locally.
 */
export class ServerUnreachableError extends Error {
  override readonly name = "ServerUnreachableError";
  constructor(
    readonly what: string,
    readonly url: string,
    cause: unknown,
  ) {
    const detail = (cause as { cause?: { code?: string } })?.cause?.code ?? String(cause);
    super(`${what}: cannot reach the server at ${url} (${detail})`, { cause });
  }
}

/** A reply read whole. */
interface Reply {
  status: number;
  headers: Headers;
  bytes: Uint8Array;
}

interface TableListing {
  activeVersion?: string | null;
  /** The version this client is answered by (its arm's in an experiment); older servers send none. */
  servedVersion?: string | null;
  /** This client's arm while an experiment runs; older servers send none. */
  experiment?: ExperimentArm;
  latest: { generation: string; checksum: string; encodingHash: string; url: string } | null;
}

/** Inputs the server reads as lookup options, not features: an app cannot pass them. */
const RESERVED = new Set(["wait", "version"]);

/**
 * What can be checked of an input with no table (and so no schema) at hand: a value the
 * query string cannot carry as the app means it (null, a list, an object, a boolean) is
 * refused here, as the table's encoder would refuse it, rather than sent as its String().
 */
function untypedIssues(input: Readonly<Record<string, unknown>>): InputIssue[] {
  if (typeof input !== "object" || input === null || Array.isArray(input))
    return [{ field: "", code: "wrong_type", message: "an input must be an object of features" }];
  const issues: InputIssue[] = [];
  for (const [field, value] of Object.entries(input)) {
    if (RESERVED.has(field))
      issues.push({ field, code: "unknown_field", message: `${field} is not an input` });
    else if (value === undefined || value === null)
      issues.push({ field, code: "missing", message: `${field} is required` });
    else if (!(typeof value === "string" || (typeof value === "number" && Number.isFinite(value))))
      issues.push({ field, code: "wrong_type", message: `${field} must be a string or a number` });
  }
  return issues;
}

/** A reply's JSON, or a clear error when it is not JSON (a proxy's HTML error page, say). */
function replyJson<T>(reply: Reply, what: string): T {
  try {
    return JSON.parse(new TextDecoder().decode(reply.bytes)) as T;
  } catch {
    throw new Error(`${what}: HTTP ${reply.status} with a body that is not JSON`);
  }
}

const ok = (reply: Reply) => reply.status >= 200 && reply.status < 300;

export class HybridClient {
  private current: LookupTable | undefined;
  /** The arm the last table listing named (a 304 keeps it: the listing varies by client). */
  private arm: ExperimentArm | undefined;
  /** The version the remembered server answers are of: a promote makes them stale. */
  private answersVersion: string | undefined;
  /** Server exchanges (lookups, listings) begun, counted: which of two was asked later. */
  private asked = 0;
  /** The exchange that told answersVersion: one begun before it is older news. */
  private answersToldBy = 0;
  /** The refresh running, if any: refreshes run one at a time, in the order asked. */
  private refreshing: Promise<unknown> = Promise.resolve();
  /** The listing's ETag when `current` was chosen from it: a 304 then means nothing changed. */
  private listingEtag: string | undefined;
  /** Remembered server answers, by the canonical key the server named. */
  private readonly fallback: LRUCache<string, HybridAnswer>;
  /**
   * With no table (so no encoder), a request's query as sent to the key the server named
   * for it: the key depends on the version's encoding, so it is forgotten with the answers.
   */
  private readonly keysOfQueries: LRUCache<string, string>;
  /** Whether server answers are remembered at all (fallbackCacheSize > 0). */
  private readonly remembers: boolean;
  /** Server requests under way, by query: concurrent lookups of one input share one. */
  private readonly asking = new Map<string, Promise<HybridAnswer>>();
  private readonly fetch: typeof fetch;
  /** Network requests made, by kind (for apps that meter, and for tests). */
  readonly requests = { predict: 0, table: 0, delta: 0, listing: 0 };

  constructor(private readonly options: HybridClientOptions) {
    if (options.table && options.table.header.model !== options.model)
      throw new Error(`the table is of model ${options.table.header.model}, not ${options.model}`);
    const { timeoutMs, wait, fallbackCacheSize = 1_000 } = options;
    if (timeoutMs !== undefined && !(timeoutMs > 0 && timeoutMs < 2 ** 31))
      throw new Error(`timeoutMs must be a positive number of ms, not ${timeoutMs}`);
    // Checked here, not refused by the server on every lookup the table does not cover.
    if (wait !== undefined && !(Number.isSafeInteger(wait) && wait >= 0))
      throw new Error(`wait must be a whole number of ms, 0 or more, not ${wait}`);
    if (!(Number.isSafeInteger(fallbackCacheSize) && fallbackCacheSize >= 0))
      throw new Error(
        `fallbackCacheSize must be a whole number, 0 or more, not ${fallbackCacheSize}`,
      );
    this.current = options.table;
    this.remembers = fallbackCacheSize > 0;
    this.fallback = new LRUCache({ max: Math.max(1, fallbackCacheSize) });
    this.keysOfQueries = new LRUCache({ max: Math.max(1, fallbackCacheSize) });
    const send = options.fetch ?? globalThis.fetch.bind(globalThis);
    const headers = options.headers ?? {};
    // Every request carries the app's headers (the request's own, if any, win).
    this.fetch = (input, init) =>
      send(input, {
        ...init,
        headers: { ...headers, ...(init?.headers as Record<string, string>) },
      });
  }

  /** The table in use (undefined before the first successful refresh). */
  get table(): LookupTable | undefined {
    return this.current;
  }

  private url(path: string): string {
    return `${this.options.baseUrl.replace(/\/$/, "")}${path}`;
  }

  /**
   * Every request the client makes: the reply and its body, read whole, or a
   * RequestTimeoutError once the server has sent nothing for `timeoutMs` (a hung server
   * would otherwise hold the caller, and every refresh queued behind it, forever).
   */
  private async send(
    what: string,
    url: string,
    headers: Record<string, string> = {},
  ): Promise<Reply> {
    const ms = this.options.timeoutMs ?? (this.options.wait ?? 2_000) + 10_000;
    const controller = new AbortController();
    let reader: ReadableStreamDefaultReader<Uint8Array> | undefined;
    let timer: ReturnType<typeof setTimeout> | undefined;
    let expire: (error: Error) => void = () => {};
    // Raced as well as signalled: a fetch given in the options may not heed the signal.
    const expired = new Promise<never>((_, reject) => {
      expire = reject;
    });
    const arm = () => {
      clearTimeout(timer);
      timer = setTimeout(() => {
        const error = new RequestTimeoutError(what, ms);
        controller.abort(error);
        reader?.cancel(error).catch(() => {});
        expire(error);
      }, ms);
    };
    const read = async (): Promise<Reply> => {
      let response: Response;
      try {
        response = await this.fetch(url, { headers, signal: controller.signal });
      } catch (error) {
        // Our own timeout aborted it: that error wins the race below.
        if (controller.signal.aborted) throw error;
        throw new ServerUnreachableError(what, url, error);
      }
      const parts: Uint8Array[] = [];
      let size = 0;
      reader = response.body?.getReader();
      for (;;) {
        arm();
        const part = await reader?.read();
        if (!part || part.done) break;
        parts.push(part.value);
        size += part.value.length;
      }
      const bytes = new Uint8Array(size);
      let at = 0;
      for (const part of parts) {
        bytes.set(part, at);
        at += part.length;
      }
      return { status: response.status, headers: response.headers, bytes };
    };
    arm();
    try {
      return await Promise.race([read(), expired]);
    } finally {
      clearTimeout(timer);
    }
  }

  /**
   * Brings the local table up to date: nothing when it is current, a delta when the
   * server has one from our generation, else the full table. A failed, truncated or
   * corrupt download keeps the old table.
   *
   * @example
   *   const client = new HybridClient({ baseUrl: "http://127.0.0.1:8787", model: "flight-delay" });
   *   await client.refresh();
   *   await client.predict({ origin: "SFO", destination: "LAX", hour: 7, dayOfWeek: 1 });
   */
  refresh(): Promise<RefreshOutcome> {
    // One at a time: two overlapping downloads could otherwise install the older last.
    const run = this.refreshing.then(
      () => this.refreshNow(),
      () => this.refreshNow(),
    );
    this.refreshing = run.catch(() => undefined);
    return run;
  }

  /**
   * Forgets remembered server answers of any other version than `version`, which the
   * exchange begun `told`-th says is served; unless an exchange begun later said another
   * (a slow answer from before a promote must not bring the old version back): then
   * false, and what it says is not to be remembered.
   */
  private answersOf(version: string, told: number): boolean {
    if (version === this.answersVersion) {
      this.answersToldBy = Math.max(this.answersToldBy, told);
      return true;
    }
    if (told < this.answersToldBy) return false;
    this.fallback.clear();
    this.keysOfQueries.clear();
    this.answersVersion = version;
    this.answersToldBy = told;
    return true;
  }

  private async refreshNow(): Promise<RefreshOutcome> {
    this.requests.listing++;
    const told = ++this.asked;
    const conditional = this.current && this.listingEtag;
    const listing = await this.send(
      "listing tables",
      this.url(`/v1/models/${this.options.model}/tables`),
      conditional ? { "If-None-Match": conditional } : {},
    );
    if (listing.status === 304 && conditional) return "unchanged";
    if (!ok(listing)) throw serverError("listing tables", listing);
    const etag = listing.headers.get("etag") ?? undefined;
    const { activeVersion, servedVersion, experiment, latest } = replyJson<TableListing>(
      listing,
      "listing tables",
    );
    this.arm = experiment;
    const version = servedVersion ?? activeVersion;
    if (version) this.answersOf(version, told);
    const held = this.current;
    if (!latest) {
      // No table listed, yet the held one is still of the version served (an API process
      // whose tables folder is empty, say): its answers are still the server's.
      if (held && version && held.header.modelVersion === version) {
        this.listingEtag = etag;
        return "unchanged";
      }
      // The active version has no table yet: the held one answers for an older version.
      this.current = undefined;
      this.listingEtag = undefined;
      return "none";
    }
    if (held?.checksum === latest.checksum) {
      this.listingEtag = etag;
      return "unchanged";
    }
    if (held && held.header.encodingHash === latest.encodingHash) {
      try {
        this.requests.delta++;
        const response = await this.send(
          "downloading a delta",
          this.url(`${latest.url}/delta?from=${held.header.generation}`),
        );
        if (ok(response)) {
          const bytes = await applyDelta(held.parsed, response.bytes);
          const table = await LookupTable.open(bytes, { model: this.options.model });
          if (table.checksum === latest.checksum) {
            this.current = table;
            this.listingEtag = etag;
            return "delta";
          }
        }
      } catch {
        // Any mismatch, or a delta the server was too slow to send: the full download.
      }
    }
    this.requests.table++;
    const response = await this.send("downloading the table", this.url(latest.url));
    if (!ok(response)) throw serverError("downloading the table", response);
    const table = await LookupTable.open(response.bytes, {
      model: this.options.model,
    });
    if (table.checksum !== latest.checksum)
      throw new Error("the downloaded table is not the one listed");
    this.current = table; // one assignment: lookups see the old table or the new one
    this.listingEtag = etag;
    return "full";
  }

  /** Local table first, then the server; throws InvalidInputError for invalid input. */
  async predict(input: Readonly<Record<string, unknown>>): Promise<HybridAnswer> {
    const local = this.current?.lookup(input);
    if (local?.status === "invalid") throw new InvalidInputError(local.issues);
    if (local?.status === "hit") {
      return {
        prediction: local.prediction,
        source: "table",
        key: local.key,
        version: (this.current as LookupTable).header.modelVersion,
        outOfDistribution: local.outOfDistribution.length > 0,
        outOfDistributionFields: local.outOfDistribution,
        lowConfidence: local.lowConfidence,
        ...(this.arm ? { experiment: this.arm } : {}),
      };
    }
    if (!local) {
      const issues = untypedIssues(input);
      if (issues.length > 0) throw new InvalidInputError(issues);
    }
    // Fields in name order: the same input is the same query, whatever order it came in.
    const query = new URLSearchParams();
    for (const name of Object.keys(input).sort()) query.set(name, String(input[name]));
    const asked = query.toString();
    const key = local ? local.key : this.keysOfQueries.get(asked);
    const remembered = key === undefined ? undefined : this.fallback.get(key);
    if (remembered) return { ...remembered, source: "cache" };
    const under = this.asking.get(asked);
    if (under) return { ...(await under) };
    const asking = this.ask(query, asked, local !== undefined);
    this.asking.set(asked, asking);
    try {
      return await asking;
    } finally {
      this.asking.delete(asked);
    }
  }

  /** Asks the server (`asked`: the query without `wait`) and remembers its answer. */
  private async ask(
    query: URLSearchParams,
    asked: string,
    withTable: boolean,
  ): Promise<HybridAnswer> {
    this.requests.predict++;
    const told = ++this.asked;
    query.set("wait", String(this.options.wait ?? 2_000));
    const response = await this.send(
      "asking the server",
      this.url(`/v1/models/${this.options.model}/predict?${query}`),
    );
    // An error other than invalid input or pending: whatever its body (a proxy's page too).
    if (![200, 202, 422].includes(response.status))
      throw serverError("asking the server", response);
    const body = replyJson<{
      prediction?: Prediction;
      source?: string;
      key?: string;
      version?: string;
      outOfDistribution?: boolean;
      outOfDistributionFields?: string[];
      lowConfidence?: boolean;
      experiment?: ExperimentArm;
      job?: { url?: string };
      error?: { code: string; message: string; details?: { issues?: InputIssue[] } };
    }>(response, "asking the server");
    if (response.status === 422) throw new InvalidInputError(body.error?.details?.issues ?? []);
    if (response.status === 202)
      throw new PendingAnswerError(body.job?.url ? this.url(body.job.url) : undefined);
    if (!body.prediction || !body.key || !body.version)
      throw new Error("asking the server: HTTP 200 without a prediction, key and version");
    const answer: HybridAnswer = {
      prediction: body.prediction,
      source: `server:${body.source}`,
      key: body.key,
      version: body.version,
      outOfDistribution: body.outOfDistribution ?? false,
      outOfDistributionFields: body.outOfDistributionFields ?? [],
      lowConfidence: body.lowConfidence ?? false,
      ...(body.experiment ? { experiment: body.experiment } : {}),
    };
    // An answer of another version than those remembered: the server switched versions
    // (unless a lookup asked later already said so of another: this one is then stale).
    if (!this.answersOf(body.version, told) || !this.remembers) return answer;
    this.fallback.set(body.key, answer);
    if (!withTable) this.keysOfQueries.set(asked, body.key);
    return answer;
  }
}
