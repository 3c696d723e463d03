/**
 * predcache/client — look predictions up in a downloaded table, offline, and ask the
 * server only for the rest. Browser-safe: fetch, ArrayBuffer, WebCrypto, msgpackr and
 * the shared encoding; no Node-only imports.
 */
export type { Prediction } from "../model/decoding.ts";
export { createEncoder } from "../model/encoding.ts";
export { TableFormatError } from "../table/format.ts";
export {
  type ExperimentArm,
  type HybridAnswer,
  HybridClient,
  type HybridClientOptions,
  PendingAnswerError,
  type RefreshOutcome,
  RequestTimeoutError,
  ServerError,
  ServerUnreachableError,
} from "./hybrid-client.ts";
export {
  InvalidInputError,
  LookupTable,
  type OpenOptions,
  type TableLookup,
} from "./lookup-table.ts";
