# syntax=docker/dockerfile:1
# cloudml-gpu: pretrain, finetune, evaluate (GPU pool). The CUDA "base" image brings the
# driver-compat layer and NVIDIA runtime settings; the torch CUDA wheel brings its own CUDA
# and cuDNN libraries, so a -cudnn-runtime base would only duplicate them. Keep CUDA_BASE
# and TORCH_INDEX on the same CUDA major/minor. Built by images/build.sh (linux/amd64).
ARG CUDA_BASE=nvidia/cuda:13.0.1-base-ubuntu24.04

FROM ${CUDA_BASE} AS build
ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX=https://download.pytorch.org/whl/cu130
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 DEBIAN_FRONTEND=noninteractive
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv \
    && rm -rf /var/lib/apt/lists/* \
    && python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
COPY images/constraints.txt /tmp/constraints.txt
RUN pip install --no-cache-dir "torch==${TORCH_VERSION}" --index-url "${TORCH_INDEX}"
COPY pyproject.toml README.md /src/
COPY cloudml /src/cloudml
COPY components /src/components
COPY pipelines /src/pipelines
RUN pip install --no-cache-dir -c /tmp/constraints.txt /src \
    && python -c "import cloudml, kfp, torch; assert torch.__version__.startswith('${TORCH_VERSION}') and torch.version.cuda"

FROM ${CUDA_BASE}
ENV DEBIAN_FRONTEND=noninteractive
# python3 for the venv copied below; jemalloc as in docs/physics.md, 'Defects of the research code' (2.5x on it)
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 libjemalloc2 \
    && rm -rf /var/lib/apt/lists/* \
    && test -f /usr/lib/x86_64-linux-gnu/libjemalloc.so.2 \
    && useradd --uid 10001 --user-group --create-home --shell /usr/sbin/nologin cloudml
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility \
    LD_PRELOAD=/usr/lib/x86_64-linux-gnu/libjemalloc.so.2 \
    MALLOC_CONF=dirty_decay_ms:-1,muzzy_decay_ms:-1
USER 10001:10001
WORKDIR /home/cloudml
ENTRYPOINT ["cloudml"]
CMD ["--help"]
