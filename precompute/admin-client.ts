/**
 * The admin API over HTTP, for the CLI. Failures become CliError with the exit code the
 * CLI promises: 2 for what the caller asked wrong (4xx), 3 when the server cannot be
 * reached or refuses the token (401/403), 1 for server failures.
 */
export class CliError extends Error {
  constructor(
    message: string,
    readonly exitCode: 1 | 2 | 3,
    /** The HTTP status that caused it, when the server answered. */
    readonly status?: number,
    /** The server's error code (conflict, not_found…), for scripts reading --json. */
    readonly code?: string,
  ) {
    super(message);
  }

  /** The server asked to be asked again shortly (503: Redis away a moment). */
  get retryable(): boolean {
    return this.status === 503;
  }
}

/**
 * What the server said was wrong, for the message: the issues it listed, a few of them
 * (none when its message names them already).
 */
function detailsText(details: unknown, message: string): string {
  // An unknown version: the ones loaded, so the operator can pick one (a folder just
  // dropped into the models directory is found by `reload`).
  const versions = (details as { versions?: unknown } | undefined)?.versions;
  if (Array.isArray(versions))
    return versions.length > 0
      ? ` (loaded: ${versions.slice(0, 10).join(", ")}${versions.length > 10 ? `, and ${versions.length - 10} more` : ""}; a folder just added: reload first)`
      : " (none loaded)";
  const issues = (details as { issues?: unknown } | undefined)?.issues;
  if (!Array.isArray(issues) || issues.length === 0) return "";
  const first = issues[0] as { message?: unknown };
  if (typeof first?.message === "string" && message.includes(first.message)) return "";
  const shown = issues
    .slice(0, 5)
    .map((issue: { path?: unknown; field?: unknown; message?: unknown }) => {
      const where = issue.path ?? issue.field;
      const path = Array.isArray(where) ? where.join(".") : where;
      return path ? `${path}: ${issue.message}` : String(issue.message);
    });
  const more = issues.length > shown.length ? `; and ${issues.length - shown.length} more` : "";
  return ` (${shown.join("; ")}${more})`;
}

export interface AdminClientOptions {
  server: string;
  token: string | undefined;
  /** The read API's key, for /v1/ routes when the server requires one. */
  apiKey?: string | undefined;
  /** Per request (ms). */
  timeoutMs?: number;
}

export class AdminClient {
  constructor(private readonly options: AdminClientOptions) {
    // A server that is not an http(s) URL is a usage error, not an unreachable server.
    let url: URL | undefined;
    try {
      url = new URL(options.server);
    } catch {}
    if (!url || (url.protocol !== "http:" && url.protocol !== "https:"))
      throw new CliError(
        `--server (PREDCACHE_SERVER) must be an http(s) URL, not "${options.server}"`,
        2,
      );
  }

  url(path: string): string {
    return `${this.options.server.replace(/\/$/, "")}${path}`;
  }

  /** A raw response (for downloads); network failures throw CliError(3). */
  async fetch(path: string, init: RequestInit = {}): Promise<Response> {
    const headers = new Headers(init.headers);
    // The read API takes API keys, the admin API admin tokens: each gets its own.
    const secret = path.startsWith("/v1/") ? this.options.apiKey : this.options.token;
    if (secret) headers.set("authorization", `Bearer ${secret}`);
    try {
      return await fetch(this.url(path), {
        ...init,
        headers,
        signal: AbortSignal.timeout(this.options.timeoutMs ?? 30_000),
      });
    } catch (error) {
      const cause =
        (error as { cause?: { code?: string } }).cause?.code ?? (error as Error).message;
      throw new CliError(
        `cannot reach the predcache server at ${this.options.server} (${cause})`,
        3,
      );
    }
  }

  async request<T>(method: string, path: string, body?: unknown): Promise<T> {
    const response = await this.fetch(path, {
      method,
      ...(body === undefined
        ? {}
        : { body: JSON.stringify(body), headers: { "content-type": "application/json" } }),
    });
    const text = await response.text();
    let json: { error?: { code?: string; message?: string; details?: unknown } } | undefined;
    try {
      json = text ? JSON.parse(text) : undefined;
    } catch {
      json = undefined;
    }
    if (response.ok) return json as T;
    throw this.failure(path, response.status, json?.error);
  }

  /** The CliError of a refusal or failure the server answered with. */
  failure(
    path: string,
    status: number,
    error: { code?: string; message?: string; details?: unknown } | undefined,
  ): CliError {
    const said = error?.message ?? `HTTP ${status}`;
    const message = `${said}${status < 500 ? detailsText(error?.details, said) : ""}`;
    const code = error?.code;
    const [option, variable] = path.startsWith("/v1/")
      ? ["--api-key", "PREDCACHE_API_KEY"]
      : ["--token", "PREDCACHE_TOKEN"];
    if (status === 401)
      return new CliError(`${message} (pass ${option} or set ${variable})`, 3, status, code);
    // The server's admin API is off: no token of ours would do.
    const disabled = (error?.details as { reason?: unknown } | undefined)?.reason;
    if (status === 403 && disabled === "admin_disabled")
      return new CliError(message, 3, status, code);
    if (status === 403)
      return new CliError(`${message} (check ${option} / ${variable})`, 3, status, code);
    if (status >= 400 && status < 500) return new CliError(message, 2, status, code);
    // Not a failure of what was asked: the server cannot serve it for now (Redis away).
    if (status === 503)
      return new CliError(`the server is unavailable for now: ${message}`, 3, status, code);
    return new CliError(`the server failed: ${message}`, 1, status, code);
  }
}
