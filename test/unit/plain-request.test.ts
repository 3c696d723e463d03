/**
 * The hot front answers only requests whose Host and target @hono/node-server takes as they
 * are: every Host and target it counts as plain must be one the adapter serves (else the
 * front would answer what the app refuses). Checked against the adapter itself, over a
 * real socket, so an upgrade that narrows its checks fails here.
 */
import { request, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { createAdaptorServer } from "@hono/node-server";
import fc from "fast-check";
import { Hono } from "hono";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { isPlainHost, isPlainTarget } from "../../src/api/hot-lookups.ts";

let server: Server;
let port: number;

beforeAll(async () => {
  const app = new Hono();
  app.get("*", (c) => c.text("ok"));
  server = createAdaptorServer({ fetch: app.fetch }) as Server;
  await new Promise<void>((done) => server.listen(0, "127.0.0.1", done));
  port = (server.address() as AddressInfo).port;
});
afterAll(() => new Promise<void>((done) => server.close(() => done())));

function status(path: string, host: string): Promise<number> {
  return new Promise((done, fail) => {
    const req = request(
      { host: "127.0.0.1", port, path, headers: { host }, agent: false },
      (res) => {
        res.resume();
        res.on("end", () => done(res.statusCode ?? 0));
      },
    );
    req.on("error", fail);
    req.end();
  });
}

/** Mostly characters a plain Host or target may have, some it may not. */
function mostlyPlain(plain: string, other: string) {
  return fc.oneof(
    { weight: 12, arbitrary: fc.constantFrom(...plain.split("")) },
    { weight: 1, arbitrary: fc.constantFrom(...other.split("")) },
  );
}
const hostName = fc.string({
  unit: mostlyPlain("abcxyz0189.-_", "AZ/@! %[]:"),
  minLength: 1,
  maxLength: 12,
});
const host = fc.oneof(
  hostName,
  fc.tuple(hostName, fc.integer({ min: 0, max: 99_999 })).map(([name, p]) => `${name}:${p}`),
);
const targetRest = fc.string({
  unit: mostlyPlain("az09/?=&+-._~!$'()*,;:@[]", '%#\\"<> ^`{|}'),
  maxLength: 24,
});

describe("plain requests (the hot front's own checks)", () => {
  it("every Host it calls plain, the adapter serves", async () => {
    let plainSeen = 0;
    await fc.assert(
      fc.asyncProperty(host, async (value) => {
        if (!isPlainHost(value)) return;
        plainSeen += 1;
        expect(await status("/v1/models/m/predict?a=1", value)).toBe(200);
      }),
      { numRuns: 150 },
    );
    // The property held for many plain values, not only for refused ones.
    expect(plainSeen).toBeGreaterThan(30);
    for (const value of ["127.0.0.1:8787", "localhost", "api.example.com:1000", "a-b_c.d"])
      expect(isPlainHost(value)).toBe(true);
    for (const value of ["bad host!", "a/b", "x@y", "a.b:99999", "LOCALHOST", "h:80"])
      expect(isPlainHost(value)).toBe(false);
  });

  it("every target it calls plain, the adapter serves as written", async () => {
    let plainSeen = 0;
    await fc.assert(
      fc.asyncProperty(targetRest, async (rest) => {
        const target = `/v1/models/m/predict?${rest}`;
        if (!isPlainTarget(target)) return;
        plainSeen += 1;
        expect(await status(target, "127.0.0.1")).toBe(200);
      }),
      { numRuns: 150 },
    );
    expect(plainSeen).toBeGreaterThan(30);
    expect(isPlainTarget("/v1/models/m/predict?origin=SFO&hour=7")).toBe(true);
    for (const target of [
      "/v1/models/m/predict?a=%41",
      "/v1/x/../predict",
      "/p?a=1#b",
      "http://h/p",
    ])
      expect(isPlainTarget(target)).toBe(false);
  });
});
