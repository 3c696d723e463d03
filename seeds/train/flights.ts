/**
 * Loads the 3M real US flights (Jan–Jun 2001) that the vega-datasets package ships, as
 * columns: origin, destination, local departure hour, ISO day of week, delay minutes.
 */
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { asyncBufferFromFile, parquetMetadataAsync, parquetRead } from "hyparquet";
import { compressors } from "hyparquet-compressors";

export interface Flights {
  count: number;
  origin: string[];
  destination: string[];
  hour: Uint8Array;
  /** ISO day of week: 1 = Monday … 7 = Sunday. */
  dayOfWeek: Uint8Array;
  /** Departure date as days since 1970-01-01, for a time-ordered split. */
  day: Uint32Array;
  delay: Float32Array;
}

export function vegaDataPath(file: string): string {
  // The package exports only its JS entry; its data files sit beside package.json.
  const entry = createRequire(import.meta.url).resolve("vega-datasets"); // <root>/build/index.js
  return join(dirname(dirname(entry)), "data", file);
}

export async function loadFlights(): Promise<Flights> {
  const file = await asyncBufferFromFile(vegaDataPath("flights-3m.parquet"));
  const metadata = await parquetMetadataAsync(file);
  const count = Number(metadata.num_rows);
  const flights: Flights = {
    count,
    origin: new Array<string>(count),
    destination: new Array<string>(count),
    hour: new Uint8Array(count),
    dayOfWeek: new Uint8Array(count),
    day: new Uint32Array(count),
    delay: new Float32Array(count),
  };
  await parquetRead({
    file,
    metadata,
    compressors,
    columns: ["date", "delay", "origin", "destination"],
    onChunk: ({ columnName, columnData, rowStart }) => {
      for (let i = 0; i < columnData.length; i++) {
        const row = rowStart + i;
        if (row >= count) break;
        const value = columnData[i];
        if (columnName === "date") {
          // Timestamps are local wall-clock time stored without a zone: read them as UTC.
          const date = value as Date;
          flights.hour[row] = date.getUTCHours();
          flights.dayOfWeek[row] = ((date.getUTCDay() + 6) % 7) + 1;
          flights.day[row] = Math.floor(date.getTime() / 86_400_000);
        } else if (columnName === "delay") {
          flights.delay[row] = Number(value);
        } else if (columnName === "origin") {
          flights.origin[row] = value as string;
        } else if (columnName === "destination") {
          flights.destination[row] = value as string;
        }
      }
    },
  });
  return flights;
}
