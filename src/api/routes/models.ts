/** GET /v1/models and GET /v1/models/:model: what can be asked, and of which version. */
import type { Context, Hono } from "hono";
import { PredcacheError } from "../../errors.ts";
import type { ModelVersion } from "../../model/registry.ts";
import type { ApiDeps } from "../deps.ts";
import { routeToArm } from "../experiment-routing.ts";
import { revalidatedJson } from "../reply.ts";
import { annotate } from "../request-log.ts";

function versionSummary(v: ModelVersion, active: string | undefined) {
  return {
    version: v.version,
    label: v.manifest.label ?? null,
    encodingHash: v.encoder.hash,
    active: v.version === active,
    modelBytes: v.modelBytes,
  };
}

/** The model named in the path, at ?version= or its active version; 404 otherwise. */
export function resolveModel(c: Context, deps: ApiDeps): ModelVersion {
  return resolveVersion(c, deps, c.req.query("version"));
}

/** resolveModel with ?version= already read (`wanted`: undefined when not asked). */
export function resolveVersion(
  c: Context,
  deps: ApiDeps,
  wanted: string | undefined,
): ModelVersion {
  const name = c.req.param("model") ?? "";
  // "?version=" with nothing is no version: not the active one, not the newest loaded.
  if (wanted === "") throw new PredcacheError("bad_request", "version must not be empty");
  const versions = deps.registry.versions(name);
  if (versions.length === 0) {
    throw new PredcacheError("model_not_found", `no model named "${name.slice(0, 64)}"`, {
      models: deps.registry.names(),
    });
  }
  const found = servedVersion(deps, name, wanted);
  const active = deps.active.get(name);
  if (!found && wanted === undefined && active !== undefined) {
    // Not the client's mistake: the version this server must serve is not loaded here (its
    // folder gone, or not yet reloaded in this process).
    annotate(c, { model: name });
    throw new PredcacheError(
      "version_unavailable",
      `the active version "${active.slice(0, 64)}" of model "${name}" is not loaded by this server: reload it, or promote or roll back to a loaded one`,
      { activeVersion: active, versions: versions.map((v) => v.version) },
      5,
    );
  }
  if (!found) {
    const version = wanted ?? active;
    // The log line of a refused lookup names its model (a found one is annotated by its route).
    annotate(c, { model: name });
    throw new PredcacheError(
      "version_not_found",
      `model "${name}" has no version "${String(version).slice(0, 64)}"`,
      { versions: versions.map((v) => v.version) },
    );
  }
  return found;
}

/** The version a lookup of `name` gets: `wanted`, else the active one, else the default. */
export function servedVersion(
  deps: ApiDeps,
  name: string,
  wanted: string | undefined,
): ModelVersion | undefined {
  const version = wanted ?? deps.active.get(name);
  return version ? deps.registry.get(name, version) : deps.registry.defaultVersion(name);
}

export function registerModels(app: Hono, deps: ApiDeps): void {
  app.get("/v1/models", (c) => {
    const models = deps.registry.names().map((name) => {
      const activeVersion = deps.active.get(name);
      const served =
        (activeVersion && deps.registry.get(name, activeVersion)) ||
        deps.registry.defaultVersion(name);
      return {
        name,
        activeVersion: activeVersion ?? null,
        summary: served?.manifest.card.summary ?? null,
        inputs: served?.encoder.featureNames ?? [],
        outputs: served?.manifest.outputs.map((o) => o.name) ?? [],
        versions: deps.registry.versions(name).map((v) => versionSummary(v, activeVersion)),
        links: { self: `/v1/models/${name}`, predict: `/v1/models/${name}/predict` },
      };
    });
    return revalidatedJson(c, { models }, deps.settings.cacheScope);
  });

  app.get("/v1/models/:model", (c) => {
    // In an experiment, the version this client is served (its schema may differ).
    const routed = routeToArm(c, deps, resolveModel(c, deps));
    const model = routed.model;
    const activeVersion = deps.active.get(model.name);
    const { manifest } = model;
    return revalidatedJson(
      c,
      {
        name: model.name,
        version: model.version,
        ...(routed.assignment ? { experiment: routed.assignment.label } : {}),
        activeVersion: activeVersion ?? null,
        label: manifest.label ?? null,
        encodingHash: model.encoder.hash,
        inputSchema: manifest.encoding,
        outputs: manifest.outputs,
        mainOutput: manifest.mainOutput ?? manifest.outputs[0]?.name,
        confidenceThreshold: manifest.confidenceThreshold ?? null,
        card: manifest.card,
        versions: deps.registry.versions(model.name).map((v) => versionSummary(v, activeVersion)),
      },
      deps.settings.cacheScope,
    );
  });
}
