/** Model folders for tests and benchmarks: no vitest here, so benchmarks can use it too. */
import { copyFile, mkdir, mkdtemp, readFile, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";

/**
 * A models directory with the demo model and, for each name given, one more version of
 * it (same ONNX file, outputs rounded differently, so a different version id). It is made
 * in `parent`: tests pass the run's scratch folder (removed after the run; each of these
 * holds ~14 MB of model files), a benchmark removes it itself.
 */
export async function modelsDirWithVersions(
  extra: string[],
  parent: string = tmpdir(),
): Promise<string> {
  const root = await mkdtemp(join(parent, "predcache-models-"));
  const source = "seeds/models/flight-delay";
  const manifest = JSON.parse(await readFile(join(source, "manifest.json"), "utf8"));
  const versions = [
    { dir: "flight-delay", manifest },
    ...extra.map((label, i) => ({
      dir: `flight-delay-${label}`,
      manifest: {
        ...manifest,
        label,
        outputs: manifest.outputs.map((o: { digits: number }) => ({
          ...o,
          digits: o.digits + 1 + i,
        })),
      },
    })),
  ];
  for (const v of versions) {
    await mkdir(join(root, v.dir));
    await copyFile(join(source, "model.onnx"), join(root, v.dir, "model.onnx"));
    await writeFile(join(root, v.dir, "manifest.json"), JSON.stringify(v.manifest));
  }
  return root;
}
