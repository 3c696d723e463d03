/**
 * The audit log: every admin action — who (token id, never the token), what, on which
 * target, when, and how it ended — appended to a capped Redis stream and logged.
 * Refused attempts (401/403) go to a stream of their own, capped apart: anyone who can
 * reach the port can make them, and they must not push the actions of real tokens out.
 */
import type { Context, MiddlewareHandler } from "hono";
import type { Keys } from "../cache/keys.ts";
import type { Logger } from "../log.ts";
import type { Redis } from "../redis/connection.ts";

export interface AuditEntry {
  id: string;
  at: string;
  actor: string;
  action: string;
  target: string;
  status: number;
  detail?: string;
}

/** Longest action or target kept (characters): a path is the client's to make long. */
const FIELD_MAX = 200;

function bounded(text: string, max: number): string {
  return text.length > max ? `${text.slice(0, max)}…` : text;
}

function isRefusal(status: number): boolean {
  return status === 401 || status === 403;
}

/** Stream ids ("<ms>-<seq>") in time order, newest first. */
function newerFirst(a: AuditEntry, b: AuditEntry): number {
  const [am = 0, as = 0] = a.id.split("-").map(Number);
  const [bm = 0, bs = 0] = b.id.split("-").map(Number);
  return bm - am || bs - as;
}

function entryOf([id, flat]: [string, string[]]): AuditEntry {
  const f: Record<string, string> = {};
  for (let i = 0; i + 1 < flat.length; i += 2) f[flat[i] as string] = flat[i + 1] as string;
  return {
    id,
    at: f.at ?? "",
    actor: f.actor ?? "",
    action: f.action ?? "",
    target: f.target ?? "",
    status: Number(f.status ?? 0),
    ...(f.detail ? { detail: f.detail } : {}),
  };
}

export class AuditLog {
  constructor(
    private readonly redis: Redis,
    private readonly keys: Keys,
    private readonly log: Logger,
    private readonly maxEntries = 10_000,
    private readonly maxRefused = 1_000,
  ) {}

  async record(given: Omit<AuditEntry, "id" | "at">): Promise<void> {
    const entry = {
      ...given,
      action: bounded(given.action, FIELD_MAX),
      target: bounded(given.target, FIELD_MAX),
      ...(given.detail ? { detail: bounded(given.detail, 500) } : {}),
    };
    const at = new Date().toISOString();
    this.log.info({ audit: true, ...entry }, "admin action");
    const fields = ["at", at, "actor", entry.actor, "action", entry.action, "target", entry.target];
    fields.push("status", String(entry.status));
    if (entry.detail) fields.push("detail", entry.detail);
    const refused = isRefusal(entry.status);
    const [stream, cap] = refused
      ? [this.keys.auditRefused(), this.maxRefused]
      : [this.keys.audit(), this.maxEntries];
    // The log line above is the fallback record when Redis is away.
    await this.redis
      .xadd(stream, "MAXLEN", "~", cap, "*", ...fields)
      .catch((error: Error) => this.log.warn({ err: error.message }, "audit entry not stored"));
  }

  /** Newest first; refused attempts among them unless `refused` is false. */
  async list(limit = 100, refused = true): Promise<AuditEntry[]> {
    const newest = (stream: string) => this.redis.xrevrange(stream, "+", "-", "COUNT", limit);
    const [actions, refusals] = await Promise.all([
      newest(this.keys.audit()),
      refused ? newest(this.keys.auditRefused()) : [],
    ]);
    return [...actions, ...refusals].map(entryOf).sort(newerFirst).slice(0, limit);
  }
}

/**
 * Middleware recording every change (any method but GET and HEAD) and every refused
 * attempt (401/403) under it, whatever the outcome; outermost, so it sees the final
 * status. `actionOf` names the action (method and route pattern); a handler may say
 * what it did in the `auditDetail` variable (a run id, the versions switched).
 */
export function auditActions(
  audit: AuditLog,
  actionOf: (c: Context) => string,
): MiddlewareHandler<{ Variables: { actor: string; auditDetail?: string } }> {
  return async (c, next) => {
    await next();
    const status = c.res.status;
    const change = c.req.method !== "GET" && c.req.method !== "HEAD";
    if (!change && status !== 401 && status !== 403) return;
    // Not awaited: the answer does not wait for the entry (Redis frozen, it would wait a
    // whole command timeout more). The entry is queued on the connection at once, so a
    // later read of the log sees it; record() logs it too and never throws.
    void audit.record({
      // No credentials sent: anonymous, whether or not the admin API is enabled.
      actor: c.get("actor") ?? (c.req.header("authorization") ? "unknown-token" : "anonymous"),
      action: actionOf(c),
      target: c.req.path,
      status,
      ...(c.get("auditDetail") ? { detail: c.get("auditDetail") } : {}),
    });
  };
}
