/**
 * Reply compression: large answers gzipped when the client accepts it, with Vary kept
 * whole; small ones, single lookups and table files as they are. Raw node:http requests:
 * fetch would decompress (and ask for compression) behind the test's back.
 */
import { request } from "node:http";
import { gunzipSync } from "node:zlib";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startTestService, type TestService, uniquePrefix } from "../helpers/service.ts";

const ORIGIN = "https://app.example";
let t: TestService;
beforeAll(async () => {
  t = await startTestService({
    env: { PREDCACHE_PREFIX: uniquePrefix("gzip"), PREDCACHE_CORS_ORIGINS: ORIGIN },
  });
});
afterAll(() => t.close());

interface Raw {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: Buffer;
}

function send(
  path: string,
  headers: Record<string, string>,
  options: { method?: string; body?: string } = {},
): Promise<Raw> {
  const { port } = new URL(t.url);
  return new Promise((done, fail) => {
    const req = request(
      { host: "127.0.0.1", port, path, method: options.method ?? "GET", headers },
      (res) => {
        const chunks: Buffer[] = [];
        res.on("data", (chunk: Buffer) => chunks.push(chunk));
        res.on("end", () =>
          done({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) }),
        );
      },
    );
    req.on("error", fail);
    req.end(options.body);
  });
}

const PREDICT = "/v1/models/flight-delay/predict";
const inputs = Array.from({ length: 40 }, (_, i) => ({
  origin: "SFO",
  destination: "LAX",
  hour: i % 24,
  dayOfWeek: 1 + (i % 7),
}));

function batch(headers: Record<string, string>) {
  return send(
    PREDICT,
    { "content-type": "application/json", origin: ORIGIN, ...headers },
    { method: "POST", body: JSON.stringify({ inputs, wait: 3000 }) },
  );
}

describe("reply compression", () => {
  it("gzips a large batch reply for a client that accepts it, Vary kept whole", async () => {
    const plain = await batch({});
    expect(plain.status).toBe(200);
    expect(plain.headers["content-encoding"]).toBeUndefined();
    const text = plain.body.toString("utf8");
    expect(Buffer.byteLength(text)).toBeGreaterThan(4096);

    const zipped = await batch({ "accept-encoding": "gzip, deflate, br" });
    expect(zipped.status).toBe(200);
    expect(zipped.headers["content-encoding"]).toBe("gzip");
    expect(zipped.body.length).toBeLessThan(plain.body.length / 3);
    const unzipped = JSON.parse(gunzipSync(zipped.body).toString("utf8"));
    expect(unzipped.results).toHaveLength(inputs.length);
    expect(unzipped.results.every((r: { status: number }) => r.status === 200)).toBe(true);
    // The edge's Vary (exact CORS origins) and compression's, both.
    const vary = String(zipped.headers.vary).toLowerCase();
    expect(vary).toContain("origin");
    expect(vary).toContain("accept-encoding");
    expect(zipped.headers["access-control-allow-origin"]).toBe(ORIGIN);
  });

  it("gzips the models, OpenAPI and metrics; 304s and HEAD stay bodiless", async () => {
    for (const path of ["/v1/models/flight-delay", "/openapi.json", "/metrics"]) {
      const r = await send(path, { "accept-encoding": "gzip" });
      expect(r.status, path).toBe(200);
      expect(r.headers["content-encoding"], path).toBe("gzip");
      expect(gunzipSync(r.body).length, path).toBeGreaterThan(1024);
    }
    const models = await send("/v1/models/flight-delay", { "accept-encoding": "gzip" });
    const etag = String(models.headers.etag);
    // Weak once compressed (other bytes), and still a validator for either form.
    expect(etag).toMatch(/^W\/"/);
    for (const encoding of ["gzip", "identity"]) {
      const again = await send("/v1/models/flight-delay", {
        "accept-encoding": encoding,
        "if-none-match": etag,
      });
      expect(again.status, encoding).toBe(304);
      expect(again.body.length).toBe(0);
    }
    const head = await send(
      "/v1/models/flight-delay",
      { "accept-encoding": "gzip" },
      {
        method: "HEAD",
      },
    );
    expect(head.headers["content-encoding"]).toBeUndefined();
    expect(Number(head.headers["content-length"])).toBe(gunzipSync(models.body).length);
  });

  it("leaves small answers, errors and single lookups as they are", async () => {
    const lookup = `${PREDICT}?origin=SFO&destination=LAX&hour=3&dayOfWeek=2&wait=3000`;
    // Through Hono (a miss), then from the hot front (a hit): the same, uncompressed.
    for (const source of ["live", "memory"]) {
      const r = await send(lookup, { "accept-encoding": "gzip" });
      expect(r.status).toBe(200);
      expect(JSON.parse(r.body.toString("utf8")).source).toBe(source);
      expect(r.headers["content-encoding"]).toBeUndefined();
    }
    const small = await send(
      PREDICT,
      { "content-type": "application/json", "accept-encoding": "gzip" },
      {
        method: "POST",
        body: JSON.stringify({ inputs: [inputs[0]], wait: 3000 }),
      },
    );
    expect(small.status).toBe(200);
    expect(small.headers["content-encoding"]).toBeUndefined();
    expect(Number(small.headers["content-length"])).toBe(small.body.length);
    const missing = await send("/v1/models/nope", { "accept-encoding": "gzip" });
    expect(missing.status).toBe(404);
    expect(missing.headers["content-encoding"]).toBeUndefined();
    expect(JSON.parse(missing.body.toString("utf8")).error.code).toBe("model_not_found");
  });
});
