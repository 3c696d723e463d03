/**
 * Docker does not run on our machines, so docker-compose.yml and the Dockerfile are
 * checked statically: the YAML parses, the services and their wiring are there, every
 * command names an npm script that exists, every variable is one loadConfig knows (and
 * accepts), and every path the Dockerfile copies exists in the repo.
 */
import { existsSync, readFileSync, statSync } from "node:fs";
import { isAbsolute, posix } from "node:path";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
import { parse } from "yaml";
import { loadConfig } from "../../src/config.ts";

const root = fileURLToPath(new URL("../../", import.meta.url));
const read = (path: string) => readFileSync(`${root}${path}`, "utf8");

const scripts = Object.keys(
  (JSON.parse(read("package.json")) as { scripts: Record<string, string> }).scripts,
);

interface Service {
  image?: string;
  build?: unknown;
  command?: string | string[];
  environment?: Record<string, unknown> | string[];
  ports?: unknown[];
  container_name?: string;
  volumes?: (string | { source?: string; target: string })[];
  depends_on?: string[] | Record<string, { condition?: string }>;
  healthcheck?: { test?: string | string[]; disable?: boolean };
}

// Docker Compose resolves YAML merge keys (`<<: *predcache`); so does this parse.
const compose = parse(read("docker-compose.yml"), { merge: true }) as {
  services: Record<string, Service>;
  volumes?: Record<string, unknown>;
};
const services = compose.services;
const service = (name: string): Service => {
  const s = services[name];
  if (!s) throw new Error(`docker-compose.yml has no service ${name}`);
  return s;
};

/** The service's environment as a map, list form (`KEY=value`) included. */
function environment(s: Service): Record<string, string> {
  const env = s.environment ?? {};
  if (Array.isArray(env))
    return Object.fromEntries(
      env.map((entry) => {
        const eq = entry.indexOf("=");
        return eq < 0 ? [entry, ""] : [entry.slice(0, eq), entry.slice(eq + 1)];
      }),
    );
  return Object.fromEntries(Object.entries(env).map(([k, v]) => [k, v == null ? "" : String(v)]));
}

/** Compose interpolation with nothing set on the host: `${X:-default}` → default, `${X}` → "". */
function interpolate(value: string): string {
  return value.replace(/\$\{(\w+)(?::?-([^}]*))?\}/g, (_, _name, fallback) => fallback ?? "");
}

/** The environment a container gets, nothing set on the host. */
function resolvedEnv(s: Service): Record<string, string> {
  return Object.fromEntries(Object.entries(environment(s)).map(([k, v]) => [k, interpolate(v)]));
}

function commandWords(command: string | string[] | undefined): string[] {
  if (command === undefined) return [];
  return Array.isArray(command) ? command.map(String) : command.trim().split(/\s+/);
}

/** The npm scripts a command line runs: `npm run X`, `npm run-script X`, `npm start`/`test`. */
function npmScripts(words: string[]): string[] {
  const found: string[] = [];
  for (let i = 0; i < words.length; i++) {
    if (words[i] !== "npm") continue;
    const verb = words[i + 1];
    if ((verb === "run" || verb === "run-script") && words[i + 2])
      found.push(words[i + 2] as string);
    else if (verb === "start" || verb === "test") found.push(verb);
  }
  return found;
}

/** Volume targets of a service: `source:target[:mode]` or the long form. */
function volumes(s: Service): { source: string | undefined; target: string }[] {
  return (s.volumes ?? []).map((v) => {
    if (typeof v !== "string") return { source: v.source, target: v.target };
    const parts = v.split(":");
    return parts.length === 1
      ? { source: undefined, target: parts[0] as string }
      : { source: parts[0], target: parts[1] as string };
  });
}

// Every variable loadConfig reads, from its zod schema's keys in src/config.ts.
const knownVariables = new Set(
  [...read("src/config.ts").matchAll(/^\s+(PREDCACHE_\w+|REDIS_URL|HOST|PORT|LOG_LEVEL):/gm)].map(
    (m) => m[1] as string,
  ),
);

