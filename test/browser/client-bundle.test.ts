/**
 * The client bundle in a real browser: headless Chromium (Debian's `chromium`) loads a
 * page from one origin that imports dist's browser build, downloads the table from the
 * API on another origin (CORS), answers a covered input locally and an uncovered one from
 * the server, and posts what it saw back to the page's server.
 *
 * Without Chromium the test is skipped with a note, unless PREDCACHE_REQUIRE_BROWSER=1
 * (set by .ci/run, which installs it), where a missing browser fails the run.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { buildClient } from "../../scripts/build-client.ts";
import type { PrecomputeWorkerProcess } from "../../src/service.ts";
import { browserTestsRun, headlessFlags, requireChromium } from "../helpers/chromium.ts";
import {
  getJson,
  precomputeInputs,
  precomputeWorkerFor,
  startTestService,
  type TestService,
  tempDataDir,
} from "../helpers/service.ts";

const covered = { origin: "LAS", destination: "LAX", hour: "16", dayOfWeek: "6" };
const uncovered = { origin: "ABQ", destination: "ORD", hour: "3", dayOfWeek: "2" };

let t: TestService;
let worker: PrecomputeWorkerProcess;
let page: Server;
let pageUrl: string;
let scratch: string;
let pageResult: (value: Record<string, unknown>) => void = () => {};
const results = new Promise<Record<string, unknown>>((resolve) => {
  pageResult = resolve;
});

function pageHtml(apiUrl: string): string {
  return `<!doctype html><meta charset="utf-8"><title>predcache client</title>
<script type="module">
const post = (body) => fetch("/result", { method: "POST", body: JSON.stringify(body) });
try {
  const { HybridClient } = await import("/predcache-client.js");
  const client = new HybridClient({ baseUrl: ${JSON.stringify(apiUrl)}, model: "flight-delay" });
  const refresh = await client.refresh();
  const local = await client.predict(${JSON.stringify(covered)});
  const remote = await client.predict(${JSON.stringify(uncovered)});
  post({ refresh, local, remote, entries: client.table.size, requests: client.requests, agent: navigator.userAgent });
} catch (error) {
  post({ error: String(error && error.stack || error) });
}
</script>`;
}

describe.skipIf(!browserTestsRun)("predcache/client in headless Chromium", () => {
  beforeAll(async () => {
    const dataDir = await tempDataDir();
    const env = { PREDCACHE_DATA_DIR: dataDir };
    t = await startTestService({ env });
    worker = await precomputeWorkerFor(t);
    await precomputeInputs(t, [covered]);

    scratch = await mkdtemp(join(dataDir, "browser-"));
    const bundle = await readFile((await buildClient(join(scratch, "dist"))).browser);
    const html = pageHtml(t.url);
    page = createServer((req, res) => {
      if (req.method === "POST" && req.url === "/result") {
        let text = "";
        req.on("data", (chunk) => {
          text += chunk;
        });
        req.on("end", () => {
          pageResult(JSON.parse(text));
          res.end();
        });
      } else if (req.url === "/predcache-client.js") {
        res.writeHead(200, { "content-type": "text/javascript" }).end(bundle);
      } else if (req.url === "/") {
        res.writeHead(200, { "content-type": "text/html" }).end(html);
      } else {
        res.writeHead(404).end();
      }
    });
    await new Promise<void>((done) => page.listen(0, "127.0.0.1", done));
    pageUrl = `http://127.0.0.1:${(page.address() as AddressInfo).port}/`;
  });

  afterAll(async () => {
    await new Promise((done) => page?.close(done));
    await worker?.close();
    await t?.close();
    // Chromium's helper processes may still be writing its profile a moment after it exits.
    if (scratch)
      await rm(scratch, { recursive: true, force: true, maxRetries: 10, retryDelay: 100 });
  });

  it("loads the bundle, answers a covered input from the table and the rest from the server", async () => {
    const profile = join(scratch, "profile");
    const browser: ChildProcess = spawn(requireChromium(), [...headlessFlags(profile), pageUrl], {
      stdio: "ignore",
    });
    try {
      const timeout = new Promise<never>((_, fail) =>
        setTimeout(() => fail(new Error("the page posted no result within 30 s")), 30_000),
      );
      const result = await Promise.race([results, timeout]);
      expect(result.error).toBeUndefined();
      expect(result.agent).toMatch(/Chrome/);
      expect(result.refresh).toBe("full");
      expect(result.entries).toBe(1);
      const server = await getJson(
        `${t.url}/v1/models/flight-delay/predict?${new URLSearchParams(covered)}`,
      );
      expect(result.local).toMatchObject({ source: "table", prediction: server.body.prediction });
      expect(result.remote).toMatchObject({ source: expect.stringMatching(/^server:/) });
      expect(result.requests).toEqual({ predict: 1, table: 1, delta: 0, listing: 1 });
    } finally {
      if (browser.exitCode === null && browser.signalCode === null) {
        const exited = new Promise((done) => browser.once("exit", done));
        browser.kill("SIGKILL");
        await exited;
      }
    }
  });
});
