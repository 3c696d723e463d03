/**
 * Whether a loaded version's folder still holds it (its manifest and model file): one
 * whose folder was removed since it was loaded is served until the next restart, which
 * would not load it; made active, every lookup of the model would then be unanswerable.
 */
import { stat } from "node:fs/promises";
import { join, resolve } from "node:path";
import type { ModelVersion } from "./registry.ts";

/** True when the version's manifest or model file is no longer where it was loaded from. */
export async function folderGone(version: ModelVersion): Promise<boolean> {
  const files = [
    join(version.directory, "manifest.json"),
    resolve(version.directory, version.manifest.model),
  ];
  const missing = await Promise.all(
    files.map((file) =>
      stat(file).then(
        () => false,
        () => true,
      ),
    ),
  );
  return missing.some(Boolean);
}
