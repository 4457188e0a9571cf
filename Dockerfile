# syntax=docker/dockerfile:1
#
# reid images, two targets over one CUDA base (see deploy/README.md):
#
#   service  `reid serve`: ONNX Runtime GPU + FAISS GPU, no PyTorch. Runs on CPU too where no
#            GPU is visible (ONNX Runtime falls back to its CPU provider, FAISS to CPU indexes).
#            docker build --target service -t reid-service .
#   train    `reid train` (and `reid export`) with the CUDA build of PyTorch from PyPI.
#            docker build --target train -t reid-train .
#
# Third-party requirements are computed from pyproject.toml by
# deploy/docker/pyproject_requirements.py and installed in a layer of their own, so a code
# change rebuilds only the small layer that installs the project (--no-deps).

ARG CUDA_IMAGE=nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04

# ---- base: Python 3.12 in a virtualenv, an unprivileged user -------------------------------
FROM ${CUDA_IMAGE} AS base

ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    HOME=/tmp

# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates python3 python3-venv \
    && rm -rf /var/lib/apt/lists/* \
    && python3 -m venv /opt/venv \
    && groupadd --gid 10001 reid \
    && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin reid

COPY deploy/docker/pyproject_requirements.py /opt/reid-build/pyproject_requirements.py
COPY pyproject.toml /opt/reid-build/src/pyproject.toml

# ---- service: ONNX Runtime + FAISS, never torch ----------------------------------------------
FROM base AS service-deps
RUN python /opt/reid-build/pyproject_requirements.py /opt/reid-build/src/pyproject.toml \
        service-gpu > /opt/reid-build/requirements.txt \
    && pip install --no-cache-dir -r /opt/reid-build/requirements.txt

FROM service-deps AS service
COPY README.md /opt/reid-build/src/README.md
COPY reidcore /opt/reid-build/src/reidcore
COPY service /opt/reid-build/src/service
COPY training /opt/reid-build/src/training
COPY export /opt/reid-build/src/export
COPY quickstart /opt/reid-build/src/quickstart
# The build fails if PyTorch got into the service image by any route.
RUN pip install --no-cache-dir --no-deps /opt/reid-build/src \
    && pip check \
    && python -c "import importlib.util as u, sys; sys.exit('torch in the service image' if u.find_spec('torch') else 0)" \
    && rm -rf /opt/reid-build \
    && install -d -o 10001 -g 10001 -m 0750 /data \
    && install -d -m 0755 /models

# Every REID_* setting can be given in the environment (deploy/reid.env.example lists them).
# The model folder is <models>/<name>/<version>, mounted read-only under /models.
ENV REID_HOST=0.0.0.0 \
    REID_PORT=8000 \
    REID_MODEL_DIR=/models/current \
    REID_DATA_DIR=/data
VOLUME ["/data"]
USER 10001:10001
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request as r; r.urlopen('http://127.0.0.1:%s/readyz' % os.environ.get('REID_PORT', '8000'), timeout=4)"]
CMD ["sh", "-c", "exec reid serve --model \"$REID_MODEL_DIR\" --data \"$REID_DATA_DIR\""]

# ---- train: CUDA PyTorch; also runs `reid export` (onnx + CPU onnxruntime for the parity check)
FROM base AS train-deps
RUN python /opt/reid-build/pyproject_requirements.py /opt/reid-build/src/pyproject.toml \
        train export service > /opt/reid-build/requirements.txt \
    && pip install --no-cache-dir -r /opt/reid-build/requirements.txt

FROM train-deps AS train
COPY README.md /opt/reid-build/src/README.md
COPY reidcore /opt/reid-build/src/reidcore
COPY service /opt/reid-build/src/service
COPY training /opt/reid-build/src/training
COPY export /opt/reid-build/src/export
COPY quickstart /opt/reid-build/src/quickstart
RUN pip install --no-cache-dir --no-deps /opt/reid-build/src \
    && pip check \
    && rm -rf /opt/reid-build \
    && install -d -o 10001 -g 10001 -m 0755 /work/reid/runs /work/reid/models \
    && install -d -m 0755 /work/shared/data /work/shared/weights

# The working directory mirrors a checkout: the shipped configs' relative paths
# (../shared/data, ../shared/weights, runs/, models/) resolve against the mounts.
WORKDIR /work/reid
COPY training/configs /work/reid/training/configs
USER 10001:10001
ENTRYPOINT ["reid", "train"]
CMD ["--config", "training/configs/apr_market.yaml"]