describe("docker-compose.yml", () => {
  const predcache = ["api", "live-worker", "precompute-worker"];

  it("has redis, the API and both workers", () => {
    expect(Object.keys(services)).toEqual(
      expect.arrayContaining(["redis", "api", "live-worker", "precompute-worker"]),
    );
    for (const name of predcache) expect(service(name).build, name).toBeDefined();
  });

  it("runs redis with persistence and a healthcheck", () => {
    const redis = service("redis");
    expect(redis.image).toMatch(/^redis:/);
    const words = commandWords(redis.command);
    expect(words[words.indexOf("--appendonly") + 1], "--appendonly yes").toBe("yes");
    const data = volumes(redis).find((v) => v.target === "/data");
    expect(data?.source, "a named volume on /data").toBeDefined();
    expect(Object.keys(compose.volumes ?? {})).toContain(data?.source);
    expect(commandWords(redis.healthcheck?.test)).toEqual(
      expect.arrayContaining(["redis-cli", "ping"]),
    );
  });

  it("only runs npm scripts that exist in package.json", () => {
    for (const [name, s] of Object.entries(services)) {
      for (const script of npmScripts(commandWords(s.command)))
        expect(scripts, `${name} runs npm script "${script}"`).toContain(script);
    }
    expect(npmScripts(commandWords(service("api").command))).toEqual(["serve"]);
    expect(npmScripts(commandWords(service("live-worker").command))).toEqual(["work"]);
    expect(npmScripts(commandWords(service("precompute-worker").command))).toEqual(["work"]);
  });

  it("starts the API and the workers once redis is healthy", () => {
    for (const name of predcache) {
      const dependsOn = service(name).depends_on;
      expect(Array.isArray(dependsOn), `${name}: depends_on needs the long form`).toBe(false);
      expect((dependsOn as Record<string, { condition?: string }>).redis?.condition, name).toBe(
        "service_healthy",
      );
    }
  });

  it("keeps the workers scalable (docker compose up --scale)", () => {
    for (const name of ["live-worker", "precompute-worker"]) {
      const s = service(name);
      expect(s.container_name, `${name}: container_name`).toBeUndefined();
      expect(s.ports ?? [], `${name}: published ports`).toEqual([]);
      // Not the image's HEALTHCHECK (the API's port): /healthz on the worker's metrics port.
      expect(s.healthcheck?.disable, `${name}: healthcheck`).not.toBe(true);
      const check = commandWords(s.healthcheck?.test).join(" ");
      expect(check).toMatch(/PREDCACHE_METRICS_PORT \|\| 9464\) \+ '\/healthz'/);
    }
    expect(service("api").ports?.map(String)).toEqual(
      expect.arrayContaining([expect.stringMatching(/:8787$/)]),
    );
  });

  it("sets only variables loadConfig knows, with values it accepts", () => {
    expect(knownVariables.size).toBeGreaterThan(10);
    for (const name of predcache) {
      const env = environment(service(name));
      for (const key of Object.keys(env)) {
        if (/^(PREDCACHE_\w+|REDIS_URL|HOST|PORT|LOG_LEVEL)$/.test(key))
          expect(knownVariables, `${name}: ${key}`).toContain(key);
      }
      const resolved = resolvedEnv(service(name));
      expect(() => loadConfig(resolved), name).not.toThrow();
      expect(loadConfig(resolved).redisUrl, `${name}: REDIS_URL`).toMatch(/^redis:\/\/redis:/);
    }
    expect(loadConfig(resolvedEnv(service("api"))).host).toBe("0.0.0.0");
    expect(loadConfig(resolvedEnv(service("live-worker"))).workers).toEqual(["live"]);
    expect(loadConfig(resolvedEnv(service("precompute-worker"))).workers).toEqual(["precompute"]);
    // Secrets come from the host's environment, never written in the file.
    const api = environment(service("api"));
    for (const name of ["PREDCACHE_ADMIN_TOKENS", "PREDCACHE_API_KEYS", "PREDCACHE_METRICS_TOKENS"])
      expect(api[name], name).toMatch(new RegExp(`^\\$\\{${name}(:-)?\\}$`));
    for (const worker of ["live-worker", "precompute-worker"])
      expect(environment(service(worker)).PREDCACHE_METRICS_TOKENS, worker).toMatch(
        /^\$\{PREDCACHE_METRICS_TOKENS(:-)?\}$/,
      );
  });

  it("puts the tables the precompute workers write where the API reads them", () => {
    const tables = (name: string) => {
      const config = loadConfig(resolvedEnv(service(name)));
      expect(isAbsolute(config.tablesDir), `${name}: tables dir ${config.tablesDir}`).toBe(true);
      const mount = volumes(service(name)).find(
        (v) => config.tablesDir === v.target || config.tablesDir.startsWith(`${v.target}/`),
      );
      expect(mount?.source, `${name}: a volume holding ${config.tablesDir}`).toBeDefined();
      expect(Object.keys(compose.volumes ?? {})).toContain(mount?.source);
      return { dir: config.tablesDir, volume: mount?.source };
    };
    expect(tables("api")).toEqual(tables("precompute-worker"));
  });
});

