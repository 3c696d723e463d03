/**
 * The OpenAPI 3.1 document of the HTTP API, built from what the service validates with:
 * request bodies from the zod schemas the routes parse (z.toJSONSchema, for zod and
 * zod/mini alike), each model's input schema from its manifest's encoding (the definition
 * the encoder checks inputs against), limits from the settings. Built per request by
 * /openapi.json, so a reloaded model or a promoted version shows at once.
 */
import { createRequire } from "node:module";
import { z } from "zod";
import { runRequestSchema, sourceSchema } from "../../precompute/spec.ts";
import type { Source } from "../cache/tiers.ts";
import { type ErrorCode, statusOf } from "../errors.ts";
import { ARMS, startSchema, stopSchema, updateSchema } from "../experiment/experiment.ts";
import {
  encodingSchema,
  type Feature,
  type Manifest,
  modelCardSchema,
  type OutputDefinition,
  outputsSchema,
} from "../model/manifest.ts";
import type { ModelVersion } from "../model/registry.ts";
import type { ApiDeps } from "./deps.ts";
import { batchSchema } from "./routes/predict.ts";

type Schema = { [key: string]: unknown };

const VERSION: string = createRequire(import.meta.url)("../../package.json").version;
const JSON_TYPE = "application/json";
const TABLE_TYPE = "application/vnd.predcache.table";
const DELTA_TYPE = "application/vnd.predcache.table-delta";

/** Every error code (a Record, so the compiler insists on each one). */
const ERROR_CODES = Object.keys({
  bad_request: 0,
  invalid_input: 0,
  unauthorized: 0,
  forbidden: 0,
  model_not_found: 0,
  version_not_found: 0,
  not_found: 0,
  method_not_allowed: 0,
  conflict: 0,
  payload_too_large: 0,
  unsupported_media_type: 0,
  range_not_satisfiable: 0,
  precondition_failed: 0,
  rate_limited: 0,
  redis_unavailable: 0,
  version_unavailable: 0,
  overloaded: 0,
  inference_failed: 0,
  internal: 0,
} satisfies Record<ErrorCode, 0>) as ErrorCode[];

const SOURCES = Object.keys({ memory: 0, table: 0, redis: 0, live: 0 } satisfies Record<Source, 0>);

// ---------------------------------------------------------------- schema helpers

const ref = (name: string): Schema => ({ $ref: `#/components/schemas/${name}` });
const str = (extra: Schema = {}): Schema => ({ type: "string", ...extra });
const int = (extra: Schema = {}): Schema => ({ type: "integer", ...extra });
const num = (extra: Schema = {}): Schema => ({ type: "number", ...extra });
const bool: Schema = { type: "boolean" };
const arr = (items: Schema, extra: Schema = {}): Schema => ({ type: "array", items, ...extra });
const orNull = (schema: Schema): Schema => ({ ...schema, type: [schema.type, "null"] });

/** An object whose properties are all required except those named in `optional`. */
function obj(properties: Record<string, Schema>, optional: string[] = [], extra: Schema = {}) {
  const required = Object.keys(properties).filter((k) => !optional.includes(k));
  return { type: "object", properties, ...(required.length > 0 ? { required } : {}), ...extra };
}

/** `base` (an object schema, or a reference to one) with more properties. */
function extend(base: Schema, properties: Record<string, Schema>): Schema {
  if (base.$ref) return { allOf: [base, obj(properties)] };
  return {
    ...base,
    properties: { ...(base.properties as Schema), ...properties },
    required: [...new Set([...((base.required as string[]) ?? []), ...Object.keys(properties)])],
  };
}

/**
 * JSON Schemas of zod schemas (zod or zod/mini) as components: one registry, so a schema
 * used inside another becomes a $ref to its component.
 */
function zodComponents(
  io: "input" | "output",
  entries: Record<string, z.core.$ZodType>,
): Record<string, Schema> {
  const registry = z.registry<{ id: string }>();
  for (const [id, schema] of Object.entries(entries)) registry.add(schema, { id });
  const { schemas } = z.toJSONSchema(registry, {
    io,
    uri: (id) => `#/components/schemas/${id}`,
  });
  return Object.fromEntries(
    Object.entries(schemas).map(([id, { $schema: _, $id: __, ...schema }]) => [id, schema]),
  );
}

// ---------------------------------------------------------------- per-model schemas

/** A flagged value is accepted outside the known set and marked outOfDistribution. */
function flagged(known: Schema, other: Schema, what: string): Schema {
  return {
    type: known.type,
    anyOf: [
      { ...known, description: `a ${what}` },
      { ...other, description: "any other value: answered and flagged outOfDistribution" },
    ],
  };
}

/**
 * The JSON Schema of one input feature, from its manifest definition — the one the
 * encoder validates against (src/model/encoding.ts) — as a query parameter or (`inBody`)
 * as a field of a JSON body.
 */
export function featureJsonSchema(feature: Feature, inBody = false): Schema {
  const notes: string[] = feature.description ? [feature.description] : [];
  let schema: Schema;
  switch (feature.type) {
    case "categorical": {
      if (inBody) notes.push("a JSON number is read as its decimal text");
      const known = str({ enum: feature.vocabulary });
      if (feature.normalize !== "none")
        notes.push(`case-insensitive (normalized to ${feature.normalize} case)`);
      schema =
        feature.unknown === "flag"
          ? flagged(known, str({ minLength: 1, maxLength: 256 }), "known value")
          : known;
      break;
    }
    case "integer":
    case "number": {
      if (inBody) notes.push("decimal text is read too, as in a query string");
      const known = { type: feature.type, minimum: feature.min, maximum: feature.max };
      schema =
        feature.outOfRange === "flag"
          ? flagged(known, { type: feature.type }, `value in the trained range`)
          : known;
      break;
    }
    case "string":
      if (inBody) notes.push("a JSON number is read as its decimal text");
      if (feature.normalize !== "none") notes.push(`normalized to ${feature.normalize} case`);
      schema = str({ maxLength: feature.maxLength });
      break;
  }
  if (feature.default !== undefined) schema.default = feature.default;
  if (notes.length > 0) schema.description = notes.join("; ");
  return schema;
}

