/**
 * Where published tables live. Behind an interface so object storage can be added; the
 * default keeps them in a directory: <root>/<model>/<generation>.pctable. Publishing is a
 * rename of a verified temporary file, so readers see the old table or the new one,
 * never a partial one.
 */
import { createHash } from "node:crypto";
import { createReadStream } from "node:fs";
import { mkdir, open, readdir, readFile, rename, rm, stat } from "node:fs/promises";
import { basename, join } from "node:path";
import type { Readable } from "node:stream";
import { type AnyTableHeader, parseHeader, storedChecksum } from "./format.ts";

export interface TableInfo {
  model: string;
  generation: string;
  modelVersion: string;
  encodingHash: string;
  entryCount: number;
  bytes: number;
  checksum: string;
  created: string;
  source: string;
}

export interface TableStore {
  /** Tables of a model, newest first. */
  list(model: string): Promise<TableInfo[]>;
  get(model: string, generation: string): Promise<TableInfo | undefined>;
  read(model: string, generation: string): Promise<Uint8Array>;
  /** Streams bytes [start, end] (inclusive) of a table. */
  stream(model: string, generation: string, range?: { start: number; end: number }): Readable;
  /** Where a writer should put the file it will publish (same filesystem as the store). */
  tempPath(model: string, generation: string): Promise<string>;
  /** Atomically makes a finished temporary file the table `generation`. */
  publish(model: string, generation: string, tempFile: string): Promise<TableInfo>;
  remove(model: string, generation: string): Promise<void>;
  /** Moves a damaged table out of the listing, kept beside it for a look (not deleted). */
  setAside(model: string, generation: string): Promise<void>;
}

const SUFFIX = ".pctable";
const GENERATION = /^[0-9a-f]{12}\.[0-9a-z]{1,32}$/;

export function isGeneration(text: string): boolean {
  return GENERATION.test(text);
}

function infoOf(model: string, header: AnyTableHeader, bytes: number, checksum: string): TableInfo {
  return {
    model,
    generation: header.generation,
    modelVersion: header.modelVersion,
    encodingHash: header.encodingHash,
    entryCount: header.entryCount,
    bytes,
    checksum,
    created: header.created,
    source: header.source,
  };
}

export interface DirectoryTableStoreOptions {
  /** Told of a table found damaged on disk (it is then set aside, or at least not listed). */
  onDamaged?: (damage: { model: string; generation: string; reason: string }) => void;
}

/** The SHA-256 of a file's bytes before its 32-byte trailer, streamed (tables may be large). */
async function bodyChecksum(file: string, size: number): Promise<string> {
  const hash = createHash("sha256");
  if (size > 32)
    for await (const chunk of createReadStream(file, { end: size - 33 })) hash.update(chunk);
  return hash.digest("hex");
}

export class DirectoryTableStore implements TableStore {
  /** What each file was found to be, at its modification time and size (undefined: damaged). */
  private readonly cache = new Map<
    string,
    { mtimeMs: number; size: number; info: TableInfo | undefined }
  >();

  constructor(
    private readonly root: string,
    private readonly options: DirectoryTableStoreOptions = {},
  ) {}

  private path(model: string, generation: string): string {
    if (!isGeneration(generation) || !/^[a-z0-9][a-z0-9-]{0,62}$/.test(model))
      throw new Error("invalid table name");
    return join(this.root, model, `${generation}${SUFFIX}`);
  }

  /**
   * The header and trailing checksum of a table file, once its bytes are checked against
   * that checksum (once per version of the file): a table damaged on disk is not listed
   * nor served, whose every download a client would refuse. It is set aside, as the
   * precompute worker sets aside one it finds damaged, and the one before it is the latest.
   */
  private describe(model: string, file: string): Promise<TableInfo | undefined> {
    // Concurrent listings of a new file (a burst after a start) hash it once.
    let described = this.describing.get(file);
    if (!described) {
      described = this.describeNow(model, file).finally(() => this.describing.delete(file));
      this.describing.set(file, described);
    }
    return described;
  }

  private readonly describing = new Map<string, Promise<TableInfo | undefined>>();

