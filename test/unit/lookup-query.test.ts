/** The query of a single lookup, read from the raw request target as Hono reads queries. */
import { describe, expect, it } from "vitest";
import { LookupQuery } from "../../src/api/lookup-query.ts";

describe("LookupQuery", () => {
  it("reads features, version and wait; + is a space", () => {
    const q = new LookupQuery(
      "/v1/models/m/predict?origin=SFO&hour=7&city=San+Jose&version=v1&wait=0",
    );
    expect(q.features).toEqual({ origin: "SFO", hour: "7", city: "San Jose" });
    expect(q.version).toBe("v1");
    expect(q.wait).toBe("0");
    expect(q.repeated).toEqual([]);
    expect(q.malformed).toBe(false);
  });

  it("stops at a fragment: nothing after # is a parameter (a version there pins nothing)", () => {
    const q = new LookupQuery("/v1/models/m/predict?origin=SFO#&version=v1&hour=7");
    expect(q.features).toEqual({ origin: "SFO" });
    expect(q.version).toBeUndefined();
    expect(new LookupQuery("/v1/models/m/predict#?version=v1").version).toBeUndefined();
    // Nor is bad percent-encoding there any of the query's.
    expect(new LookupQuery("/v1/models/m/predict?origin=SFO#%zz").malformed).toBe(false);
  });

  it("lists reserved parameters given twice, keeps repeated features, flags bad encoding", () => {
    const q = new LookupQuery("/p?version=a&version=b&tag=x&tag=y");
    expect(q.repeated).toEqual(["version"]);
    expect(q.features).toEqual({ tag: ["x", "y"] });
    expect(new LookupQuery("/p?origin=%ff").malformed).toBe(true);
    expect(new LookupQuery("/p?origin=%").malformed).toBe(true);
  });
});