/** A model's input: one property per feature, required unless it has a default. */
export function modelInputSchema(manifest: Manifest): Schema {
  const { features } = manifest.encoding;
  return obj(
    Object.fromEntries(features.map((f) => [f.name, featureJsonSchema(f, true)])),
    features.filter((f) => f.default !== undefined).map((f) => f.name),
    { additionalProperties: false },
  );
}

function outputJsonSchema(output: OutputDefinition): Schema {
  const description = [output.description, output.unit && `unit: ${output.unit}`]
    .filter(Boolean)
    .join("; ");
  const labels = output.labels ?? [];
  const schema =
    output.kind === "classes"
      ? obj({
          label: str({ enum: labels }),
          probabilities: obj(Object.fromEntries(labels.map((l) => [l, num()]))),
        })
      : num(output.kind === "probability" ? { minimum: 0, maximum: 1 } : {});
  return description ? { ...schema, description } : schema;
}

const PREDICTION_VALUE: Schema = {
  anyOf: [
    num(),
    obj({ label: str(), probabilities: obj({}, [], { additionalProperties: num() }) }),
  ],
};

function predictionReplySchema(prediction: Schema): Schema {
  return obj(
    {
      model: str(),
      version: str(),
      key: str({ description: "canonical input: the normalized values in schema order" }),
      source: str({ enum: SOURCES, description: "the tier that answered" }),
      prediction,
      outOfDistribution: bool,
      outOfDistributionFields: arr(str()),
      lowConfidence: bool,
      experiment: ref("ArmLabel"),
    },
    ["outOfDistributionFields", "experiment"],
  );
}

function batchItemSchema(reply: Schema): Schema {
  return {
    anyOf: [
      extend(reply, { status: int({ const: 200 }) }),
      obj({
        status: int({ const: 202 }),
        model: str(),
        version: str(),
        key: str({ description: "the canonical key being computed" }),
        job: ref("JobLink"),
      }),
      {
        allOf: [
          ref("Error"),
          obj(
            {
              status: int({ description: "the HTTP status of this item" }),
              key: str({ description: "the canonical key: a valid input's that failed (no 422)" }),
            },
            ["key"],
          ),
        ],
      },
    ],
  };
}

// ---------------------------------------------------------------- shared components

const TABLE_INFO = obj({
  model: str(),
  generation: str(),
  modelVersion: str(),
  encodingHash: str(),
  entryCount: int(),
  bytes: int(),
  checksum: str({ description: "SHA-256 of the file (hex); also its ETag" }),
  created: str({ format: "date-time" }),
  source: str(),
  url: str(),
});

const VERSION_SUMMARY = obj({
  version: str(),
  label: orNull(str()),
  encodingHash: str(),
  active: bool,
  modelBytes: int(),
});

const SWITCHED = obj(
  {
    model: str(),
    active: str(),
    previous: orNull(str()),
    warnings: arr(str(), {
      description:
        "a promote's warnings: a version with nothing precomputed sends every lookup to the live model",
    }),
  },
  ["warnings"],
);

const HISTOGRAM = obj({
  bins: arr(
    obj({
      upTo: orNull(num({ description: "upper edge; null: the open last bin" })),
      count: int(),
    }),
  ),
});

const TABLE_SIDE = { anyOf: [obj({ generation: str(), entries: int() }), { type: "null" }] };

/** The experiment schemas (src/experiment/experiment.ts and report.ts). */
function experimentComponents(): Record<string, Schema> {
  const share = (description: string) => num({ minimum: 0, maximum: 1, description });
  const experiment = ref("Experiment");
  return {
    ArmLabel: obj(
      { id: str({ description: "the experiment" }), arm: str({ enum: [...ARMS] }) },
      [],
      { description: "which experiment arm answered, while the model runs an experiment" },
    ),
    Experiment: obj(
      {
        id: str(),
        model: str(),
        control: str({ description: "the version the control arm is served (active at start)" }),
        candidate: str({ description: "the version the candidate arm is served" }),
        fraction: share("share of clients in the candidate arm"),
        shadowRate: share("share of lookups also answered by the other arm's version"),
        state: str({ enum: ["running", "promoted", "reverted"] }),
        startedAt: str({ format: "date-time" }),
        stoppedAt: str({ format: "date-time" }),
        clientIds: str({
          enum: ["whole"],
          description:
            "whole: the whole client id is hashed (absent in experiments started by older releases: its first 256 characters)",
        }),
      },
      ["stoppedAt", "clientIds"],
    ),
    ExperimentStarted: extend(experiment, {
      url: str({ description: "its report" }),
      warnings: arr(str(), {
        description:
          "inputs control answers and the candidate refuses (422 for its cohort): a narrower range or vocabulary, a feature it requires or does not take",
      }),
    }),
    ExperimentChanged: extend(experiment, {
      warnings: arr(str(), {
        description:
          "a shrunk split's: candidate clients past the new fraction are served control from then on",
      }),
    }),
    ExperimentStopped: extend(experiment, {
      active: str({ description: "the model's active version now" }),
      warnings: arr(str(), {
        description:
          "with outcome promote, a promote's warnings: a candidate with nothing precomputed sends every lookup to the live model",
      }),
    }),
    ExperimentList: obj({ model: str(), experiments: arr(experiment) }),
    Histogram: HISTOGRAM,
    ArmReport: obj({
      version: str(),
      lookups: int({ description: "failed and refused ones included" }),
      failed: int({ description: "lookups answered with an error (5xx)" }),
      refused: int({
        description: "lookups refused (422): input the arm's version does not take",
      }),
      anonymous: int({
        description:
          "lookups without a client id or API key, all served control (not a random cohort: compare with care)",
      }),
      hits: int(),
      hitRatio: orNull(num()),
      main: extend(HISTOGRAM, {
        output: str({ description: "the main output" }),
        count: int({ description: "answers with a value" }),
        mean: orNull(num()),
        stddev: orNull(num()),
      }),
      agreement: obj(
        {
          compared: int(),
          agreed: int(),
          rate: orNull(num()),
          meanAbsDiff: orNull(num()),
          notCompared: obj({ dropped: int(), refused: int(), failed: int() }, [], {
            description:
              "samples not compared: dropped (too many pending), refused by the other version (an input it does not take), failed",
          }),
        },
        [],
        { description: "shadow comparisons with the other arm's version" },
      ),
    }),
    TableComparison: obj({
      control: TABLE_SIDE,
      candidate: TABLE_SIDE,
      common: int({ description: "inputs both versions' newest tables cover" }),
      changed: int({ description: "of those, main output differs" }),
      disagreeing: int({ description: "of those, no longer agree (agreementRule)" }),
      meanAbsChange: orNull(num()),
      maxAbsChange: orNull(num()),
      changes: ref("Histogram"),
    }),
    ExperimentReport: extend(experiment, {
      agreementRule: str(),
      arms: obj({ control: ref("ArmReport"), candidate: ref("ArmReport") }),
      tables: ref("TableComparison"),
    }),
  };
}

