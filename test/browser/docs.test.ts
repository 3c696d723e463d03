/**
 * /docs in a real browser: headless Chromium (Debian's `chromium`) renders Swagger UI from
 * the service's own files and /openapi.json — a screenshot that is not blank, and a DOM
 * holding the rendered operations.
 *
 * Without Chromium the test is skipped with a note, unless PREDCACHE_REQUIRE_BROWSER=1
 * (set by .ci/run, which installs it), where a missing browser fails the run.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { mkdtemp, readFile, rm, stat } from "node:fs/promises";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { browserTestsRun, headlessFlags, requireChromium } from "../helpers/chromium.ts";
import { startTestService, type TestService, tempDataDir } from "../helpers/service.ts";

const PNG_SIGNATURE = [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a];

let t: TestService;
let scratch: string;

/** Runs headless Chromium on `url` until it exits (killed after `ms`); its stdout. */
async function headless(url: string, profile: string, extra: string[], ms = 45_000) {
  const browser: ChildProcess = spawn(
    requireChromium(),
    [
      ...headlessFlags(profile),
      "--hide-scrollbars",
      "--window-size=1280,900",
      "--virtual-time-budget=10000",
      ...extra,
      url,
    ],
    { stdio: ["ignore", "pipe", "pipe"] },
  );
  try {
    let stdout = "";
    let stderr = "";
    browser.stdout?.on("data", (chunk) => {
      stdout += chunk;
    });
    browser.stderr?.on("data", (chunk) => {
      stderr += chunk;
    });
    const code = await new Promise<number | null>((done, fail) => {
      const timer = setTimeout(() => fail(new Error(`chromium ran over ${ms} ms`)), ms);
      browser.on("error", fail);
      browser.on("exit", (exit) => {
        clearTimeout(timer);
        done(exit);
      });
    });
    if (code !== 0) throw new Error(`chromium exited with ${code}:\n${stderr.slice(-2_000)}`);
    return stdout;
  } finally {
    if (browser.exitCode === null && browser.signalCode === null) browser.kill("SIGKILL");
  }
}

describe.skipIf(!browserTestsRun)("/docs in headless Chromium", () => {
  beforeAll(async () => {
    const dataDir = await tempDataDir();
    t = await startTestService({ env: { PREDCACHE_DATA_DIR: dataDir }, liveWorker: false });
    scratch = await mkdtemp(join(dataDir, "docs-browser-"));
  });

  afterAll(async () => {
    await t?.close();
    // Chromium's helper processes may still be writing its profile a moment after it exits.
    if (scratch)
      await rm(scratch, { recursive: true, force: true, maxRetries: 10, retryDelay: 100 });
  });

  it("renders Swagger UI: a screenshot that is not blank", async () => {
    const file = join(scratch, "docs.png");
    await headless(`${t.url}/docs`, join(scratch, "profile-shot"), [`--screenshot=${file}`]);
    const png = await readFile(file);
    expect([...png.subarray(0, 8)]).toEqual(PNG_SIGNATURE);
    expect(png.subarray(12, 16).toString("latin1")).toBe("IHDR");
    expect(png.readUInt32BE(16)).toBe(1280); // width
    expect((await stat(file)).size).toBeGreaterThan(20 * 1024);
  }, 90_000);

  it("renders Swagger UI: the operations from /openapi.json are in the page", async () => {
    const dom = (
      await headless(`${t.url}/docs`, join(scratch, "profile-dom"), ["--dump-dom"])
    ).replace(/\u200b/g, ""); // Swagger UI breaks long paths with zero-width spaces
    expect(dom).toMatch(/class="swagger-ui\b/);
    expect(dom).toContain("/v1/models/flight-delay/predict");
    expect(dom).toContain("/v1/models/{model}/tables/latest");
    expect(dom).toMatch(/class="[^"]*\bopblock\b/);
    expect(dom).toContain("predcache");
    expect(dom).not.toContain("Failed to load API definition");
  }, 90_000);
});
