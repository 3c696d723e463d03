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
  /** Server answers remembered for inputs the table lacks (default 1,000). */
  fallbackCacheSize?: number;
  /** fetch to use (default globalThis.fetch). */
  fetch?: typeof fetch;
  /** Longest wait (ms) the server may take for a live answer (default 2,000). */
  wait?: number;
}

export interface HybridAnswer {
  prediction: Prediction;
  /** "table": answered locally; "server:<source>": the server's tier; "cache": an earlier server answer. */
  source: string;
  key: string;
  outOfDistribution: boolean;
}

export type RefreshOutcome = "unchanged" | "delta" | "full" | "none";

interface TableListing {
  latest: { generation: string; checksum: string; encodingHash: string; url: string } | null;
}

export class HybridClient {
  private current: LookupTable | undefined;
  /** The listing's ETag when `current` was chosen from it: a 304 then means nothing changed. */
  private listingEtag: string | undefined;
  private readonly fallback: LRUCache<string, HybridAnswer>;
  private readonly fetch: typeof fetch;
  /** Network requests made, by kind (for apps that meter, and for tests). */
  readonly requests = { predict: 0, table: 0, delta: 0, listing: 0 };

  constructor(private readonly options: HybridClientOptions) {
    this.current = options.table;
    this.fallback = new LRUCache({ max: options.fallbackCacheSize ?? 1_000 });
    this.fetch = options.fetch ?? globalThis.fetch.bind(globalThis);
  }

  /** The table in use (undefined before the first successful refresh). */
  get table(): LookupTable | undefined {
    return this.current;
  }

  private url(path: string): string {
    return `${this.options.baseUrl.replace(/\/$/, "")}${path}`;
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
  async refresh(): Promise<RefreshOutcome> {
    this.requests.listing++;
    const conditional = this.current && this.listingEtag;
    const listing = await this.fetch(this.url(`/v1/models/${this.options.model}/tables`), {
      headers: conditional ? { "If-None-Match": conditional } : {},
    });
    if (listing.status === 304 && conditional) return "unchanged";
    if (!listing.ok) throw new Error(`listing tables failed: HTTP ${listing.status}`);
    const etag = listing.headers.get("etag") ?? undefined;
    const { latest } = (await listing.json()) as TableListing;
    if (!latest) return "none";
    const held = this.current;
    if (held?.checksum === latest.checksum) {
      this.listingEtag = etag;
      return "unchanged";
    }
    if (held && held.header.encodingHash === latest.encodingHash) {
      try {
        this.requests.delta++;
        const response = await this.fetch(
          this.url(`${latest.url}/delta?from=${held.header.generation}`),
        );
        if (response.ok) {
          const bytes = await applyDelta(held.parsed, new Uint8Array(await response.arrayBuffer()));
          const table = await LookupTable.open(bytes, { model: this.options.model });
          if (table.checksum === latest.checksum) {
            this.current = table;
            this.listingEtag = etag;
            return "delta";
          }
        }
      } catch {
        // Any mismatch: fall through to the full download.
      }
    }
    this.requests.table++;
    const response = await this.fetch(this.url(latest.url));
    if (!response.ok) throw new Error(`downloading the table failed: HTTP ${response.status}`);
    const table = await LookupTable.open(await response.arrayBuffer(), {
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
        outOfDistribution: local.outOfDistribution.length > 0,
      };
    }
    if (local) {
      const remembered = this.fallback.get(local.key);
      if (remembered) return { ...remembered, source: "cache" };
    }
    this.requests.predict++;
    const query = new URLSearchParams();
    for (const [name, value] of Object.entries(input)) query.set(name, String(value));
    query.set("wait", String(this.options.wait ?? 2_000));
    const response = await this.fetch(
      this.url(`/v1/models/${this.options.model}/predict?${query}`),
    );
    const body = (await response.json()) as {
      prediction?: Prediction;
      source?: string;
      key?: string;
      outOfDistribution?: boolean;
      error?: { code: string; message: string; details?: { issues?: InputIssue[] } };
    };
    if (response.status === 422) throw new InvalidInputError(body.error?.details?.issues ?? []);
    if (response.status !== 200 || !body.prediction || !body.key) {
      throw new Error(
        `the server did not answer (HTTP ${response.status}): ${body.error?.message ?? "pending"}`,
      );
    }
    const answer: HybridAnswer = {
      prediction: body.prediction,
      source: `server:${body.source}`,
      key: body.key,
      outOfDistribution: body.outOfDistribution ?? false,
    };
    this.fallback.set(body.key, answer);
    return answer;
  }
}