function components(): Record<string, Schema> {
  return {
    Error: obj({
      error: obj(
        {
          // node:http's own refusals, before any route: headers_too_large (431),
          // expectation_failed (417, an Expect other than 100-continue), not_implemented
          // (501, a method node does not know).
          code: str({
            enum: [...ERROR_CODES, "headers_too_large", "expectation_failed", "not_implemented"],
          }),
          message: str(),
          details: { description: "more about the error, e.g. issues: every offending field" },
        },
        ["details"],
      ),
    }),
    JobLink: obj({ id: str(), url: str() }),
    Pending: obj(
      {
        status: str({ const: "pending" }),
        state: str({
          enum: ["queued", "running", "retrying"],
          description: "where the live job is (polls only)",
        }),
        model: str(),
        version: str({ description: "the version computing the answer" }),
        key: str({ description: "the canonical key of the input" }),
        experiment: ref("ArmLabel"),
        job: ref("JobLink"),
      },
      ["state", "model", "version", "key", "experiment"],
    ),
    PredictionReply: predictionReplySchema(obj({}, [], { additionalProperties: PREDICTION_VALUE })),
    Health: obj({ status: str({ const: "ok" }) }),
    Readiness: obj({
      status: str({ enum: ["ready", "not_ready"] }),
      redis: obj({ reachable: bool, ms: num({ description: "the PING's round trip" }) }),
      models: arr(
        obj({
          name: str(),
          activeVersion: orNull(str()),
          known: bool,
          loaded: bool,
        }),
      ),
      liveWorkers: orNull(
        int({ description: "workers taking the live queue, in any process (null: unknown)" }),
      ),
      pausedQueues: orNull(
        arr(str(), {
          description:
            "queues paused in Redis (BullMQ pause, e.g. from /admin/queues; it outlives restarts): live, precompute, precompute-chunks (null: unknown)",
        }),
      ),
      warnings: arr(str(), {
        description:
          "e.g. no live worker, or the live queue paused: misses are never computed; not reasons to be unready",
      }),
    }),
    ModelList: obj({
      models: arr(
        obj({
          name: str(),
          activeVersion: orNull(str()),
          summary: orNull(str()),
          inputs: arr(str()),
          outputs: arr(str()),
          versions: arr(VERSION_SUMMARY),
          links: obj({ self: str(), predict: str() }),
        }),
      ),
    }),
    ModelDetail: obj(
      {
        name: str(),
        version: str({
          description: "the version this client is served (in an experiment, its arm's)",
        }),
        experiment: ref("ArmLabel"),
        activeVersion: orNull(str()),
        label: orNull(str()),
        encodingHash: str(),
        inputSchema: ref("Encoding"),
        outputs: ref("Outputs"),
        mainOutput: str(),
        confidenceThreshold: orNull(num()),
        card: ref("ModelCard"),
        versions: arr(VERSION_SUMMARY),
      },
      ["experiment"],
    ),
    TableInfo: TABLE_INFO,
    TableListing: obj(
      {
        model: str(),
        activeVersion: orNull(str()),
        servedVersion: orNull(
          str({
            description:
              "the version this client's lookups are answered by (its arm's while an experiment runs); latest is its newest table",
          }),
        ),
        experiment: ref("ArmLabel"),
        latest: { anyOf: [ref("TableInfo"), { type: "null" }] },
        tables: arr(ref("TableInfo")),
      },
      ["experiment"],
    ),
    RunAccepted: obj({ runId: str(), model: str(), version: str(), url: str() }),
    RunStatus: obj(
      {
        id: str(),
        model: str(),
        version: str(),
        source: {
          anyOf: [
            ref("PrecomputeSource"),
            obj(
              {
                kind: str({ const: "inline" }),
                inputs: arr({}, { maxItems: 0 }),
                count: int({ description: "inputs uploaded (kept with the run's job)" }),
              },
              ["count"],
            ),
          ],
        },
        sourceDescription: str(),
        promote: bool,
        state: str({
          enum: ["planning", "running", "finishing", "completed", "failed", "cancelled"],
        }),
        chunks: obj({ planned: int(), total: orNull(int()), done: int() }),
        rows: int({ description: "distinct inputs of the chunks finished so far" }),
        written: int({
          description:
            "predictions this run added, counted as each write is made (chunks still going, or cut off by a cancel, included): on a cancelled run it can exceed what rows and skipped count",
        }),
        skipped: int({
          description:
            "inputs of finished chunks that were stored before (by another run or the live model)",
        }),
        observedRefused: int({
          description:
            "observed inputs (traffic source, warm) left out because this version refuses them",
        }),
        createdAt: int({ description: "ms since the epoch" }),
        finishedAt: orNull(int()),
        rate: num({ description: "rows per second" }),
        etaSeconds: orNull(num()),
        error: orNull(str()),
        table: orNull(str({ description: "the table generation the run published" })),
        promotedFrom: orNull(
          str({
            description:
              "set once a run with promote made its version active: the version it replaced (empty: none)",
          }),
        ),
        promoteSkipped: orNull(
          str({
            description:
              "why a run with promote did not promote: another version was made active while it ran (that switch stands)",
          }),
        ),
      },
      [],
    ),
    VersionList: obj({
      model: str(),
      versions: arr(
        obj({
          version: str(),
          label: orNull(str()),
          loaded: bool,
          loadedAt: orNull(str({ format: "date-time" })),
          active: bool,
          rollbackTarget: bool,
          entries: int({
            description:
              "predictions precompute runs stored for the version (each counted once, as Redis added it); live answers are not counted",
          }),
          lastRun: orNull(str()),
          tables: arr(
            obj({
              generation: str(),
              entryCount: int(),
              bytes: int(),
              created: str(),
              url: str(),
            }),
          ),
        }),
      ),
    }),
    Switched: SWITCHED,
    Reloaded: obj({
      model: str(),
      added: arr(obj({ version: str(), directory: str() })),
      failed: arr({ description: "a version folder that failed to load, and why" }),
      versions: arr(str()),
    }),
    GcReport: obj({
      model: str(),
      dryRun: bool,
      kept: arr(str()),
      collected: arr(
        obj({ version: str(), keysDeleted: int(), tablesDeleted: int(), tableBytes: int() }),
      ),
      olderTablesDeleted: int(),
      bytesFreedOnDisk: int(),
      runKeyListsDeleted: int({
        description:
          "lists of chunk keys ended runs left behind (a run deletes its own as it ends)",
      }),
    }),
    AuditLog: obj({
      entries: arr(
        obj(
          {
            id: str(),
            at: str({ format: "date-time" }),
            actor: str(),
            action: str(),
            target: str(),
            status: int(),
            detail: str({
              description: "what was done: the run started, the versions switched (from → to)",
            }),
          },
          ["detail"],
        ),
      ),
    }),
    ...experimentComponents(),
    ...zodComponents("input", {
      StartExperiment: startSchema,
      UpdateExperiment: updateSchema,
      StopExperiment: stopSchema,
      BatchRequest: batchSchema,
      PrecomputeSource: sourceSchema,
      PrecomputeRequest: runRequestSchema.omit({ model: true }),
    }),
    ...zodComponents("output", {
      Encoding: encodingSchema,
      Outputs: outputsSchema,
      ModelCard: modelCardSchema,
    }),
  };
}

