# syntax=docker/dockerfile:1
# jargate's container image: docs/kubernetes.md explains how it is run.
# The base is pinned by digest; refresh it with
#   docker buildx imagetools inspect python:3.11-slim-bookworm
ARG PYTHON_IMAGE=python:3.11-slim-bookworm@sha256:2e32f7d302adc1c37428355c1e646897c0c53f4fd60b6a551245fb90ee129f91

# ---------------------------------------------------------------- build stage
FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
RUN python -m venv /opt/jargate
# Dependencies first, in a layer of their own: exactly the versions and hashes of the lock
# (tests/test_release.py checks it covers pyproject.toml; docs/deployment.md regenerates it).
COPY requirements.lock ./
RUN /opt/jargate/bin/pip install --no-cache-dir --require-hashes --requirement requirements.lock
# Then the code: the same wheel the tests build and install (tests/test_container.py).
COPY pyproject.toml README.md LICENSE ./
COPY proxy ./proxy
RUN /opt/jargate/bin/pip wheel --no-cache-dir --no-deps --wheel-dir /wheels . \
    && /opt/jargate/bin/pip install --no-cache-dir --no-deps /wheels/*.whl \
    && /opt/jargate/bin/pip uninstall --yes pip \
    && python -m compileall -q /opt/jargate

# ---------------------------------------------------------------- runtime stage
FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="jargate" \
      org.opencontainers.image.description="JAR, PAR and JARM in front of a legacy OAuth 2.0 / OpenID Connect server" \
      org.opencontainers.image.version="0.1.0" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="https://example.invalid/jargate" \
      org.opencontainers.image.documentation="docs/kubernetes.md"
ENV PATH=/opt/jargate/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    JARGATE_HOST=0.0.0.0 \
    JARGATE_PORT=8000
# Owned by root and not writable by the runtime user; nothing is written outside /tmp,
# so the container runs with a read-only root filesystem.
COPY --from=build /opt/jargate /opt/jargate
USER 10001:10001
EXPOSE 8000 9090
HEALTHCHECK --interval=30s --timeout=3s --start-period=5s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('JARGATE_PORT', '8000'), timeout=2)"]
# Exec form: Python is PID 1 and receives SIGTERM, then drains (JARGATE_SHUTDOWN_TIMEOUT_SECONDS).
ENTRYPOINT ["python", "-m", "proxy"]
CMD ["serve"]