  private async describeNow(model: string, file: string): Promise<TableInfo | undefined> {
    const stats = await stat(file).catch(() => undefined);
    if (!stats) return undefined;
    const cached = this.cache.get(file);
    if (cached && cached.mtimeMs === stats.mtimeMs && cached.size === stats.size)
      return cached.info;
    const handle = await open(file, "r").catch(() => undefined);
    if (!handle) return undefined; // replaced or set aside since the stat
    let info: TableInfo;
    try {
      const preamble = Buffer.alloc(16);
      await handle.read(preamble, 0, 16, 0);
      const headerLength = preamble.readUInt32LE(12);
      const head = Buffer.alloc(16 + headerLength);
      await handle.read(head, 0, head.length, 0);
      const trailer = Buffer.alloc(32);
      await handle.read(trailer, 0, 32, stats.size - 32);
      const header = parseHeader(head, stats.size);
      // A file whose name or folder disagrees with its header would be listed under a URL
      // that does not serve it (e.g. copied by hand): not listed.
      if (`${header.generation}${SUFFIX}` !== basename(file) || header.model !== model)
        return undefined;
      info = infoOf(model, header, stats.size, storedChecksum(trailer));
    } catch (error) {
      // Published under its final name only once whole (publish renames): a table's name
      // with no table in it is damage (cut short: a full disk, a copy stopped), as a
      // checksum mismatch is.
      const generation = basename(file).slice(0, -SUFFIX.length);
      if (isGeneration(generation))
        await this.damaged(
          model,
          file,
          stats,
          generation,
          `unreadable (${(error as Error).message})`,
        );
      return undefined;
    } finally {
      await handle.close();
    }
    const actual = await bodyChecksum(file, stats.size).catch(() => undefined);
    if (actual === undefined) return undefined; // gone since (set aside by another)
    if (actual === info.checksum) {
      this.cache.set(file, { mtimeMs: stats.mtimeMs, size: stats.size, info });
      return info;
    }
    await this.damaged(model, file, stats, info.generation, "checksum mismatch");
    return undefined;
  }

  /** Not listed from now on: set aside as .damaged, and said (onDamaged). */
  private async damaged(
    model: string,
    file: string,
    stats: { mtimeMs: number; size: number },
    generation: string,
    why: string,
  ): Promise<void> {
    this.cache.set(file, { mtimeMs: stats.mtimeMs, size: stats.size, info: undefined });
    const setAside = await this.setAside(model, generation).then(
      () => "set aside (as .damaged)",
      (failure: Error) => `not listed; could not be set aside (${failure.message})`,
    );
    this.options.onDamaged?.({ model, generation, reason: `${why}: ${setAside}` });
  }

  async list(model: string): Promise<TableInfo[]> {
    const dir = join(this.root, model);
    const files = await readdir(dir).catch(() => [] as string[]);
    const infos = await Promise.all(
      files.filter((f) => f.endsWith(SUFFIX)).map((f) => this.describe(model, join(dir, f))),
    );
    return infos
      .filter((i): i is TableInfo => i !== undefined)
      .sort((a, b) => (a.created < b.created ? 1 : a.created > b.created ? -1 : 0));
  }

  get(model: string, generation: string): Promise<TableInfo | undefined> {
    if (!isGeneration(generation)) return Promise.resolve(undefined);
    return this.describe(model, this.path(model, generation));
  }

  async read(model: string, generation: string): Promise<Uint8Array> {
    return new Uint8Array(await readFile(this.path(model, generation)));
  }

  stream(model: string, generation: string, range?: { start: number; end: number }): Readable {
    return createReadStream(
      this.path(model, generation),
      range ? { start: range.start, end: range.end } : {},
    );
  }

  async tempPath(model: string, generation: string): Promise<string> {
    await mkdir(join(this.root, model), { recursive: true });
    return `${this.path(model, generation)}.${process.pid}.tmp`;
  }

  async publish(model: string, generation: string, tempFile: string): Promise<TableInfo> {
    const target = this.path(model, generation);
    await rename(tempFile, target);
    // The rename is the publish: make it durable before anyone is told of the table.
    const folder = await open(join(this.root, model), "r");
    try {
      await folder.sync();
    } finally {
      await folder.close();
    }
    const info = await this.describe(model, target);
    if (!info) throw new Error(`published table ${generation} cannot be read back`);
    return info;
  }

  async remove(model: string, generation: string): Promise<void> {
    await rm(this.path(model, generation), { force: true });
  }

  async setAside(model: string, generation: string): Promise<void> {
    const path = this.path(model, generation);
    await rename(path, `${path}.damaged`).catch((error: NodeJS.ErrnoException) => {
      // Another worker set it aside first.
      if (error.code !== "ENOENT") throw error;
    });
  }
}
