/**
 * Hot lookups: the same lookup URL, asked again, answered on node:http before Hono builds
 * anything for it. Most requests repeat a few inputs, often with the very same URL; for
 * one answered from the cache, what its answer depends on is remembered by its URL
 * (model version, key, validators). When that URL comes again and none of it can have
 * changed — same version served, no API keys, not a conditional request — the answer is
 * read from L1 or Redis and written to node's response, with what the app's route would
 * record (./served-hit.ts). While an experiment runs, a URL has an answer per arm, and
 * the client's arm (by its client id, as ./experiment-routing.ts places it) picks one.
 * Anything else (a miss, an error, Redis away, two client ids) is handed to the app,
 * which answers as it always does.
 *
 * Measured (bench:shadow, loopback): with the app answering every lookup of an
 * experiment, L1 hits ran at 0.50× the rate they ran at with no experiment; answered
 * here, at 0.76–0.80× (the arm's placement, tallies and a larger reply).
 *
 * Measured (bench:serving, server CPU per request): through Hono an L1 hit cost 7–9.5 µs
 * more than a Hono hello-world, most of it Hono's request, context and Response objects
 * and @hono/node-server's translation; ahead of Hono, about 1–3 µs more.
 */
import type { IncomingMessage, ServerResponse } from "node:http";
import { MemoryCache } from "../cache/memory.ts";
import type { Hit } from "../cache/tiers.ts";
import { armOf, otherArm, versionOf } from "../experiment/experiment.ts";
import { samePrediction } from "../model/decoding.ts";
import type { ModelVersion } from "../model/registry.ts";
import type { ApiDeps } from "./deps.ts";
import { markEntered, type NodeListener } from "./edge.ts";
import type { Assignment, Routed } from "./experiment-routing.ts";
import { addHeader, writeReply } from "./headers.ts";
import { URL_MAX } from "./lookup-query.ts";
import { type ArmLabel, type CacheScope, hitHeaders, type MaxAge } from "./reply.ts";
import { logAnswered, noteOf } from "./request-log.ts";
import { servedVersion } from "./routes/models.ts";
import { hitReplyText, recordHit } from "./served-hit.ts";

/** What a lookup URL's answer depends on, as its first answer from the cache found it. */
export interface HotLookup {
  model: ModelVersion;
  /** The version named in the URL (?version=), or undefined: the active one then. */
  pinned: string | undefined;
  key: string;
  outOfDistribution: readonly string[];
  etag: string;
  maxAge: MaxAge;
  scope: CacheScope;
  /** The experiment arm that answered, and the input as sent (for its shadow comparison). */
  assignment?: Assignment;
  input?: Record<string, unknown>;
}

/** One answer a URL may get: with no experiment, or in one experiment's arm. */
interface Answer {
  model: ModelVersion;
  key: string;
  outOfDistribution: readonly string[];
  /** The arm's label, and the input for its shadow comparison (experiment answers only). */
  label?: ArmLabel;
  input?: Record<string, unknown>;
  /** The reply's own headers (validators, type), as node's flat name/value list. */
  head: string[];
  /** The key's id in L1 (made once, not per request). */
  memoryId: string;
  /** The last reply written, and what it was made of (the same while the entry stays cached). */
  reply?: { prediction: Hit["prediction"]; source: Hit["source"]; text: string; head: string[] };
}

/** A URL's answers: "" with no experiment, else "<experiment id>|<arm>". */
interface Entry {
  name: string;
  pinned: string | undefined;
  answers: Map<string, Answer>;
}

/** The answer a request gets, and how it was routed (its arm, when an experiment runs). */
interface Current {
  answer: Answer;
  routed: Routed;
}

/** A request the front has entered, waiting for Redis. */
interface Waiter {
  incoming: IncomingMessage;
  outgoing: ServerResponse;
  app: NodeListener;
  started: number;
  routed: Routed;
}

/** How many URLs are remembered (at most URL_MAX characters each, as parsed queries are). */
const ENTRIES_MAX = 4096;

/** A Redis read the front made for a request it then handed on: nothing found, or the error. */
interface FrontRead {
  model: ModelVersion;
  key: string;
  error: unknown;
}
const READ = Symbol("redis read by the hot front");
type WithRead = IncomingMessage & { [READ]?: FrontRead };

/**
 * Hands a request the front has entered (its hooks have run) to the app, with what its
 * Redis read gave: the app does not read again (a second wait on a frozen Redis would
 * double the command timeout the request is bound by).
 */
function handOn(
  incoming: IncomingMessage,
  outgoing: ServerResponse,
  app: NodeListener,
  read?: FrontRead,
): void {
  logAnswered(outgoing);
  markEntered(incoming);
  if (read) (incoming as WithRead)[READ] = read;
  app(incoming, outgoing);
}

/**
 * For the app's miss path: whether the front already read this request's lookup (same
 * version and key) from Redis and found nothing ({ error: undefined }) or failed.
 */
