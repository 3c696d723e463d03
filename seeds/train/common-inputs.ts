/**
 * The demo's common-input set: the busiest routes of vega-datasets' flights-airport.csv,
 * crossed with the departure hours and weekdays actually flown on them, with how often
 * each combination occurs in the 3M flights as its frequency.
 */
import { mkdir, readFile, writeFile } from "node:fs/promises";
import { dirname } from "node:path";
import type { Flights } from "./flights.ts";
import { vegaDataPath } from "./flights.ts";

const TOP_ROUTES = 400;

export async function writeCommonInputs(
  flights: Flights,
  airports: Set<string>,
  path: string,
): Promise<number> {
  const csv = await readFile(vegaDataPath("flights-airport.csv"), "utf8");
  const routes = csv
    .trim()
    .split("\n")
    .slice(1)
    .map((line) => line.split(","))
    .map(([origin = "", destination = "", count = "0"]) => ({
      origin,
      destination,
      count: Number(count),
    }))
    .filter((r) => airports.has(r.origin) && airports.has(r.destination))
    .sort(
      (a, b) =>
        b.count - a.count ||
        a.origin.localeCompare(b.origin) ||
        a.destination.localeCompare(b.destination),
    )
    .slice(0, TOP_ROUTES);
  const wanted = new Set(routes.map((r) => `${r.origin},${r.destination}`));
  const counts = new Map<string, number>();
  for (let i = 0; i < flights.count; i++) {
    const route = `${flights.origin[i]},${flights.destination[i]}`;
    if (!wanted.has(route)) continue;
    const key = `${route},${flights.hour[i]},${flights.dayOfWeek[i]}`;
    counts.set(key, (counts.get(key) ?? 0) + 1);
  }
  const rows = [...counts].sort((a, b) => b[1] - a[1] || (a[0] < b[0] ? -1 : 1));
  await mkdir(dirname(path), { recursive: true });
  await writeFile(
    path,
    `origin,destination,hour,dayOfWeek,frequency\n${rows.map(([k, n]) => `${k},${n}`).join("\n")}\n`,
  );
  return rows.length;
}
