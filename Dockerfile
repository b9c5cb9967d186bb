# The tweetbot service with its exported bundle baked in: `dvc repro image` builds it (deploy/image.py), and so
# does `docker build .` at the repository root once `models/export/` exists.
#
# Two stages on one base, so the virtual environment's interpreter links are valid in the runtime stage:
#   builder  installs the service's locked dependencies (uv.lock, project dependencies only) into /opt/venv;
#   runtime  the base + that venv + the service code + the bundle, run as an unprivileged user.
# Any image with Python 3.11 at `python3` works as the base; where no registry can be reached the tests use a
# debootstrapped Debian bookworm (deploy/setup_builder.sh).
ARG BASE_IMAGE=python:3.11-slim

FROM ${BASE_IMAGE} AS builder
ARG UV_VERSION=0.13.9
ENV UV_PROJECT_ENVIRONMENT=/opt/venv \
    UV_PYTHON=python3 \
    UV_PYTHON_DOWNLOADS=never \
    UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy
# binutils for `strip` below; the builder stage is thrown away, so no compiler or apt list reaches the image.
RUN apt-get update -q && apt-get install -y -q --no-install-recommends binutils && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml uv.lock ./
# A TLS-intercepting network needs its CA bundle here: it comes in as a BuildKit secret (--secret id=ca,src=...),
# which is mounted for this step only and never written to a layer. Without it the step builds as usual.
#
# Only the project's dependencies, not the pipeline (training, DVC, AWS) or dev groups. Some of them are
# required by their packages' metadata but never imported by the service, which only samples: scipy (jax.scipy),
# tensorstore and orbax-checkpoint (flax checkpoints), optax (training), polyfactory and faker (litestar test
# factories). Leaving them out saves about 250 MB; the image test proves the service runs without them.
RUN --mount=type=secret,id=ca \
    --mount=type=cache,target=/root/.cache \
    set -eu; \
    if [ -s /run/secrets/ca ]; then export SSL_CERT_FILE=/run/secrets/ca PIP_CERT=/run/secrets/ca; fi; \
    python3 -m venv /opt/uv; \
    /opt/uv/bin/pip install --quiet --disable-pip-version-check "uv==${UV_VERSION}"; \
    /opt/uv/bin/uv sync --frozen --no-default-groups --no-dev --no-install-project \
        --no-install-package scipy --no-install-package tensorstore --no-install-package orbax-checkpoint \
        --no-install-package optax --no-install-package polyfactory --no-install-package faker; \
    # Test suites that packages ship are never run here. jaxlib ships its 330 MB library with a full symbol
    # table (110 MB) that only debuggers read; it is loaded through its dynamic symbols, which stay.
    find /opt/venv -depth -type d -name tests -path '*/site-packages/*/*' -exec rm -rf {} +; \
    strip --strip-unneeded /opt/venv/lib/python3.*/site-packages/jaxlib/*.so

FROM ${BASE_IMAGE} AS runtime
RUN groupadd --system --gid 10001 tweetbot \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /app --shell /usr/sbin/nologin tweetbot
COPY --from=builder /opt/venv /opt/venv
COPY src/tweetbot/__init__.py /app/src/tweetbot/__init__.py
COPY src/tweetbot/runtime /app/src/tweetbot/runtime
COPY service /app/service
COPY models/export /app/bundle
# No persistent JAX compilation cache: the service user may write nowhere in the image, and a container's
# cache would die with it anyway.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONPATH=/app/src:/app \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    TWEETBOT_BUNDLE=/app/bundle \
    TWEETBOT_COMPILE_CACHE="" \
    TWEETBOT_DRAIN_S=20 \
    PORT=8080
# Last, so a new tag or revision changes no layer above.
ARG SOURCE=
ARG REVISION=unknown
ARG MODEL_VERSION=unknown
ARG TAG=unknown
LABEL org.opencontainers.image.title="tweetbot" \
      org.opencontainers.image.description="A character-level text generator served over HTTP" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.version="${TAG}" \
      io.tweetbot.model.version="${MODEL_VERSION}"
WORKDIR /app
USER tweetbot:tweetbot
EXPOSE 8080
HEALTHCHECK --interval=15s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ['PORT'] + '/healthz', timeout=2)"]
# `exec` makes uvicorn PID 1, so it gets SIGTERM itself and drains: it exits within TWEETBOT_DRAIN_S (20 s, the
# settings' default). The service cuts what still runs a second before; uvicorn's own bound is the same
# (service/shutdown.py).
# It listens on PORT (8080), as service/settings.py says, which a host-networked run may move.
CMD ["/bin/sh", "-c", "exec uvicorn --factory service.app:create_app --host 0.0.0.0 --port \"$PORT\" --timeout-graceful-shutdown \"$TWEETBOT_DRAIN_S\""]
