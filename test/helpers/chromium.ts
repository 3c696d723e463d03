/**
 * Headless Chromium (Debian's `chromium`) for the browser tests. Without it a browser test
 * is skipped with a note, unless PREDCACHE_REQUIRE_BROWSER=1 (set by .ci/run, which
 * installs it), where a missing browser fails the run.
 */
import { execFileSync } from "node:child_process";

function find(): string | undefined {
  for (const name of ["chromium", "chromium-browser", "google-chrome"]) {
    try {
      return execFileSync("sh", ["-c", `command -v ${name}`], { encoding: "utf8" }).trim();
    } catch {}
  }
  return undefined;
}

export const chromium = find();
const required = process.env.PREDCACHE_REQUIRE_BROWSER === "1";

/** Whether browser tests run here; warns once when they are skipped. */
export const browserTestsRun = Boolean(chromium) || required;
if (!browserTestsRun)
  console.warn("browser test skipped: no chromium on PATH (apt-get install -y chromium)");

/** The browser, or a clear failure when CI requires one and it is missing. */
export function requireChromium(): string {
  if (!chromium) throw new Error("PREDCACHE_REQUIRE_BROWSER=1 but no chromium on PATH");
  return chromium;
}

/** Flags for a quiet, sandbox-free headless run: no background networking, no first-run UI. */
export function headlessFlags(profile: string): string[] {
  return [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-default-apps",
    "--disable-extensions",
    "--disable-sync",
    "--no-first-run",
    "--no-default-browser-check",
    "--metrics-recording-only",
    `--user-data-dir=${profile}`,
  ];
}
