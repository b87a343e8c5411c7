# One image recipe for both services of docker-compose.yml:
#   API + UI (no torch):      docker build --build-arg EXTRAS=ui -t qspace-api .
#   GPU scoring worker:       docker build --build-arg EXTRAS=workers -t qspace-worker .
# The workers extra pins torch==2.13.0; on linux/amd64 PyPI serves its CUDA build, which the GPU worker needs.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
ARG EXTRAS=ui

# Dependencies first (cached while only the code changes): install the package's requirements from pyproject.
COPY pyproject.toml README.md ./
RUN mkdir -p backend frontend workers \
    && touch backend/__init__.py frontend/__init__.py workers/__init__.py \
    && pip install ".[${EXTRAS}]" \
    && pip uninstall -y qspace \
    && rm -rf backend frontend workers build *.egg-info

COPY alembic.ini ./
COPY migrations migrations
COPY backend backend
COPY frontend frontend
COPY workers workers
# Editable, so that migrations/ stays where backend/migrate.py looks for it.
RUN pip install --no-deps -e .

RUN useradd --create-home --uid 1000 qspace \
    && mkdir -p /data /models \
    && chown qspace:qspace /data /models
USER qspace

# /data: the data directory (caches, thumbnails); /models: model downloads (Hugging Face, open_clip, torch).
ENV QSPACE_DATA_DIR=/data \
    HF_HOME=/models/huggingface \
    TORCH_HOME=/models/torch \
    XDG_CACHE_HOME=/models/cache

EXPOSE 8000
CMD ["qspace", "serve", "--host", "0.0.0.0", "--no-worker"]
