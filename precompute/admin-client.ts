/**
 * The admin API over HTTP, for the CLI. Failures become CliError with the exit code the
 * CLI promises: 2 for what the caller asked wrong (4xx), 3 when the server cannot be
 * reached or refuses the token (401/403), 1 for server failures.
 */
export class CliError extends Error {
  constructor(
    message: string,
    readonly exitCode: 1 | 2 | 3,
  ) {
    super(message);
  }
}

export interface AdminClientOptions {
  server: string;
  token: string | undefined;
  /** Per request (ms). */
  timeoutMs?: number;
}

export class AdminClient {
  constructor(private readonly options: AdminClientOptions) {}

  url(path: string): string {
    return `${this.options.server.replace(/\/$/, "")}${path}`;
  }

  /** A raw response (for downloads); network failures throw CliError(3). */
  async fetch(path: string, init: RequestInit = {}): Promise<Response> {
    const headers = new Headers(init.headers);
    if (this.options.token) headers.set("authorization", `Bearer ${this.options.token}`);
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
    const message = json?.error?.message ?? `HTTP ${response.status}`;
    if (response.status === 401)
      throw new CliError(`${message} (pass --token or set PREDCACHE_TOKEN)`, 3);
    if (response.status === 403)
      throw new CliError(`${message} (check --token / PREDCACHE_TOKEN)`, 3);
    if (response.status >= 400 && response.status < 500) throw new CliError(message, 2);
    throw new CliError(`the server failed: ${message}`, 1);
  }
}
