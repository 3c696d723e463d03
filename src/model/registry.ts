/**
 * Which models and versions exist: every folder under the models directory that holds a
 * manifest.json (and its ONNX file) is one model version. Several folders may carry the
 * same model name — those are that model's versions. A version id is a content hash of
 * the ONNX bytes, the encoding and the output decoding, so it changes exactly when a
 * cached answer could change.
 *
 *   models/
 *     flight-delay/            ← any folder name
 *       manifest.json          ← name: "flight-delay"
 *       model.onnx
 *     flight-delay-v2/         ← a second version of the same model
 *       manifest.json
 *       model.onnx
 */
import { readdir, readFile, stat } from "node:fs/promises";
import { join, resolve } from "node:path";
import { canonicalJson } from "./canonical-json.ts";
import { createEncoder, type Encoder } from "./encoding.ts";
import { sha256Hex } from "./hash.ts";
import { type Manifest, manifestSchema } from "./manifest.ts";
import { type OnnxSignature, onnxSignature, signatureIssues } from "./onnx-signature.ts";
import { ModelRuntime, type RuntimeOptions } from "./runtime.ts";

export interface ModelVersion {
  name: string;
  version: string;
  manifest: Manifest;
  encoder: Encoder;
  /** Folder the version was loaded from. */
  directory: string;
  modelBytes: number;
  /**
   * When the ONNX file came to this installation: its status-change time, which copying
   * (cp -a, tar, rsync) cannot carry over, unlike the modification time they keep. The
   * newest version is the default active one, and gc keeps the newest.
   */
  installedAt: Date;
  /** The manifest's common-input set, resolved against its folder. */
  commonInputs: string | undefined;
}

export class ManifestError extends Error {
  override readonly name = "ManifestError";
}

/**
 * Content hash: ONNX bytes + encoding hash + output decoding, with what an answer's flags
 * are read by (the main output and its confidence threshold: `lowConfidence`, which a
 * table carries as it was built, so a changed threshold is another version, not a table
 * and a server that disagree).
 */
export function versionOf(model: Uint8Array, manifest: Manifest, encoder: Encoder): string {
  const outputs = canonicalJson(manifest.outputs.map(({ description: _, ...o }) => o));
  const flags = canonicalJson({
    mainOutput: manifest.mainOutput ?? null,
    confidenceThreshold: manifest.confidenceThreshold ?? null,
  });
  const modelHash = sha256Hex(model);
  return sha256Hex(`${modelHash}\n${encoder.hash}\n${outputs}\n${flags}`).slice(0, 12);
}

export async function loadModelVersion(
  directory: string,
): Promise<{ model: ModelVersion; bytes: Uint8Array }> {
  const manifestPath = join(directory, "manifest.json");
  let json: unknown;
  try {
    json = JSON.parse(await readFile(manifestPath, "utf8"));
  } catch (error) {
    throw new ManifestError(`${manifestPath}: ${(error as Error).message}`);
  }
  const parsed = manifestSchema.safeParse(json);
  if (!parsed.success) {
    const problems = parsed.error.issues.map(
      (i) => `${i.path.join(".") || "(root)"}: ${i.message}`,
    );
    throw new ManifestError(`${manifestPath} is not a valid manifest:\n  ${problems.join("\n  ")}`);
  }
  const manifest = parsed.data;
  const modelPath = resolve(directory, manifest.model);
  const bytes = new Uint8Array(await readFile(modelPath));
  let signature: OnnxSignature;
  try {
    signature = onnxSignature(bytes);
  } catch (error) {
    throw new ManifestError(`${modelPath} is not an ONNX model: ${(error as Error).message}`);
  }
  const issues = signatureIssues(manifest, signature);
  if (issues.length > 0)
    throw new ManifestError(`${manifestPath} does not fit its model:\n  ${issues.join("\n  ")}`);
  const encoder = createEncoder(manifest.encoding);
  return {
    bytes,
    model: {
      name: manifest.name,
      version: versionOf(bytes, manifest, encoder),
      manifest,
      encoder,
      directory: resolve(directory),
      modelBytes: bytes.length,
      installedAt: (await stat(modelPath)).ctime,
      commonInputs:
        manifest.commonInputs === undefined ? undefined : resolve(directory, manifest.commonInputs),
    },
  };
}

export class ModelRegistry {
  private readonly byName = new Map<string, ModelVersion[]>();
  private readonly bytes = new Map<string, Uint8Array>();
  private readonly runtimes = new Map<string, Promise<ModelRuntime>>();
  private readonly loadedDirectories = new Set<string>();
  private readonly loaded = new Set<string>();

  private root: string | undefined;
  private lastRescan = 0;

  constructor(private readonly runtimeOptions: RuntimeOptions = {}) {}

