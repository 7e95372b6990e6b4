# syntax=docker/dockerfile:1
# One image for the API (default command) and the workers (compose.yaml sets their command).
# Node 24 runs the TypeScript sources directly (type stripping); the one build step is the admin console's
# (esbuild bundles console/ into api/console-assets.gen.ts, which the API serves).
ARG NODE_IMAGE=node:24-slim

# Stage 1: production dependencies only, from the lockfile.
FROM ${NODE_IMAGE} AS deps
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --no-audit --no-fund && npm cache clean --force

# Stage 2: the console's build, with the dev dependencies that make it (install scripts skipped: only
# esbuild's own binary, an optional dependency, is needed).
FROM ${NODE_IMAGE} AS console
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --ignore-scripts --no-audit --no-fund
COPY console ./console
COPY shared ./shared
COPY scripts/build-console.ts ./scripts/
RUN mkdir api && node scripts/build-console.ts

# Stage 3: the runtime. Code and modules stay owned by root: the app's user can read, not change them.
FROM ${NODE_IMAGE} AS runtime
ENV NODE_ENV=production \
    HOST=0.0.0.0 \
    PORT=3000
WORKDIR /app
COPY --from=deps /app/node_modules ./node_modules
COPY package.json ./
COPY shared ./shared
COPY api ./api
COPY --from=console /app/api/console-assets.gen.ts ./api/
COPY workers ./workers
COPY scripts ./scripts
# The official image's unprivileged user (uid 1000).
USER node
EXPOSE 3000
# Liveness of the API; compose.yaml checks /ready for the API and each worker's probe port instead.
HEALTHCHECK --interval=10s --timeout=5s --start-period=20s --retries=3 \
  CMD ["node", "-e", "fetch('http://127.0.0.1:' + (process.env.PORT || 3000) + '/health').then((r) => process.exit(r.ok ? 0 : 1), () => process.exit(1))"]
# SIGTERM: the API drains in-flight requests, a worker its jobs, then they exit 0.
STOPSIGNAL SIGTERM
CMD ["node", "api/node.ts"]
