/** The route groups of the HTTP metrics: a small fixed set, whatever paths clients make up. */
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { routeGroup } from "../../src/api/request-log.ts";

const GROUPS = [
  "models",
  "predict",
  "tables",
  "jobs",
  "queue-board",
  "admin",
  "healthz",
  "readyz",
  "metrics",
  "docs",
  "other",
];

describe("routeGroup", () => {
  it("names each route's group", () => {
    expect(routeGroup("/v1/models")).toBe("models");
    expect(routeGroup("/v1/models/flight-delay")).toBe("models");
    expect(routeGroup("/v1/models/flight-delay/predict?origin=SFO")).toBe("predict");
    expect(routeGroup("/v1/models/flight-delay/tables/latest")).toBe("tables");
    expect(routeGroup("/v1/jobs/abc")).toBe("jobs");
    expect(routeGroup("/admin/queues/api/queues")).toBe("queue-board");
    expect(routeGroup("/admin/v1/runs")).toBe("admin");
    expect(routeGroup("/readyz")).toBe("readyz");
    expect(routeGroup("/openapi.json")).toBe("docs");
    expect(routeGroup("http://user:secret@host/v1/models/m/predict")).toBe("predict");
  });

  it("gives any path one of a fixed set of groups (property)", () => {
    fc.assert(
      fc.property(fc.string(), fc.webPath(), (raw, path) => {
        expect(GROUPS).toContain(routeGroup(raw));
        expect(GROUPS).toContain(routeGroup(path));
      }),
      { numRuns: 500 },
    );
  });
});