const HEADERS: Record<string, Schema> = {
  ETag: { description: "validator of the answer; send it back in If-None-Match", schema: str() },
  "Cache-Control": { schema: str() },
  Location: { description: "where to poll", schema: str() },
  "Content-Location": { description: "the versioned, immutable URL of the table", schema: str() },
  "Retry-After": { description: "seconds to wait before asking again", schema: int() },
  "Accept-Ranges": { schema: str({ const: "bytes" }) },
  "Content-Range": { schema: str() },
  "X-Predcache-Generation": { description: "the table's generation", schema: str() },
  "WWW-Authenticate": { schema: str() },
  "X-Request-Id": {
    description:
      "the request's own X-Request-Id when safe (1–64 of A-Za-z0-9._:-), else a new id (64 random bits, 16 hex digits)",
    schema: str(),
  },
};

const PARAMETERS: Record<string, Schema> = {
  IfNoneMatch: {
    name: "If-None-Match",
    in: "header",
    description: "an ETag you hold: 304 when it still matches",
    schema: str(),
  },
  IfMatch: {
    name: "If-Match",
    in: "header",
    description: "the ETag of the table you expect (or *): 412 when it is another",
    schema: str(),
  },
  Range: { name: "Range", in: "header", description: "one range: bytes=a-b", schema: str() },
  IfRange: {
    name: "If-Range",
    in: "header",
    description: "serve the range only if the ETag still matches",
    schema: str(),
  },
};

/** Errors reply `{ error: { code, message, details? } }`; which codes give which status. */
function errorResponses(): Record<string, Schema> {
  const statuses = [...new Set(ERROR_CODES.map(statusOf))].sort((a, b) => a - b);
  const byStatus = statuses.map((status): [string, Schema] => {
    const codes = ERROR_CODES.filter((c) => statusOf(c) === status);
    const headers = [
      ...(status === 503 || status === 429 ? ["Retry-After"] : []),
      ...(status === 401 || status === 403 ? ["WWW-Authenticate"] : []),
    ];
    const more =
      status === 503
        ? "; for redis_unavailable, details.reason: timeout | failover | unreachable"
        : "";
    return [
      `Error${status}`,
      reply(`error.code: ${codes.join(" | ")}${more}`, ref("Error"), headers),
    ];
  });
  const tooLarge: [string, Schema] = [
    "Error431",
    reply("error.code: headers_too_large (request line and headers over 16 KiB)", ref("Error")),
  ];
  return Object.fromEntries([...byStatus, tooLarge]);
}

// ---------------------------------------------------------------- operation helpers

function reply(
  description: string,
  schema?: Schema,
  headers: string[] = [],
  mediaType = JSON_TYPE,
): Schema {
  return {
    description,
    ...(headers.length > 0
      ? {
          headers: Object.fromEntries(
            headers.map((h) => [h, { $ref: `#/components/headers/${h}` }]),
          ),
        }
      : {}),
    ...(schema ? { content: { [mediaType]: { schema } } } : {}),
  };
}

const errors = (...statuses: number[]): Record<string, Schema> =>
  Object.fromEntries(statuses.map((s) => [s, { $ref: `#/components/responses/Error${s}` }]));

