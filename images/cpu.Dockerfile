# syntax=docker/dockerfile:1
# cloudml-cpu: ingest and gate (CPU pool). python:3.11-slim + the CPU torch wheel; the
# CPU pool never pulls the multi-GB CUDA image. Built by images/build.sh from the repo root.
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
COPY images/constraints.txt /tmp/constraints.txt
# torch first from the CPU index, then cloudml (its own pins + the constraints file)
RUN pip install --no-cache-dir "torch==${TORCH_VERSION}" --index-url "${TORCH_INDEX}"
COPY pyproject.toml README.md /src/
COPY cloudml /src/cloudml
COPY components /src/components
COPY pipelines /src/pipelines
RUN pip install --no-cache-dir -c /tmp/constraints.txt /src \
    && python -c "import cloudml, kfp, torch; assert torch.__version__.startswith('${TORCH_VERSION}')"

FROM ${PYTHON_IMAGE}
# jemalloc (docs/physics.md, 'Defects of the research code'): freed activations stay mapped instead of being faulted back in.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends libjemalloc2 \
    && rm -rf /var/lib/apt/lists/* \
    && test -f /usr/lib/x86_64-linux-gnu/libjemalloc.so.2 \
    && useradd --uid 10001 --user-group --create-home --shell /usr/sbin/nologin cloudml
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    LD_PRELOAD=/usr/lib/x86_64-linux-gnu/libjemalloc.so.2 \
    MALLOC_CONF=dirty_decay_ms:-1,muzzy_decay_ms:-1
USER 10001:10001
WORKDIR /home/cloudml
ENTRYPOINT ["cloudml"]
CMD ["--help"]