export function readByFront(
  incoming: IncomingMessage | undefined,
  model: ModelVersion,
  key: string,
): { error: unknown } | undefined {
  const read = (incoming as WithRead | undefined)?.[READ];
  return read && read.model === model && read.key === key ? read : undefined;
}

/**
 * Requests whose Host and target @hono/node-server takes as they are; any other (an
 * absolute-form, encoded, dot-segment or fragment target, an unusual Host) goes to the
 * app, which checks them (a Host it refuses is a 400 there).
 */
const PLAIN_HOST = /^[a-z0-9._-]+(?::(?:[1-5]\d{3,4}|[6-9]\d{3}))?$/;
const PLAIN_TARGET = /^\/[!$&-;=?-[\]_a-z~]*$/;
const DOT_SEGMENT = /\/\.\.?(?:[/?]|$)/;

/** A Host the adapter takes as it is (test/unit/plain-request.test.ts holds it to that). */
export function isPlainHost(host: string | undefined): boolean {
  return host !== undefined && PLAIN_HOST.test(host);
}

/** A target as the adapter takes it (checked once, when a URL is remembered). */
export function isPlainTarget(url: string): boolean {
  return PLAIN_TARGET.test(url) && !DOT_SEGMENT.test(url);
}

export class HotLookups {
  /** By URL; past ENTRIES_MAX the oldest goes (a plain Map: cheaper to read than an LRU). */
  private readonly entries = new Map<string, Entry>();

  constructor(private readonly deps: ApiDeps) {}

  /** Remembers what `url` (a GET lookup just answered from the cache) depends on. */
  remember(url: string, lookup: HotLookup): void {
    // Not with API keys: each request's key and budget are checked by the app.
    if (this.deps.access || url.length > URL_MAX || !isPlainTarget(url)) return;
    const { model, key, assignment } = lookup;
    const slot = assignment ? `${assignment.experiment.id}|${assignment.arm}` : "";
    let entry = this.entries.get(url);
    const known = entry?.answers.get(slot);
    if (known && known.model === model && known.key === key) return;
    if (!entry || entry.name !== model.name || entry.pinned !== lookup.pinned) {
      this.entries.delete(url);
      if (this.entries.size >= ENTRIES_MAX) {
        const oldest = this.entries.keys().next();
        if (!oldest.done) this.entries.delete(oldest.value);
      }
      entry = { name: model.name, pinned: lookup.pinned, answers: new Map() };
      this.entries.set(url, entry);
    }
    // Answers of experiments that have ended go with the next one remembered.
    if (assignment)
      for (const other of entry.answers.keys())
        if (other !== "" && !other.startsWith(`${assignment.experiment.id}|`))
          entry.answers.delete(other);
    const own = hitHeaders(lookup.etag, lookup.maxAge, "application/json", lookup.scope);
    entry.answers.set(slot, {
      model,
      key,
      outOfDistribution: lookup.outOfDistribution,
      ...(assignment ? { label: assignment.label } : {}),
      ...(assignment && lookup.input ? { input: lookup.input } : {}),
      head: Object.entries(own).flat(),
      memoryId: MemoryCache.id(model.name, model.version, key),
    });
  }

  /** node:http's first listener: answers a hot lookup from the cache, else hands on to `app`. */
  readonly front = (
    incoming: IncomingMessage,
    outgoing: ServerResponse,
    app: NodeListener,
    enter: (incoming: IncomingMessage, outgoing: ServerResponse, answering?: boolean) => boolean,
  ): void => {
    let current: Current | undefined;
    try {
      current = this.current(incoming);
    } catch (error) {
      this.deps.log.error({ err: error }, "hot lookup check failed; the app answers");
    }
    if (!current) {
      app(incoming, outgoing);
      return;
    }
    const { answer, routed } = current;
    const started = performance.now();
    try {
      // Hooks run once, here: the request is logged and counted whoever answers it. None
      // answers a GET; if one did, the app (which runs them again) gives that answer.
      if (enter(incoming, outgoing, true)) {
        app(incoming, outgoing);
        return;
      }
      const note = noteOf(incoming);
      if (note) {
        note.model = answer.model.name;
        note.version = answer.model.version;
      }
      const local = this.deps.tiers.withoutRedis(answer.model, answer.key, answer.memoryId);
      if (local) {
        this.answer(incoming, outgoing, answer, routed, local, started);
        logAnswered(outgoing);
        return;
      }
    } catch (error) {
      this.failed(incoming, outgoing, app, error);
      return;
    }
    this.fromRedis(answer, { incoming, outgoing, app, started, routed });
  };

  /**
   * Requests waiting on a Redis read, per answer: one read and one callback for all of
   * them, not a promise chain each (the tiers share the read across answers of one key).
   */
  private readonly waiting = new Map<Answer, Waiter[]>();