const notModified = (): Schema => reply("Not Modified: your copy is current", undefined, ["ETag"]);

const param = (name: string, at: "path" | "query", schema: Schema, description?: string) => ({
  name,
  in: at,
  required: at === "path",
  schema,
  ...(description ? { description } : {}),
});

const shared = (name: string): Schema => ({ $ref: `#/components/parameters/${name}` });

interface Operation {
  tag: string;
  summary: string;
  description?: string;
  parameters?: Schema[];
  body?: { schema: Schema; description?: string; required?: boolean };
  responses: Record<string, Schema>;
  /** Behind the admin bearer token. */
  admin?: boolean;
  security?: Schema[];
}

type Paths = Record<string, Record<string, Schema>>;

function add(paths: Paths, path: string, method: string, op: Operation): void {
  const operationId = `${method}${path
    .split(/[^A-Za-z0-9]+/)
    .filter(Boolean)
    .map((w) => w[0]?.toUpperCase() + w.slice(1))
    .join("")}`;
  paths[path] ??= {};
  (paths[path] as Record<string, Schema>)[method] = {
    tags: [op.tag],
    summary: op.summary,
    ...(op.description ? { description: op.description } : {}),
    operationId,
    ...(op.parameters?.length ? { parameters: op.parameters } : {}),
    ...(op.body
      ? {
          requestBody: {
            required: op.body.required ?? true,
            ...(op.body.description ? { description: op.body.description } : {}),
            content: { [JSON_TYPE]: { schema: op.body.schema } },
          },
        }
      : {}),
    // Admin routes all need Redis: 503 with Retry-After while it is away.
    responses: op.admin
      ? { ...op.responses, ...errors(401, 403, 503), ...(op.body ? errors(415) : {}) }
      : op.responses,
    ...(op.admin
      ? { security: [{ bearerAuth: [] }] }
      : op.security
        ? { security: op.security }
        : {}),
  };
}

// ---------------------------------------------------------------- the routes

/** The version a model is served at: its active version, else its default. */
function servedVersion(deps: ApiDeps, name: string): ModelVersion | undefined {
  const active = deps.active.get(name);
  return (active && deps.registry.get(name, active)) || deps.registry.defaultVersion(name);
}

function modelRoutes(paths: Paths, schemas: Record<string, Schema>, deps: ApiDeps): void {
  const { settings } = deps;
  const names = deps.registry.names();
  const modelParam = param(
    "model",
    "path",
    str(names.length > 0 ? { enum: names } : {}),
    "the model's name",
  );
  const versionParam = param(
    "version",
    "query",
    str(),
    "a model version (default: the active one)",
  );

  add(paths, "/v1/models", "get", {
    tag: "models",
    summary: "The models, their versions and inputs",
    parameters: [shared("IfNoneMatch")],
    responses: {
      200: reply("the models (revalidate: versions change)", ref("ModelList"), [
        "ETag",
        "Cache-Control",
      ]),
      304: notModified(),
    },
  });
  add(paths, "/v1/models/{model}", "get", {
    tag: "models",
    summary: "A model's input schema, outputs and model card",
    parameters: [modelParam, versionParam, shared("IfNoneMatch")],
    responses: {
      200: reply("the model (revalidate: versions change)", ref("ModelDetail"), [
        "ETag",
        "Cache-Control",
      ]),
      304: notModified(),
      ...errors(404),
    },
  });

  const wait = param(
    "wait",
    "query",
    int({ minimum: 0 }),
    `ms to wait for the live model on a miss (default ${settings.waitDefaultMs}, at most ` +
      `${settings.waitMaxMs}: longer waits are shortened); 0 answers a miss with 202 at once`,
  );
  for (const name of names) {
    const served = servedVersion(deps, name);
    if (!served) continue;
    const { manifest } = served;
    schemas[`${name}.Input`] = modelInputSchema(manifest);
    schemas[`${name}.PredictionReply`] = predictionReplySchema(
      obj(Object.fromEntries(manifest.outputs.map((o) => [o.name, outputJsonSchema(o)]))),
    );
    const modelReply = schemas[`${name}.PredictionReply`] as Schema;
    const batch = schemas.BatchRequest as Schema & { properties: Record<string, Schema> };
    schemas[`${name}.BatchRequest`] = extend(batch, {
      inputs: {
        ...batch.properties.inputs,
        items: ref(`${name}.Input`),
        maxItems: settings.batchMaxItems,
      },
    });
    schemas[`${name}.BatchReply`] = obj(
      {
        model: str({ const: name }),
        version: str(),
        experiment: ref("ArmLabel"),
        results: arr(batchItemSchema(modelReply), {
          description: "one result per input, in order",
        }),
      },
      ["experiment"],
    );
    const version = param(
      "version",
      "query",
      str({ enum: deps.registry.versions(name).map((v) => v.version) }),
      `a loaded version (default: the active one, ${served.version}, whose input schema is shown)`,
    );
    const path = `/v1/models/${name}/predict`;
    add(paths, path, "get", {
      tag: "predict",
      summary: `One ${name} prediction`,
      description: manifest.card.summary,
      parameters: [
        ...manifest.encoding.features.map((f) => {
          const { description, ...schema } = featureJsonSchema(f);
          return {
            ...param(f.name, "query", schema, description as string | undefined),
            required: f.default === undefined,
          };
        }),
        wait,
        version,
        shared("IfNoneMatch"),
      ],
      responses: {
        200: reply("the prediction", ref(`${name}.PredictionReply`), ["ETag", "Cache-Control"]),
        202: reply("a miss still computing: poll the job", ref("Pending"), [
          "Location",
          "Retry-After",
        ]),
        304: notModified(),
        ...errors(400, 404, 422, 500, 503),
      },
    });
    add(paths, path, "post", {
      tag: "predict",
      summary: `A batch of ${name} predictions`,
      description:
        `Up to ${settings.batchMaxItems} inputs and ${settings.bodyMaxBytes} bytes; ` +
        "an invalid input fails its item only, and so does an unavailable Redis while " +
        "memory holds some of the inputs (their items answered, the others 503 items, " +
        "`Retry-After` on the reply); when it holds none of them, the whole batch is a 503.",
      parameters: [version],
      body: { schema: ref(`${name}.BatchRequest`) },
      responses: {
        200: reply("one result per input", ref(`${name}.BatchReply`), ["Cache-Control"]),
        ...errors(400, 404, 413, 415, 500, 503),
      },
    });
  }

  const table = (summary: string, cache: string): Operation => ({
    tag: "tables",
    summary,
    description: `The lookup table file (docs/table-format.md). ${cache}`,
    parameters: [
      modelParam,
      shared("IfMatch"),
      shared("IfNoneMatch"),
      shared("Range"),
      shared("IfRange"),
    ],
    responses: {
      200: reply("the table", str({ format: "binary" }), TABLE_HEADERS, TABLE_TYPE),
      206: reply("the requested range", str({ format: "binary" }), TABLE_HEADERS, TABLE_TYPE),
      304: notModified(),
      ...errors(404, 412, 416),
    },
  });
  const generation = param("generation", "path", str(), "a table generation (from the listing)");
  add(paths, "/v1/models/{model}/tables", "get", {
    tag: "tables",
    summary: "A model's lookup tables",
    parameters: [modelParam, shared("IfNoneMatch")],
    responses: {
      200: reply("the tables, newest first", ref("TableListing"), ["ETag", "Cache-Control"]),
      304: notModified(),
      ...errors(404),
    },
  });
  add(
    paths,
    "/v1/models/{model}/tables/latest",
    "get",
    table("The active version's newest table", "Revalidate: it moves with every publish."),
  );
  const versioned = table("One table generation", "Immutable.");
  add(paths, "/v1/models/{model}/tables/{generation}", "get", {
    ...versioned,
    parameters: [...(versioned.parameters ?? []), generation],
  });
  add(paths, "/v1/models/{model}/tables/{generation}/delta", "get", {
    tag: "tables",
    summary: "What changed between two generations",
    parameters: [
      modelParam,
      generation,
      { ...param("from", "query", str(), "the generation you have"), required: true },
      shared("IfNoneMatch"),
    ],
    responses: {
      200: reply("the delta", str({ format: "binary" }), ["ETag", "Cache-Control"], DELTA_TYPE),
      304: notModified(),
      // 409: no delta joins the two (or it would not be smaller); 503: too many deltas are
      // being built. Either way the full table is the answer.
      ...errors(400, 404, 409, 503),
    },
  });
}

