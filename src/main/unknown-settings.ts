/**
 * PREDCACHE_ variables no predcache process reads, named when a process starts: a
 * misspelled setting (PREDCACHE_RATELIMIT, or the CLI's PREDCACHE_API_KEY set on a server
 * meant to require keys) would otherwise be ignored without a word.
 */
import { settingsSchema } from "../config.ts";

/** PREDCACHE_ variables read by other tools: the CLI, docker compose, the test suite. */
const READ_ELSEWHERE = new Set([
  "PREDCACHE_TOKEN",
  "PREDCACHE_SERVER",
  "PREDCACHE_API_KEY",
  "PREDCACHE_IMAGE",
  "PREDCACHE_REQUIRE_BROWSER",
]);

/** Edit distance (insertions, deletions, substitutions), for "did you mean". */
function distance(a: string, b: string): number {
  let row = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const next = [i];
    for (let j = 1; j <= b.length; j++)
      next[j] = Math.min(
        (row[j] as number) + 1,
        (next[j - 1] as number) + 1,
        (row[j - 1] as number) + (a[i - 1] === b[j - 1] ? 0 : 1),
      );
    row = next;
  }
  return row[b.length] as number;
}

/** One line per unknown PREDCACHE_ variable set (a blank one is no value), with the nearest known name. */
export function unknownSettingNotices(env: Readonly<Record<string, string | undefined>>): string[] {
  const known = Object.keys(settingsSchema.shape);
  const given = (name: string) => (env[name] ?? "").trim() !== "";
  const notices: string[] = [];
  for (const name of Object.keys(env).sort()) {
    if (!name.startsWith("PREDCACHE_") || !given(name)) continue;
    if (known.includes(name) || READ_ELSEWHERE.has(name)) continue;
    const nearest = known.map((k) => ({ k, d: distance(name, k) })).sort((x, y) => x.d - y.d)[0];
    const hint = nearest && nearest.d <= 4 ? `: did you mean ${nearest.k}?` : "";
    notices.push(`${name} is set, but no predcache process reads it${hint}`);
  }
  if (given("PREDCACHE_API_KEY") && !given("PREDCACHE_API_KEYS"))
    notices.push(
      "PREDCACHE_API_KEY is the CLI's key; a server requires keys when PREDCACHE_API_KEYS is set, and it is not: the read API is open",
    );
  return notices;
}