/** Dockerfile instructions, continuation lines joined, comments dropped. */
function instructions(text: string): { op: string; args: string }[] {
  const joined = text
    .split("\n")
    .filter((line) => !/^\s*#/.test(line))
    .join("\n")
    .replace(/\\\n/g, " ");
  return joined
    .split("\n")
    .map((line) => line.trim())
    .filter(Boolean)
    .map((line) => {
      const [op = "", ...rest] = line.split(/\s+/);
      return { op: op.toUpperCase(), args: rest.join(" ") };
    });
}

/** An instruction's words: exec form (a JSON array) or shell form. */
function words(args: string): string[] {
  if (args.startsWith("[")) return (JSON.parse(args) as unknown[]).map(String);
  return args.split(/\s+/);
}

describe("Dockerfile", () => {
  const all = instructions(read("Dockerfile"));
  const stages: { op: string; args: string }[][] = [];
  for (const i of all) {
    if (i.op === "FROM") stages.push([]);
    stages.at(-1)?.push(i);
  }
  const final = stages.at(-1) ?? [];

  it("is multi-stage", () => {
    expect(stages.length).toBeGreaterThanOrEqual(2);
    for (const stage of stages) expect(stage[0]?.args).toMatch(/^node:20/);
  });

  it("runs as the non-root node user", () => {
    const users = final.filter((i) => i.op === "USER").map((i) => i.args);
    expect(users.at(-1)).toBe("node");
  });

  it("installs production dependencies without install scripts", () => {
    const install = final.find((i) => i.op === "RUN" && /npm ci\b.*--omit=dev/.test(i.args));
    expect(install, "npm ci --omit=dev in the final stage").toBeDefined();
    // "prepare" (build:client) needs devDependencies: without --ignore-scripts it fails.
    expect(install?.args).toMatch(/--ignore-scripts/);
  });

  it("puts the admin script on the PATH as `predcache` (npx cannot run it there)", () => {
    const link = final.find(
      (i) =>
        i.op === "RUN" &&
        /\bln -s \/app\/bin\/predcache\.js \/usr\/local\/bin\/predcache\b/.test(i.args),
    );
    expect(link, "ln -s /app/bin/predcache.js /usr/local/bin/predcache").toBeDefined();
    const copied = final.findIndex((i) => i.op === "COPY" && /^bin\s/.test(i.args));
    expect(copied).toBeGreaterThanOrEqual(0);
    expect(final.indexOf(link as (typeof final)[number])).toBeGreaterThan(copied);
    // The link's target must stay executable in the repository (git keeps the mode).
    expect(statSync(`${root}bin/predcache.js`).mode & 0o111).not.toBe(0);
  });

  it("has a healthcheck and serves the API by default", () => {
    const healthcheck = final.find((i) => i.op === "HEALTHCHECK");
    expect(healthcheck?.args).toMatch(/\/healthz/);
    const cmd = final.filter((i) => i.op === "CMD").at(-1);
    expect(npmScripts(words(cmd?.args ?? ""))).toEqual(["serve"]);
  });

  it("only runs npm scripts that exist in package.json", () => {
    const run = all.filter((i) => ["RUN", "CMD", "ENTRYPOINT"].includes(i.op));
    const named = run.flatMap((i) => npmScripts(words(i.args).flatMap((w) => w.split(/\s+/))));
    expect(named.length).toBeGreaterThan(0);
    for (const script of named) expect(scripts, `npm run ${script}`).toContain(script);
  });

  it("copies only paths that exist and are not in .dockerignore", () => {
    const ignored = read(".dockerignore")
      .split("\n")
      .map((line) => line.trim())
      .filter((line) => line && !line.startsWith("#") && !line.startsWith("!"));
    const copies = all.filter((i) => i.op === "COPY" || i.op === "ADD");
    const sources = copies
      .filter((i) => !/--from=/.test(i.args))
      .flatMap((i) =>
        words(i.args)
          .filter((w) => !w.startsWith("--"))
          .slice(0, -1),
      );
    expect(sources.length).toBeGreaterThan(0);
    for (const source of sources) {
      expect(existsSync(`${root}${source}`), `COPY ${source}`).toBe(true);
      const path = posix.normalize(source).replace(/\/$/, "");
      for (const pattern of ignored) {
        const plain = pattern.replace(/^\*\*\//, "");
        if (/[*?[]/.test(plain)) continue;
        expect(
          path === plain || path.startsWith(`${plain}/`),
          `COPY ${source} is excluded by .dockerignore "${pattern}"`,
        ).toBe(false);
      }
    }
  });
});
