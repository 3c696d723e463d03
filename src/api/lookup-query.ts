/**
 * The parsed query of a single lookup (GET …/predict?…), remembered by its raw request
 * URL, with the encodings made of it per model version. Parsing and encoding are pure
 * functions of the URL and the version's encoder, and the hottest inputs repeat the very
 * same URL: on an L1 hit they cost more than the lookup itself. Bounded by entries; long
 * URLs are parsed every time rather than kept.
 */
import type { IncomingMessage } from "node:http";
import type { Context } from "hono";
import { LRUCache } from "lru-cache";
import type { EncodeOutcome } from "../model/encoding.ts";
import { RESERVED_NAMES } from "../model/manifest.ts";
import type { ModelVersion } from "../model/registry.ts";

/** Query parameters that are not features. */
const RESERVED_PARAMETERS = new Set<string>(RESERVED_NAMES);

/** Longest URL remembered (characters); longer ones are parsed per request. */
export const URL_MAX = 1024;

function decodable(url: string): boolean {
  const start = url.indexOf("?");
  if (start === -1 || !url.includes("%", start)) return true;
  for (const part of url.slice(start + 1).split("&")) {
    try {
      decodeURIComponent(part);
    } catch {
      return false;
    }
  }
  return true;
}

export class LookupQuery {
  /** The raw features: one string per parameter, or all of a repeated one. */
  readonly features: Record<string, string | string[]>;
  readonly version: string | undefined;
  readonly wait: string | undefined;
  /** Reserved parameters (version, wait) given more than once: which one is meant is unclear. */
  readonly repeated: string[] = [];
  /**
   * Some part of the query is not valid percent-encoding (a lone %, or bytes that are not
   * UTF-8, as %ff): Hono keeps such a part as written, which would make it a value.
   */
  readonly malformed: boolean;
  private readonly encodings = new WeakMap<ModelVersion, EncodeOutcome>();

  constructor(url: string) {
    // Read with URLSearchParams (as Hono reads queries: + is a space), into a record with
    // no prototype: a parameter named "__proto__", or with no name at all, is a field
    // like any other (unknown, so refused), where an object literal would drop it.
    // Up to a fragment ("#…"), which is no part of the query (as Hono reads it too).
    const fragment = url.indexOf("#");
    const target = fragment === -1 ? url : url.slice(0, fragment);
    const query = target.indexOf("?");
    const search = query === -1 ? "" : target.slice(query + 1);
    const all: Record<string, string[]> = Object.create(null);
    for (const [name, value] of new URLSearchParams(search)) {
      const values = all[name];
      if (values) values.push(value);
      else all[name] = [value];
    }
    this.features = Object.create(null);
    for (const name of Object.keys(all)) {
      const values = all[name] as string[];
      if (!RESERVED_PARAMETERS.has(name))
        this.features[name] = values.length === 1 ? (values[0] as string) : values;
      else if (values.length > 1) this.repeated.push(name);
    }
    this.version = all.version?.[0];
    this.wait = all.wait?.[0];
    this.malformed = !decodable(target);
  }

  /** The features encoded for `model` (made once per version). */
  encode(model: ModelVersion): EncodeOutcome {
    let outcome = this.encodings.get(model);
    if (!outcome) {
      outcome = model.encoder.encode(this.features);
      this.encodings.set(model, outcome);
    }
    return outcome;
  }
}

export class LookupQueries {
  private readonly parsed: LRUCache<string, LookupQuery>;

  constructor(maxEntries = 4096) {
    this.parsed = new LRUCache({ max: maxEntries });
  }

  of(c: Context): LookupQuery {
    // On node:http the URL as received (path and query) is at hand without building one.
    const incoming = (c.env as { incoming?: IncomingMessage } | undefined)?.incoming;
    const url = incoming?.url ?? c.req.url;
    if (url.length > URL_MAX) return new LookupQuery(url);
    let query = this.parsed.get(url);
    if (!query) {
      query = new LookupQuery(url);
      this.parsed.set(url, query);
    }
    return query;
  }
}
