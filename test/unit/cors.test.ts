/** The CORS edge hook on node's request: which headers an answer exposes, by path. */
import type { IncomingMessage, ServerResponse } from "node:http";
import { describe, expect, it } from "vitest";
import { readRoutesCors } from "../../src/api/app.ts";
import { cors } from "../../src/api/cors.ts";
import { takeHeaders } from "../../src/api/headers.ts";

const hook = cors(readRoutesCors(["*"]));

function exposed(url: string, through = hook): string | undefined {
  const incoming = { url, method: "GET", headers: { origin: "https://app.example" } };
  const answer = through(incoming as unknown as IncomingMessage, {} as ServerResponse);
  expect(answer).toBeUndefined();
  return takeHeaders(incoming as unknown as IncomingMessage)?.["Access-Control-Expose-Headers"];
}

describe("CORS exposed headers", () => {
  it("lookups and jobs expose their own headers, not a table's", () => {
    for (const url of ["/v1/models/m/predict?a=1", "/v1/jobs/j1", "/v1/models?x=/tables"]) {
      const list = exposed(url);
      expect(list).toContain("ETag");
      expect(list).toContain("Retry-After");
      expect(list).not.toContain("RateLimit");
      expect(list).not.toContain("Content-Range");
    }
  });

  it("the RateLimit headers only where API keys are on (nothing sends them otherwise)", () => {
    const keyed = cors(readRoutesCors(["*"], { rateLimited: true }));
    for (const url of ["/v1/models/m/predict?a=1", "/v1/jobs/j1", "/v1/models/m/tables"]) {
      const list = exposed(url, keyed);
      for (const name of ["RateLimit-Limit", "RateLimit-Remaining", "RateLimit-Reset", "ETag"])
        expect(list).toContain(name);
    }
  });

  it("table answers add theirs, wherever the /tables segment is in the path", () => {
    for (const url of [
      "/v1/models/m/tables",
      "/v1/models/m/tables/latest",
      "/v1/models/m/tables?since=x",
      "/v1/models/tables-eu/tables",
      "/v1/models/tables/tables/latest",
    ]) {
      const list = exposed(url);
      expect(list).toContain("Content-Range");
      expect(list).toContain("X-Predcache-Generation");
      expect(list).toContain("ETag");
    }
    expect(exposed("/v1/models/tables-eu/predict")).not.toContain("Content-Range");
  });
});

describe("CORS paths", () => {
  it("applies under /v1/models, a dot segment in the path leaves it out, one in the query does not", () => {
    expect(exposed("/v1/models/m/predict?next=/../x")).toContain("ETag");
    expect(exposed("/v1/models?a=/.")).toContain("ETag");
    for (const url of ["/v1/models/../admin/v1/versions", "/v1/models/./m?x=1", "/v1/modelsx"])
      expect(exposed(url)).toBeUndefined();
  });
});
