/**
 * /openapi.json: a valid OpenAPI 3.1 document (checked by a validator library) that
 * documents every route the app serves — the list is read from the Hono app itself, so a
 * new route without documentation fails here — with each model's predict path and its
 * input schema taken from the manifest.
 */
import { readFile } from "node:fs/promises";
import { Validator } from "@seriousme/openapi-schema-validator";
import { Ajv2020 } from "ajv/dist/2020.js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { getJson, startTestService, type TestService } from "../helpers/service.ts";

let t: TestService;
// biome-ignore lint/suspicious/noExplicitAny: the document is arbitrary JSON
let doc: any;

const PREDICT = "/v1/models/{model}/predict";

beforeAll(async () => {
  t = await startTestService({ liveWorker: false });
  const reply = await getJson(`${t.url}/openapi.json`);
  expect(reply.status).toBe(200);
  expect(reply.headers.get("content-type")).toMatch(/^application\/json/);
  doc = reply.body;
});

afterAll(async () => {
  await t?.close();
});

describe("/openapi.json", () => {
  it("validates as OpenAPI 3.1", async () => {
    expect(doc.openapi).toBe("3.1.0");
    const validator = new Validator();
    const result = await validator.validate(structuredClone(doc));
    if (!result.valid) console.error(JSON.stringify(result.errors, null, 2));
    expect(result.valid).toBe(true);
    expect(validator.version).toBe("3.1");
    // Every $ref points at something.
    expect(() => validator.resolveRefs()).not.toThrow();
  });

  it("documents every route the app serves", () => {
    // Middleware (method ALL) is not a route; `:param` is `{param}`, a trailing `*` one {path}.
    const routes = new Set(
      t.service.app.routes
        .filter((r) => r.method !== "ALL")
        .map(
          (r) =>
            `${r.method.toLowerCase()} ${r.path.replace(/:(\w+)/g, "{$1}").replace(/\/\*$/, "/{path}")}`,
        ),
    );
    expect(routes.size).toBeGreaterThan(20);
    const models = t.registry.names();
    expect(models).toContain("flight-delay");
    const missing: string[] = [];
    for (const route of routes) {
      const [method, path] = route.split(" ") as [string, string];
      const paths =
        path === PREDICT ? models.map((m) => `/v1/models/${m}/predict`) : [path as string];
      for (const p of paths) if (!doc.paths[p]?.[method]) missing.push(`${method} ${p}`);
    }
    expect(missing).toEqual([]);
    expect(routes).toContain(`get ${PREDICT}`);
    expect(routes).toContain(`post ${PREDICT}`);
    expect(routes).toContain("get /docs/assets/{file}");
    // The generic path is documented per model instead.
    expect(doc.paths[PREDICT]).toBeUndefined();
  });

  it("describes the bodies the service really sends (readiness, a run of uploaded inputs)", async () => {
    const ajv = new Ajv2020({ strict: false, allErrors: true });
    ajv.addSchema({ ...structuredClone(doc), $id: "predcache" });
    const check = (schema: string, body: unknown) => {
      const validate = ajv.getSchema(`predcache#/components/schemas/${schema}`);
      if (!validate) throw new Error(`no schema ${schema}`);
      const valid = validate(body);
      if (!valid) console.error(schema, JSON.stringify(validate.errors, null, 2));
      expect(valid, schema).toBe(true);
    };
    check("Readiness", (await getJson(`${t.url}/readyz`)).body);
    await t.service.precompute.runQueue.pause();
    try {
      const { runId } = await t.service.precompute.enqueue({
        model: "flight-delay",
        source: {
          kind: "inline",
          inputs: [{ origin: "SFO", destination: "LAX", hour: 2, dayOfWeek: 2 }],
        },
      });
      const status = await t.service.precompute.status(runId);
      expect(status?.source).toEqual({ kind: "inline", inputs: [], count: 1 });
      check("RunStatus", status);
      await t.service.precompute.cancel(runId);
    } finally {
      await t.service.precompute.runQueue.resume();
    }
  });

  it("documents API keys on the read routes, and metrics tokens, when the service requires them", async () => {
    const keyed = await startTestService({
      env: {
        PREDCACHE_API_KEYS: "app:openapi-read-key-0123456789",
        PREDCACHE_METRICS_TOKENS: "prom:openapi-metrics-0123456789",
      },
      liveWorker: false,
    });
    try {
      const keyedDoc = (await getJson(`${keyed.url}/openapi.json`)).body;
      expect(keyedDoc.components.securitySchemes.apiKeyHeader).toMatchObject({
        type: "apiKey",
        in: "header",
        name: "X-API-Key",
      });
      for (const [path, item] of Object.entries(keyedDoc.paths)) {
        if (!path.startsWith("/v1/")) continue;
        for (const op of Object.values(
          item as Record<string, { security: unknown; responses: object }>,
        )) {
          expect(op.security, path).toEqual([{ apiKeyBearer: [] }, { apiKeyHeader: [] }]);
          expect(Object.keys(op.responses), path).toEqual(
            expect.arrayContaining(["401", "403", "429"]),
          );
        }
      }
      const scrape = keyedDoc.paths["/metrics"].get;
      expect(scrape.security).toEqual([{ metricsBearer: [] }]);
      expect(Object.keys(scrape.responses)).toEqual(expect.arrayContaining(["401", "403"]));
      // Open by default: no such requirement.
      expect(doc.paths["/v1/models"].get.security).toBeUndefined();
      expect(doc.paths["/metrics"].get.security).toBeUndefined();
    } finally {
      await keyed.close();
    }
  });

  it("documents the admin routes behind the bearer token", () => {
    expect(doc.components.securitySchemes.bearerAuth).toMatchObject({
      type: "http",
      scheme: "bearer",
    });
    const admin = Object.entries(doc.paths).filter(([p]) => p.startsWith("/admin/v1/"));
    expect(admin.length).toBeGreaterThan(5);
    for (const [, item] of admin)
      for (const op of Object.values(
        item as Record<string, { security: unknown; responses: object }>,
      )) {
        expect(op.security).toEqual([{ bearerAuth: [] }]);
        expect(Object.keys(op.responses)).toEqual(expect.arrayContaining(["401", "403", "503"]));
      }
  });

  it("documents the queue dashboard's pages and API, behind the admin token", () => {
    const board = Object.entries(doc.paths).filter(([p]) => p.startsWith("/admin/queues"));
    const operations = board.flatMap(([p, item]) =>
      Object.keys(item as object).map((method) => `${method} ${p}`),
    );
    expect(operations).toEqual(
      expect.arrayContaining(["get /admin/queues", "get /admin/queues/api/queues"]),
    );
    expect(operations.some((o) => o.startsWith("put /admin/queues/api/queues/"))).toBe(true);
    for (const [, item] of board)
      for (const op of Object.values(item as Record<string, { security: unknown }>))
        expect(op.security).toEqual([{ bearerAuth: [] }, { basicAuth: [] }]);
  });

  it("gives each model its input schema, from the manifest", async () => {
    const manifest = JSON.parse(
      await readFile("seeds/models/flight-delay/manifest.json", "utf8"),
    ) as {
      encoding: { features: { name: string; vocabulary?: string[]; min?: number; max?: number }[] };
    };
    const feature = (name: string) => manifest.encoding.features.find((f) => f.name === name);
    const origins = feature("origin")?.vocabulary;
    expect(origins?.length).toBeGreaterThan(100);
    expect(feature("hour")).toMatchObject({ min: 0, max: 23 });

    const input = doc.components.schemas["flight-delay.Input"];
    expect(Object.keys(input.properties)).toEqual(["origin", "destination", "hour", "dayOfWeek"]);
    expect(input.required).toEqual(["origin", "destination", "hour", "dayOfWeek"]);
    // origin is flagged when unknown: any string is accepted, the vocabulary is its enum.
    const enums = [input.properties.origin, ...(input.properties.origin.anyOf ?? [])]
      .map((s: { enum?: string[] }) => s.enum)
      .filter(Boolean);
    expect(enums).toEqual([origins]);
    expect(input.properties.hour).toMatchObject({ type: "integer", minimum: 0, maximum: 23 });
    expect(input.properties.dayOfWeek).toMatchObject({ type: "integer", minimum: 1, maximum: 7 });

    const get = doc.paths["/v1/models/flight-delay/predict"].get;
    const names = get.parameters.map((p: { name?: string; $ref?: string }) => p.name ?? p.$ref);
    expect(names).toEqual(expect.arrayContaining(["origin", "hour", "wait", "version"]));
    const hour = get.parameters.find((p: { name?: string }) => p.name === "hour");
    expect(hour).toMatchObject({
      in: "query",
      required: true,
      schema: { minimum: 0, maximum: 23 },
    });
    expect(Object.keys(get.responses)).toEqual(
      expect.arrayContaining(["200", "202", "304", "400", "404", "422", "503"]),
    );

    const post = doc.paths["/v1/models/flight-delay/predict"].post;
    const body = post.requestBody.content["application/json"].schema;
    expect(body).toEqual({ $ref: "#/components/schemas/flight-delay.BatchRequest" });
    expect(doc.components.schemas["flight-delay.BatchRequest"].properties.inputs).toMatchObject({
      items: { $ref: "#/components/schemas/flight-delay.Input" },
      maxItems: t.config.batchMaxItems,
    });
  });

  it("documents the error body with every error code", () => {
    const code = doc.components.schemas.Error.properties.error.properties.code;
    expect(code.enum).toEqual(expect.arrayContaining(["invalid_input", "redis_unavailable"]));
    expect(doc.components.responses.Error503.headers["Retry-After"]).toBeDefined();
  });

  it("answers 304 to its own ETag", async () => {
    const first = await fetch(`${t.url}/openapi.json`);
    const etag = first.headers.get("etag") as string;
    await first.arrayBuffer();
    const again = await fetch(`${t.url}/openapi.json`, { headers: { "if-none-match": etag } });
    expect(again.status).toBe(304);
  });

  it("serves only the allow-listed documentation files", async () => {
    const css = await fetch(`${t.url}/docs/assets/swagger-ui.css`);
    expect(css.status).toBe(200);
    expect(css.headers.get("content-type")).toMatch(/^text\/css/);
    await css.arrayBuffer();
    const js = await fetch(`${t.url}/docs/assets/swagger-ui-bundle.js`);
    expect(js.headers.get("content-type")).toMatch(/^text\/javascript/);
    await js.arrayBuffer();
    for (const name of ["package.json", "..%2Fpackage.json", "index.js", "swagger-ui.js.map"]) {
      const reply = await getJson(`${t.url}/docs/assets/${name}`);
      expect(reply.status).toBe(404);
      expect(reply.body.error.code).toBe("not_found");
    }
    const page = await fetch(`${t.url}/docs`);
    expect(page.headers.get("content-type")).toMatch(/^text\/html/);
    expect(page.headers.get("content-security-policy")).toMatch(/default-src 'none'/);
    expect(await page.text()).toContain("/openapi.json");
  });
});
