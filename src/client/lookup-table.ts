/**
 * A lookup table opened in memory: answers precomputed inputs locally, with no model and
 * no network. Works in browsers and Node (only ArrayBuffer, WebCrypto/msgpackr and the
 * shared encoding).
 */

import { isLowConfidence, type Prediction } from "../model/decoding.ts";
import { createEncoder, type Encoder, type InputIssue } from "../model/encoding.ts";
import {
  type AnyTableHeader,
  parseTable,
  TableFormatError,
  type TableView,
  verifyTable,
} from "../table/format.ts";
import { keyHashInto } from "../table/key-hash.ts";

/** Where getByKey hashes keys: no allocation per lookup. */
const hash = new Uint32Array(2);

export type TableLookup =
  | {
      status: "hit";
      key: string;
      prediction: Prediction;
      outOfDistribution: string[];
      /** Below the model's confidence bar (as the API's lowConfidence; false without one). */
      lowConfidence: boolean;
    }
  | { status: "miss"; key: string; outOfDistribution: string[] }
  | { status: "invalid"; issues: InputIssue[] };

export interface OpenOptions {
  /** Refuse a table built with another encoding (e.g. the one an app was built against). */
  encodingHash?: string;
  /** Refuse a table of another model. */
  model?: string;
}

export class InvalidInputError extends Error {
  override readonly name = "InvalidInputError";
  constructor(readonly issues: InputIssue[]) {
    super(`invalid input: ${issues.map((i) => i.message).join("; ")}`);
  }
}

export class LookupTable {
  private constructor(
    private readonly view: TableView,
    readonly encoder: Encoder,
  ) {}

  /**
   * Verifies magic, format version, checksum and encoding, then opens the table.
   * Throws TableFormatError (code "table_corrupt") on any mismatch: a corrupt,
   * truncated or foreign table is refused, never half-used.
   *
   * The table reads from the bytes given, not a copy (a large table is not held twice):
   * they must not be changed while it is in use.
   *
   * @example
   *   const table = await LookupTable.open(await (await fetch(url)).arrayBuffer());
   *   table.get({ origin: "SFO", destination: "LAX", hour: 7, dayOfWeek: 1 });
   */
  static async open(
    data: ArrayBuffer | Uint8Array,
    options: OpenOptions = {},
  ): Promise<LookupTable> {
    const bytes = data instanceof Uint8Array ? data : new Uint8Array(data);
    const view = parseTable(bytes);
    await verifyTable(bytes);
    const { header } = view;
    const encoder = createEncoder(header.inputSchema);
    if (encoder.hash !== header.encodingHash) {
      throw new TableFormatError(
        `the table's input schema hashes to ${encoder.hash}, not its stated encoding ${header.encodingHash}`,
        16,
      );
    }
    if (options.encodingHash && options.encodingHash !== header.encodingHash) {
      throw new TableFormatError(
        `the table uses encoding ${header.encodingHash}, this app expects ${options.encodingHash}`,
        16,
      );
    }
    if (options.model && options.model !== header.model) {
      throw new TableFormatError(`the table is of model ${header.model}, not ${options.model}`, 16);
    }
    return new LookupTable(view, encoder);
  }

  /** The header (version 2's, or a version 1 table's: the description fields are common). */
  get header(): AnyTableHeader {
    return this.view.header;
  }

  /** The table's content hash (its trailing SHA-256), also its HTTP ETag. */
  get checksum(): string {
    return this.view.checksum;
  }

  get size(): number {
    return this.view.size;
  }

  /** The file's format version (1: an older table, still read). */
  get formatVersion(): 1 | 2 {
    return this.view.version;
  }

  /** The raw file, e.g. to compute a delta against or to store offline. */
  get bytes(): Uint8Array {
    return this.view.bytes;
  }

  /** The prediction for a canonical key (as the shared encoding makes it), if covered. */
  getByKey(key: string): Prediction | undefined {
    keyHashInto(key, hash);
    const i = this.view.find(hash[0] as number, hash[1] as number);
    return i < 0 ? undefined : this.view.prediction(i);
  }

  /**
   * The prediction stored under a key's hash (as entries() gives them), if any. Matches
   * the top 56 bits, all a version 2 table stores, so hashes from entries() of a table of
   * either version find their entry here.
   */
  getByHash(hi: number, lo: number): Prediction | undefined {
    const i = this.view.findTableHash(hi >>> 0, lo >>> 0);
    return i < 0 ? undefined : this.view.prediction(i);
  }

  /**
   * Every entry in hash order, as its key hash and prediction (a table stores no keys):
   * to compare two tables entry by entry. Version 2 tables store the top 56 bits of each
   * hash: `lo`'s low 8 bits are 0.
   */
  *entries(): Generator<{ hi: number; lo: number; prediction: Prediction }> {
    const { hi, lo } = this.view.hashes();
    for (let i = 0; i < hi.length; i++)
      yield { hi: hi[i] as number, lo: lo[i] as number, prediction: this.view.prediction(i) };
  }

  /** Encodes the input with the shared encoding and looks it up. */
  lookup(input: Readonly<Record<string, unknown>>): TableLookup {
    const encoded = this.encoder.encode(input);
    if (!encoded.ok) return { status: "invalid", issues: encoded.issues };
    const { key, outOfDistribution } = encoded.value;
    const prediction = this.getByKey(key);
    return prediction
      ? {
          status: "hit",
          key,
          prediction,
          outOfDistribution,
          lowConfidence: isLowConfidence(this.header, prediction),
        }
      : { status: "miss", key, outOfDistribution };
  }

  /** The prediction, or undefined when the table does not cover the input; throws InvalidInputError. */
  get(input: Readonly<Record<string, unknown>>): Prediction | undefined {
    const result = this.lookup(input);
    if (result.status === "invalid") throw new InvalidInputError(result.issues);
    return result.status === "hit" ? result.prediction : undefined;
  }

  /** The parsed file (for deltas). */
  get parsed(): TableView {
    return this.view;
  }
}