const TABLE_HEADERS = [
  "ETag",
  "Cache-Control",
  "Accept-Ranges",
  "Content-Location",
  "Content-Range",
  "X-Predcache-Generation",
];

function adminRoutes(paths: Paths, deps: ApiDeps): void {
  const base = "/admin/v1";
  const model = param("model", "path", str(), "the model's name");
  const runId = param("id", "path", str(), "the run's id");
  const limit = (fallback: number, max: number) =>
    param(
      "limit",
      "query",
      int({ minimum: 1, default: fallback }),
      `how many (a whole number from 1; more than ${max.toLocaleString("en-US")} is taken as ${max.toLocaleString("en-US")})`,
    );
  const admin = (op: Omit<Operation, "tag" | "admin">): Operation => ({
    ...op,
    tag: "admin",
    admin: true,
  });
  const modelOp = (summary: string, schema: string, statuses: number[]): Operation =>
    admin({
      summary,
      parameters: [model],
      responses: { 200: reply(summary, ref(schema)), ...errors(...statuses) },
    });
  // Actions that take no options: no body, or JSON `{}` (any field is refused, 400).
  const noOptions = {
    schema: obj({}, [], { additionalProperties: false }),
    required: false,
    description: "none, or `{}`",
  };
  const action = (summary: string, schema: string, statuses: number[]): Operation => ({
    ...modelOp(summary, schema, [...statuses, 413, 415]),
    body: noOptions,
  });

  add(
    paths,
    `${base}/models/{model}/precompute`,
    "post",
    admin({
      summary: "Start a precompute run",
      parameters: [model],
      body: {
        schema: ref("PrecomputeRequest"),
        description: `seed files must lie under the configured roots; at most ${deps.admin?.bodyMaxBytes} bytes`,
      },
      responses: {
        202: reply("the run started", ref("RunAccepted"), ["Location"]),
        // 422: uploaded or grid inputs the model refuses, by row.
        ...errors(400, 404, 409, 413, 415, 422),
      },
    }),
  );
  add(
    paths,
    `${base}/runs`,
    "get",
    admin({
      summary: "Recent runs",
      parameters: [limit(50, 1_000)],
      responses: {
        200: reply("the runs", obj({ runs: arr(ref("RunStatus")) })),
        ...errors(400),
      },
    }),
  );
  add(
    paths,
    `${base}/runs/{id}`,
    "get",
    admin({
      summary: "A run's state, progress, rate and ETA",
      parameters: [runId],
      responses: { 200: reply("the run", ref("RunStatus")), ...errors(404) },
    }),
  );
  add(
    paths,
    `${base}/runs/{id}`,
    "delete",
    admin({
      summary: "Cancel a run",
      parameters: [runId],
      responses: { 200: reply("the cancelled run", ref("RunStatus")), ...errors(404, 409) },
    }),
  );
  add(
    paths,
    `${base}/models/{model}/versions`,
    "get",
    modelOp("The model's versions, entries and tables", "VersionList", [404]),
  );
  add(
    paths,
    `${base}/models/{model}/versions/{version}/promote`,
    "post",
    admin({
      summary: "Make a version active",
      parameters: [model, param("version", "path", str(), "a loaded version")],
      body: noOptions,
      responses: {
        200: reply("the switch", ref("Switched")),
        ...errors(400, 404, 409, 413, 415),
      },
    }),
  );
  add(
    paths,
    `${base}/models/{model}/rollback`,
    "post",
    action("Back to the previous active version", "Switched", [400, 404, 409]),
  );
  add(
    paths,
    `${base}/models/{model}/reload`,
    "post",
    action("Load version folders dropped into the models folder", "Reloaded", [400, 404]),
  );
  add(
    paths,
    `${base}/models/{model}/gc`,
    "post",
    admin({
      summary: "Delete the versions retention does not keep",
      description:
        "With `dryRun: true`, nothing is deleted: the report says what a gc would delete now.",
      parameters: [model],
      body: {
        schema: obj({ dryRun: bool }, ["dryRun"], { additionalProperties: false }),
        required: false,
      },
      responses: { 200: reply("the report", ref("GcReport")), ...errors(400, 404, 413, 415) },
    }),
  );
  const experiments = `${base}/models/{model}/experiments`;
  const experimentId = param("id", "path", str(), "the experiment's id");
  add(
    paths,
    experiments,
    "get",
    modelOp("The model's experiments, running and past", "ExperimentList", [404]),
  );
  add(
    paths,
    experiments,
    "post",
    admin({
      summary: "Start an experiment",
      description:
        "The active version becomes the control arm; `fraction` of clients (by the client " +
        "id header, else the API key) are served `candidate`. One experiment per model at a " +
        "time (409).",
      parameters: [model],
      body: { schema: ref("StartExperiment") },
      responses: {
        201: reply("the experiment started", ref("ExperimentStarted"), ["Location"]),
        ...errors(400, 404, 409, 413),
      },
    }),
  );
  add(
    paths,
    `${experiments}/{id}`,
    "get",
    admin({
      summary: "An experiment's report",
      description:
        "Per arm: lookups, hit ratio, the main output's mean, spread and histogram, and " +
        "agreement with the other arm's version on shadow lookups; then the two versions' " +
        "newest tables compared.",
      parameters: [model, experimentId],
      responses: { 200: reply("the report", ref("ExperimentReport")), ...errors(404) },
    }),
  );
  add(
    paths,
    `${experiments}/{id}`,
    "patch",
    admin({
      summary: "Change a running experiment's split or shadow rate",
      parameters: [model, experimentId],
      body: { schema: ref("UpdateExperiment"), description: "fraction, shadowRate or both" },
      responses: {
        200: reply("the experiment", ref("ExperimentChanged")),
        ...errors(400, 404, 409, 413),
      },
    }),
  );
  add(
    paths,
    `${experiments}/{id}/stop`,
    "post",
    admin({
      summary: "Stop an experiment: promote the candidate or revert to the active version",
      description:
        "Atomic with the switch of the active version; every process sees it within 1 s.",
      parameters: [model, experimentId],
      body: { schema: ref("StopExperiment") },
      responses: {
        200: reply("the ended experiment", ref("ExperimentStopped")),
        ...errors(400, 404, 409, 413),
      },
    }),
  );
  add(
    paths,
    `${base}/stats`,
    "get",
    admin({
      summary: "Hit ratio by tier, misses, top missed inputs, queues, table coverage",
      responses: { 200: reply("the statistics", { type: "object" }) },
    }),
  );
  add(
    paths,
    `${base}/audit`,
    "get",
    admin({
      summary: "The audit log, newest first",
      parameters: [
        limit(100, 10_000),
        param(
          "refused",
          "query",
          { type: "boolean", default: true },
          "include refused attempts (401/403, kept apart: the newest 1,000 or so)",
        ),
      ],
      responses: { 200: reply("the entries", ref("AuditLog")), ...errors(400) },
    }),
  );
}