  private fromRedis(answer: Answer, waiter: Waiter): void {
    const queued = this.waiting.get(answer);
    if (queued) {
      queued.push(waiter);
      return;
    }
    const waiters = [waiter];
    this.waiting.set(answer, waiters);
    const { model, key } = answer;
    this.deps.tiers.fromRedis(model, key).then(
      (hit) => {
        this.waiting.delete(answer);
        for (const { incoming, outgoing, app, started, routed } of waiters) {
          try {
            if (hit) {
              // Answered even to a client gone meanwhile: recorded as the app records it.
              const gone = outgoing.destroyed;
              this.answer(incoming, outgoing, answer, routed, hit, started);
              logAnswered(outgoing, gone);
            } else handOn(incoming, outgoing, app, { model, key, error: undefined });
          } catch (error) {
            this.failed(incoming, outgoing, app, error);
          }
        }
      },
      (error: unknown) => {
        this.waiting.delete(answer);
        // Redis away: the app says so (503), as it would have, without reading again.
        for (const { incoming, outgoing, app } of waiters)
          handOn(incoming, outgoing, app, { model, key, error });
      },
    );
  }

  /** An unexpected error on the way: the app answers instead (or the reply is cut off). */
  private failed(
    incoming: IncomingMessage,
    outgoing: ServerResponse,
    app: NodeListener,
    error: unknown,
  ): void {
    this.deps.log.error({ err: error }, "hot lookup failed; the app answers");
    if (outgoing.headersSent) {
      logAnswered(outgoing);
      outgoing.destroy();
    } else handOn(incoming, outgoing, app);
  }

  /** The remembered answer of this request, if it may be answered as remembered. */
  private current(incoming: IncomingMessage): Current | undefined {
    // HEAD, and a conditional request (304 or not), take the app's route.
    if (incoming.method !== "GET" || incoming.headers["if-none-match"] !== undefined) return;
    const url = incoming.url;
    if (url === undefined || url.length > URL_MAX) return;
    const entry = this.entries.get(url);
    if (!entry) return;
    if (!isPlainHost(incoming.headers.host)) return;
    const { name, pinned, answers } = entry;
    // Another version served now (promoted, reloaded, rolled back): the app answers, and
    // the URL is remembered again with it (the old version is not kept alive here).
    const served = servedVersion(this.deps, name, pinned);
    // While an experiment runs, the client picks the version (a pinned one stays out).
    const running = pinned === undefined ? this.deps.experiments?.running.get(name) : undefined;
    if (!running) {
      const answer = answers.get("");
      if (!answer) return;
      if (served !== answer.model) {
        answers.delete("");
        return;
      }
      return { answer, routed: { model: answer.model } };
    }
    // The app's route refuses what it must (no version served, two client ids).
    if (!served) return;
    // One value, no list (repeated lines come joined with commas): else the app's route
    // reads it (./experiment-routing.ts), as clientIdFrom does.
    const header = incoming.headers[this.deps.settings.clientIdHeader];
    if (Array.isArray(header) || header?.includes(",")) return;
    const client = header?.trim() || undefined;
    const arm = armOf(running, client);
    const slot = `${running.id}|${arm}`;
    const answer = answers.get(slot);
    if (!answer) return;
    const registry = this.deps.registry;
    // The arm's version not loaded (yet): the app's route says what answers then.
    if (registry.get(name, versionOf(running, arm)) !== answer.model) {
      answers.delete(slot);
      return;
    }
    const assignment: Assignment = {
      experiment: running,
      arm,
      anonymous: !client,
      label: answer.label ?? { id: running.id, arm },
      other: registry.get(name, versionOf(running, otherArm(arm))),
    };
    const routed: Routed = { model: answer.model, assignment };
    if (answer.input) routed.input = answer.input;
    return { answer, routed };
  }

  private answer(
    incoming: IncomingMessage,
    outgoing: ServerResponse,
    answer: Answer,
    routed: Routed,
    hit: Hit,
    started: number,
  ): void {
    const { model, key, outOfDistribution } = answer;
    recordHit(this.deps, routed, key, hit, outOfDistribution, started, incoming);
    // Answers differ by client while an experiment runs (as the app's route says; here,
    // not before: a request handed on gets it from the app's route).
    if (routed.assignment) addHeader(incoming, "Vary", this.deps.settings.clientIdHeader, true);
    let reply = answer.reply;
    // A read from Redis decodes a new object each time, holding the same outputs while
    // the entry stays stored: compared by value, its reply is not made again.
    if (
      reply?.source !== hit.source ||
      (reply.prediction !== hit.prediction && !samePrediction(reply.prediction, hit.prediction))
    ) {
      const text = hitReplyText(model, key, hit, outOfDistribution, answer.label);
      const length = String(Buffer.byteLength(text));
      reply = { ...hit, text, head: [...answer.head, "Content-Length", length] };
      answer.reply = reply;
    }
    writeReply(incoming, outgoing, 200, reply.head, reply.text);
  }
}
