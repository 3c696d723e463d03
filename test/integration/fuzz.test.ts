/**
 * Fuzzing the real server: 10,000 random and malformed requests (query strings, JSON
 * bodies, headers, paths, unicode, huge and empty values). Only valid answers or 4xx JSON
 * errors may come back — never a 5xx, never a crash — and no cache entry may exist for
 * an input that is not a canonical, valid one.
 */
import fc from "fast-check";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { ModelVersion } from "../../src/model/registry.ts";
import { scanKeys } from "../../src/redis/keyspace.ts";
import { startTestService, type TestService } from "../helpers/service.ts";

const RUNS = 10_000;
let t: TestService;
let model: ModelVersion;

beforeAll(async () => {
  t = await startTestService({ env: { PREDCACHE_WAIT_DEFAULT_MS: "0" } });
  model = t.registry.versions("flight-delay")[0] as ModelVersion;
});
afterAll(() => t.close());

const text = fc.oneof(
  fc.string({ unit: "binary", maxLength: 40 }),
  fc.string({ unit: "grapheme", maxLength: 20 }),
  fc.constantFrom(
    "",
    " ",
    "SFO",
    "sfo",
    " LAX ",
    "ZZZ",
    "-1",
    "7",
    "7.5",
    "1e400",
    "NaN",
    "null",
    "[]",
    "{}",
    "%",
    "%ZZ",
    "\u0000",
    "😀",
  ),
  fc.integer().map(String),
  fc.constant("x".repeat(3_000)),
);
const names = fc.constantFrom(
  "origin",
  "destination",
  "hour",
  "dayOfWeek",
  "wait",
  "version",
  "extra",
  "",
  "__proto__",
  "constructor",
);
const query = fc.array(fc.tuple(names, text), { maxLength: 8 });
const validInput = fc.record({
  origin: fc.constantFrom("SFO", "LAX", "ORD", "ATL", "XXX"),
  destination: fc.constantFrom("SEA", "DEN", "BOS", "JFK"),
  hour: fc.integer({ min: -2, max: 25 }),
  dayOfWeek: fc.integer({ min: 0, max: 8 }),
});
const body = fc.oneof(
  fc.jsonValue({ maxDepth: 4 }).map((v) => JSON.stringify(v)),
  fc
    .record({
      inputs: fc.array(fc.oneof(validInput, fc.jsonValue({ maxDepth: 2 })), { maxLength: 20 }),
      wait: fc.oneof(fc.constant(0), fc.jsonValue({ maxDepth: 1 })),
    })
    .map((v) => JSON.stringify(v)),
  fc.string({ maxLength: 200 }),
  fc.constant(`{"inputs":[${Array(1_500).fill("{}").join(",")}]}`),
  fc.constant(""),
);
const segment = fc.oneof(
  fc.constantFrom("flight-delay", "nope", "..", "%2e%2e", "tables", "latest"),
  fc.string({ unit: "grapheme-ascii", maxLength: 12 }),
);
const headers = fc.record(
  {
    "if-none-match": fc.oneof(text, fc.constant('"*"'), fc.constant("*")),
    range: fc.oneof(
      text,
      fc.constantFrom("bytes=0-", "bytes=-0", "bytes=5-1", "bytes=0-0,5-9", "bytes=99999999999-"),
    ),
    "content-type": fc.constantFrom(
      "application/json",
      "text/plain",
      "application/x-www-form-urlencoded",
      "",
    ),
    "x-request-id": fc.string({ unit: "grapheme-ascii", maxLength: 80 }),
  },
  { requiredKeys: [] },
);

const request = fc.oneof(
  fc.record({ kind: fc.constant("get"), query, headers }),
  fc.record({ kind: fc.constant("post"), body, headers }),
  fc.record({
    kind: fc.constant("path"),
    segments: fc.array(segment, { maxLength: 4 }),
    query,
    headers,
  }),
);

function headerSafe(h: Record<string, string>): Record<string, string> {
  // fetch refuses header values it cannot send; those are not requests a server sees.
  return Object.fromEntries(Object.entries(h).filter(([, v]) => /^[\t\x20-\x7e]*$/.test(v)));
}

describe("fuzzing the API", () => {
  it(`answers ${RUNS} random and malformed requests with valid answers or 4xx JSON errors, never 5xx`, async () => {
    const statuses = new Map<number, number>();
    await fc.assert(
      fc.asyncProperty(request, async (r) => {
        const search = "query" in r ? new URLSearchParams(r.query).toString() : "";
        let response: Response;
        if (r.kind === "post") {
          response = await fetch(`${t.url}/v1/models/flight-delay/predict`, {
            method: "POST",
            headers: headerSafe(r.headers as Record<string, string>),
            body: r.body,
          });
        } else {
          const path =
            r.kind === "get"
              ? "/v1/models/flight-delay/predict"
              : `/v1/models/${r.segments.map(encodeURIComponent).join("/")}`;
          response = await fetch(`${t.url}${path}?${search}`, {
            headers: headerSafe(r.headers as Record<string, string>),
          });
        }
        statuses.set(response.status, (statuses.get(response.status) ?? 0) + 1);
        const bodyText = await response.text();
        expect(response.status, `${r.kind} ${search} → ${bodyText.slice(0, 200)}`).toBeLessThan(
          500,
        );
        if (response.status >= 400) {
          const error = JSON.parse(bodyText).error;
          expect(typeof error.code).toBe("string");
          expect(typeof error.message).toBe("string");
        }
      }),
      { numRuns: RUNS },
    );
    console.log(
      `fuzz: ${RUNS} requests, by status ${JSON.stringify(Object.fromEntries([...statuses].sort()))}`,
    );

    // Every stored entry is a canonical key of a valid input: nothing invalid was cached.
    const redis = t.service.redis;
    let entries = 0;
    for await (const buckets of scanKeys(redis, `${t.config.prefix}:e:*`)) {
      for (const bucket of buckets) {
        for (const key of await redis.hkeys(bucket)) {
          entries++;
          const encoded = model.encoder.encode(model.encoder.decodeKey(key));
          expect(encoded.ok && encoded.value.key).toBe(key);
        }
      }
    }
    const observed = await redis.zrange(
      t.service.keys.traffic("flight-delay", model.encoder.hash),
      0,
      -1,
    );
    for (const key of observed) {
      const encoded = model.encoder.encode(model.encoder.decodeKey(key));
      expect(encoded.ok && encoded.value.key).toBe(key);
    }
    console.log(
      `fuzz: ${entries} cache entries and ${observed.length} observed inputs, all canonical and valid`,
    );
  });
});