  /** Loads every model version found one level below `root`. */
  static async fromDirectory(
    root: string,
    runtimeOptions: RuntimeOptions = {},
  ): Promise<ModelRegistry> {
    const registry = new ModelRegistry(runtimeOptions);
    registry.root = root;
    await registry.scan(root);
    if (registry.byName.size === 0) throw new ManifestError(`no model manifests under ${root}`);
    return registry;
  }

  /**
   * Loads version folders added to the models directory since the start (a directory
   * drop); returns the new versions. Versions already loaded are kept as they are.
   * A folder that fails to load is reported in `failed` and skipped.
   */
  async reload(): Promise<{
    added: ModelVersion[];
    failed: { directory: string; error: string }[];
  }> {
    if (!this.root) return { added: [], failed: [] };
    this.lastRescan = Date.now();
    return this.scan(this.root);
  }

  /**
   * The version, loading new folders first when it is not known yet (a worker meeting a
   * version an operator registered through another process); at most one rescan a second.
   */
  async resolve(name: string, version: string): Promise<ModelVersion | undefined> {
    const known = this.get(name, version);
    if (known || Date.now() - this.lastRescan < 1_000) return known;
    await this.reload();
    return this.get(name, version);
  }

  private async scan(
    root: string,
  ): Promise<{ added: ModelVersion[]; failed: { directory: string; error: string }[] }> {
    const added: ModelVersion[] = [];
    const failed: { directory: string; error: string }[] = [];
    const initial = this.byName.size === 0;
    let entries: string[];
    try {
      entries = (await readdir(root, { withFileTypes: true }))
        .filter((e) => e.isDirectory())
        .map((e) => e.name);
    } catch (error) {
      throw new ManifestError(
        `cannot read models directory ${root}: ${(error as Error).message} (set PREDCACHE_MODELS_DIR)`,
      );
    }
    for (const entry of entries.sort()) {
      const directory = join(root, entry);
      if (this.loadedDirectories.has(directory)) continue;
      const hasManifest = await stat(join(directory, "manifest.json")).then(
        () => true,
        () => false,
      );
      if (!hasManifest) continue;
      try {
        const loaded = await loadModelVersion(directory);
        const model = this.add(loaded);
        this.loadedDirectories.add(directory);
        if (!initial && model === loaded.model) added.push(model);
      } catch (error) {
        // At start a broken manifest stops the service; a later drop is reported instead.
        if (initial) throw error;
        failed.push({ directory, error: (error as Error).message });
      }
    }
    return { added, failed };
  }

  add({ model, bytes }: { model: ModelVersion; bytes: Uint8Array }): ModelVersion {
    const versions = this.byName.get(model.name) ?? [];
    const existing = versions.find((v) => v.version === model.version);
    if (existing) return existing;
    versions.push(model);
    versions.sort(
      (a, b) =>
        a.installedAt.getTime() - b.installedAt.getTime() || (a.directory < b.directory ? -1 : 1),
    );
    this.byName.set(model.name, versions);
    this.bytes.set(`${model.name}@${model.version}`, bytes);
    return model;
  }

  names(): string[] {
    return [...this.byName.keys()].sort();
  }

  /** Versions of a model, oldest first (empty when the model is unknown). */
  versions(name: string): readonly ModelVersion[] {
    return this.byName.get(name) ?? [];
  }

  get(name: string, version: string): ModelVersion | undefined {
    return this.versions(name).find((v) => v.version === version);
  }

  /** The version served until an operator promotes another: the newest loaded. */
  defaultVersion(name: string): ModelVersion | undefined {
    return this.versions(name).at(-1);
  }

  /** The onnxruntime session of a version, created once on first use. */
  runtime(model: ModelVersion): Promise<ModelRuntime> {
    const id = `${model.name}@${model.version}`;
    let runtime = this.runtimes.get(id);
    if (!runtime) {
      const bytes = this.bytes.get(id);
      if (!bytes) throw new Error(`unknown model version ${id}`);
      runtime = ModelRuntime.load(model.manifest, bytes, this.runtimeOptions);
      runtime.then(
        () => this.loaded.add(id),
        () => this.runtimes.delete(id),
      );
      this.runtimes.set(id, runtime);
    }
    return runtime;
  }

  /** Whether the version's onnxruntime session is loaded (readiness). */
  isLoaded(model: ModelVersion): boolean {
    return this.loaded.has(`${model.name}@${model.version}`);
  }

  async close(): Promise<void> {
    const runtimes = await Promise.allSettled(this.runtimes.values());
    for (const r of runtimes) if (r.status === "fulfilled") await r.value.close();
    this.runtimes.clear();
    this.loaded.clear();
  }
}