function serviceRoutes(paths: Paths): void {
  add(paths, "/healthz", "get", {
    tag: "health",
    summary: "Liveness",
    responses: { 200: reply("alive", ref("Health")) },
  });
  add(paths, "/readyz", "get", {
    tag: "health",
    summary: "Readiness: Redis reachable and every model has an active version",
    responses: {
      200: reply("ready", ref("Readiness")),
      503: reply("not ready (the same body, not an error body)", ref("Readiness")),
    },
  });
  add(paths, "/v1/jobs/{id}", "get", {
    tag: "predict",
    summary: "Poll a live inference that outlasted its request's wait",
    parameters: [param("id", "path", str(), "from the 202's Location"), shared("IfNoneMatch")],
    responses: {
      200: reply("done", extend(ref("PredictionReply"), { status: str({ const: "completed" }) }), [
        "ETag",
        "Cache-Control",
      ]),
      202: reply("still computing", ref("Pending"), ["Retry-After"]),
      304: notModified(),
      ...errors(404, 500, 503),
    },
  });
  add(paths, "/metrics", "get", {
    tag: "operations",
    summary: "Prometheus metrics",
    responses: { 200: reply("the metrics, in Prometheus' text format", str(), [], "text/plain") },
  });
  add(paths, "/openapi.json", "get", {
    tag: "docs",
    summary: "This document",
    parameters: [shared("IfNoneMatch")],
    responses: {
      200: reply("the OpenAPI 3.1 document", { type: "object" }, ["ETag"]),
      304: notModified(),
    },
  });
  add(paths, "/docs", "get", {
    tag: "docs",
    summary: "Interactive API documentation (Swagger UI)",
    responses: { 200: reply("the page", str(), [], "text/html") },
  });
}

/** Routes the docs route reads off the app: the files it serves, the queue dashboard's. */
export interface ServedRoutes {
  /** The Swagger UI files /docs/assets/{file} serves. */
  assets?: readonly string[];
  /** bull-board's routes (its pages and its own JSON API), as the app registered them. */
  dashboard?: { base: string; routes: readonly { method: string; path: string }[] };
}

