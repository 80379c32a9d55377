# syntax=docker/dockerfile:1
#
# The CPU image of sppo: every `sppo` command (serve generator|oracle|optimizer, run, watch) on Node 20, with tfjs on
# its wasm backend and onnxruntime-node's bundled (native, multi-threaded) CPU provider. The GPU variant is
# Dockerfile.gpu. See docs/deploy.md.
#
#   docker build -t sppo:0.1.0 .
#   docker run --rm --read-only --tmpfs /tmp sppo:0.1.0                  # `sppo run` on the embedded default task
#   docker run --rm --read-only --tmpfs /tmp -p 50052:50052 sppo:0.1.0 serve oracle
#
# The tag follows package.json's version (test/deploy/dockerfile.test.ts checks the manifests use the same one).

ARG NODE_IMAGE=node:20-bookworm-slim

# ---- deps: production node_modules only ------------------------------------------------------------------------
FROM ${NODE_IMAGE} AS deps
WORKDIR /app
COPY package.json package-lock.json .npmrc ./
# --omit=dev: no compiler, linter, buf or test packages in the image.
# --ignore-scripts: no install script runs. The CPU image needs none of them: onnxruntime-node ships its CPU binary in
#   the package (its script would only fetch CUDA binaries; .npmrc skips that anyway), esbuild (used by tsx) finds its
#   binary in @esbuild/linux-x64, and @tensorflow/tfjs-node-gpu's script would download a GPU libtensorflow that this
#   image must not carry. That package is then removed, so models/backend.ts skips it and chooses wasm.
# Then about 430 MB go: source maps (nothing loads them) and onnxruntime's macOS and Windows binaries.
RUN npm ci --omit=dev --ignore-scripts --no-audit --no-fund \
 && rm -rf node_modules/@tensorflow/tfjs-node-gpu \
 && find node_modules -type f -name '*.map' -delete \
 && rm -rf node_modules/onnxruntime-node/bin/napi-v6/darwin node_modules/onnxruntime-node/bin/napi-v6/win32 \
 && npm cache clean --force

# ---- runtime ---------------------------------------------------------------------------------------------------
FROM ${NODE_IMAGE} AS runtime
LABEL org.opencontainers.image.title="sppo" \
      org.opencontainers.image.description="Self-Play Preference Optimization: generator, preference oracle and optimizer services and the self-play loop (CPU: tfjs wasm, onnxruntime CPU)" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV NODE_ENV=production
WORKDIR /app
COPY --from=deps /app/node_modules ./node_modules
# The sources, run by tsx at start-up (there is no build step). .dockerignore lets in only what runs: bin, cli, gen,
# lib, models, services, pipeline, proto, assets and the package files; tests, benchmarks and
# deploy/ stay out.
# Files stay owned by root and read-only for the user that runs them.
COPY . .
# The `node` user of the base image, by number so that Kubernetes can check runAsNonRoot.
USER 1000:1000
# A container's loopback cannot be reached from outside it: the loop of `sppo run` (telemetry, dashboard, /metrics)
# listens on every interface here, where on a host it keeps to loopback.
ENV SPPO_PIPELINE__HOST=0.0.0.0
# generator, oracle, optimizer, the loop's telemetry (sppo.v1.Telemetry), Prometheus /metrics of the generator,
# oracle, optimizer and loop (each process's default; the manifests set 9464 for every pod).
EXPOSE 50051 50052 50053 50054 9464 9465 9466 9467
# Node is PID 1 here; every sppo command handles SIGTERM itself (health NOT_SERVING, drain, exit).
STOPSIGNAL SIGTERM
ENTRYPOINT ["node", "/app/bin/sppo.mjs"]
# The same command as `npm start`: the self-play loop on the embedded default task.
CMD ["run"]
