/**
 * Builds predcache/client for apps: `dist/client/predcache-client.js`, one browser ES
 * module with its dependencies inside (msgpackr, zod, lru-cache, noble hashes), and
 * `dist/client/index.js` for Node and bundlers, with dependencies left as imports.
 * Run: npm run build:client (also run by `npm install` through "prepare").
 */
import { stat } from "node:fs/promises";
import { join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { build } from "esbuild";

const ENTRY = fileURLToPath(new URL("../src/client/index.ts", import.meta.url));

export interface ClientBuild {
  browser: string;
  node: string;
  browserBytes: number;
}

export async function buildClient(outdir: string): Promise<ClientBuild> {
  const browser = join(outdir, "predcache-client.js");
  const node = join(outdir, "index.js");
  const common = { bundle: true, format: "esm", target: "es2022" } as const;
  await Promise.all([
    build({
      ...common,
      entryPoints: [ENTRY],
      platform: "browser",
      minify: true,
      sourcemap: true,
      outfile: browser,
    }),
    build({
      ...common,
      entryPoints: [ENTRY],
      platform: "neutral",
      packages: "external",
      outfile: node,
    }),
  ]);
  return { browser, node, browserBytes: (await stat(browser)).size };
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const out = await buildClient(fileURLToPath(new URL("../dist/client", import.meta.url)));
  console.log(
    `predcache/client: ${out.browser} (${(out.browserBytes / 1024).toFixed(1)} KiB), ${out.node}`,
  );
}