function docsAssetRoute(paths: Paths, files: readonly string[]): void {
  add(paths, "/docs/assets/{file}", "get", {
    tag: "docs",
    summary: "The documentation page's files",
    parameters: [param("file", "path", str({ enum: [...files] }))],
    responses: { 200: reply("the file"), 304: notModified(), ...errors(404) },
  });
}

/**
 * The BullMQ dashboard (bull-board), behind the admin token (Bearer, or Basic with the
 * token as password for browsers). Its pages and JSON API are bull-board's, not ours: they
 * are listed as registered (`*` as one {path}), without body schemas.
 */
function dashboardRoutes(paths: Paths, { base, routes }: NonNullable<ServedRoutes["dashboard"]>) {
  for (const route of routes) {
    if (route.method === "ALL" || !(route.path === base || route.path.startsWith(`${base}/`)))
      continue;
    const path = openApiPath(route.path);
    const method = route.method.toLowerCase();
    const api = path.startsWith(`${base}/api/`);
    const asset = route.path.endsWith("/*");
    add(paths, path, method, {
      tag: "queue dashboard",
      summary: api
        ? `bull-board API: ${route.method} ${path.slice(base.length)}`
        : asset
          ? "bull-board's static files"
          : `bull-board page ${path.slice(base.length) || "/"}`,
      parameters: [...path.matchAll(/\{(\w+)\}/g)].map((m) => param(m[1] as string, "path", str())),
      responses: {
        200: api
          ? reply("bull-board's reply", { type: "object" })
          : reply(asset ? "the file" : "the dashboard page", undefined),
        // 403 also for a change sent from another site's page; 503 while Redis is away.
        ...errors(401, 403, 503),
      },
      security: [{ bearerAuth: [] }, { basicAuth: [] }],
    });
  }
}

/** With API keys on: the read routes take one (either scheme) and may refuse or limit it. */
function guardReadRoutes(paths: Paths): void {
  for (const [path, operations] of Object.entries(paths)) {
    if (!(path.startsWith("/v1/models") || path.startsWith("/v1/jobs"))) continue;
    for (const operation of Object.values(operations)) {
      operation.security = [{ apiKeyBearer: [] }, { apiKeyHeader: [] }];
      operation.responses = { ...(operation.responses as object), ...errors(401, 403, 429) };
    }
  }
}

/** With PREDCACHE_METRICS_TOKENS set: the scrape takes one of those tokens. */
function guardMetrics(paths: Paths): void {
  const scrape = paths["/metrics"]?.get;
  if (!scrape) return;
  scrape.security = [{ metricsBearer: [] }];
  scrape.responses = { ...(scrape.responses as object), ...errors(401, 403) };
}

/** A Hono route path as an OpenAPI path: `:name` → `{name}`, a trailing `*` → `{path}`. */
function openApiPath(path: string): string {
  return path.replace(/:(\w+)(?:\{[^}]*\})?\??/g, "{$1}").replace(/\/\*$/, "/{path}");
}

export function buildOpenApi(deps: ApiDeps, served: ServedRoutes = {}): object {
  const paths: Paths = {};
  const schemas = components();
  // Shared schemas first, so the per-model ones can build on them.
  serviceRoutes(paths);
  modelRoutes(paths, schemas, deps);
  if (deps.admin) adminRoutes(paths, deps);
  if (served.assets?.length) docsAssetRoute(paths, served.assets);
  if (served.dashboard) dashboardRoutes(paths, served.dashboard);
  if (deps.access) guardReadRoutes(paths);
  if (deps.metricsTokens?.length) guardMetrics(paths);
  return {
    openapi: "3.1.0",
    info: {
      title: "predcache",
      version: VERSION,
      description:
        "Precomputed predictions: answered from the cache, misses from the live model, " +
        "and lookup tables for apps. Errors are `{ error: { code, message, details? } }`. " +
        "On any path, a method it does not serve is 405 with `Allow`, and OPTIONS is 204 " +
        "with `Allow` (a CORS preflight gets its Access-Control headers); a request line and " +
        "headers over 16 KiB are 431 `headers_too_large`, a request too slow to arrive 408 " +
        "`request_timeout`, an `Expect` other than `100-continue` " +
        "is 417 `expectation_failed`, a method the server does not know at all 501 " +
        "`not_implemented`. Answers of 1 KiB or more, but for single lookups and " +
        "table files, are gzipped when `Accept-Encoding` allows (ETag then weak). Every answer carries `X-Request-Id`: " +
        "the request's own when it is 1–64 characters of `A-Za-z0-9._:-`, else a new id (64 random bits, 16 hex digits); " +
        "the request's log line has it too.",
    },
    tags: [
      { name: "predict", description: "Predictions, one per model path" },
      { name: "models", description: "What can be asked" },
      { name: "tables", description: "Lookup tables for local answers" },
      { name: "health" },
      { name: "operations" },
      { name: "admin", description: "Operators, behind a bearer token" },
      { name: "queue dashboard", description: "bull-board, behind the admin token" },
      { name: "docs" },
    ],
    paths,
    components: {
      schemas,
      responses: errorResponses(),
      headers: HEADERS,
      parameters: PARAMETERS,
      securitySchemes: {
        bearerAuth: {
          type: "http",
          scheme: "bearer",
          description: "an admin token from PREDCACHE_ADMIN_TOKENS",
        },
        apiKeyBearer: {
          type: "http",
          scheme: "bearer",
          description: "a read-API key from PREDCACHE_API_KEYS (when set)",
        },
        apiKeyHeader: {
          type: "apiKey",
          in: "header",
          name: "X-API-Key",
          description: "a read-API key from PREDCACHE_API_KEYS (when set)",
        },
        metricsBearer: {
          type: "http",
          scheme: "bearer",
          description: "a metrics token from PREDCACHE_METRICS_TOKENS (when set)",
        },
        basicAuth: {
          type: "http",
          scheme: "basic",
          description: "any user name, an admin token as the password (the queue dashboard)",
        },
      },
    },
  };
}
