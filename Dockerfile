# predcache: one image for the API (`npm run serve`, the default) and the workers
# (`npm run work` with PREDCACHE_WORKERS=live|precompute). The service runs its TypeScript
# through tsx (a production dependency), so there is no compile step besides the client
# bundle. Usage: docker-compose.yml and docs/deploy.md.

# ---- build: every dependency, then the client bundle (dist/client) ----
FROM node:20-bookworm-slim AS build
WORKDIR /app
COPY package.json package-lock.json .npmrc ./
# --ignore-scripts: the project's "prepare" script (build:client) needs the sources, which
# are copied after this layer so it stays cached; run it explicitly below. Bundling needs
# no dependency's install script (esbuild's binary comes from its platform package).
RUN npm ci --ignore-scripts --no-audit --no-fund
COPY scripts ./scripts
COPY src ./src
RUN npm run build:client

# ---- runtime: production dependencies, sources, models, non-root ----
FROM node:20-bookworm-slim AS runtime
ENV NODE_ENV=production \
    NPM_CONFIG_UPDATE_NOTIFIER=false \
    NPM_CONFIG_FUND=false \
    HOST=0.0.0.0 \
    PORT=8787 \
    PREDCACHE_DATA_DIR=/var/lib/predcache
WORKDIR /app
COPY package.json package-lock.json ./
# --ignore-scripts is required: "prepare" runs build:client, which needs devDependencies.
# No production dependency needs its install script: onnxruntime-node ships its CPU
# binaries in the package (its script only downloads optional GPU providers, and .npmrc
# skips that anyway, which is why .npmrc is not needed here); esbuild (tsx's) and
# msgpackr-extract load the prebuilt binaries of their optional platform packages.
# onnxruntime-node's macOS and Windows binaries (~220 MB) are removed.
RUN npm ci --omit=dev --ignore-scripts --no-audit --no-fund \
 && rm -rf node_modules/onnxruntime-node/bin/napi-v*/darwin node_modules/onnxruntime-node/bin/napi-v*/win32 \
 && npm cache clean --force
COPY tsconfig.json ./
COPY bin ./bin
# The admin script on the PATH as `predcache`. Not `npx predcache` here: npx installs the
# project itself into its cache, running its "prepare" (build:client, which cannot build
# here) and changing the bin's mode (root's file; the image runs as `node`).
RUN ln -s /app/bin/predcache.js /usr/local/bin/predcache
COPY src ./src
COPY precompute ./precompute
COPY seeds/models ./seeds/models
COPY seeds/inputs ./seeds/inputs
COPY --from=build /app/dist/client ./dist/client
# Lookup tables are written under PREDCACHE_DATA_DIR/tables; a named volume mounted here
# starts out owned by `node` (the code and node_modules stay root-owned, read-only).
RUN mkdir -p /var/lib/predcache && chown node:node /var/lib/predcache
USER node
EXPOSE 8787
# The slim image has no curl: ask /healthz with node's fetch. (Workers answer /healthz
# on PREDCACHE_METRICS_PORT instead: docker-compose.yml gives them their own check.)
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
  CMD ["node", "-e", "fetch('http://127.0.0.1:' + (process.env.PORT || 8787) + '/healthz').then((r) => process.exit(r.ok ? 0 : 1), () => process.exit(1))"]
CMD ["npm", "run", "serve"]
