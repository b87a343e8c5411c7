#!/usr/bin/env bash
# Apple's Embedding Atlas in its own virtual environment (bench/peers/.venv-atlas), never in qspace's: it pins its
# own versions (duckdb, pandas, fastapi, ...). bench/peers/embedding_atlas.py drives its `embedding-atlas` CLI.
# Default 0.22.0: the last release that falls back to WebGL 2. From 0.24.0 on Atlas draws with WebGPU only and
# needs the `shader-f16` feature, which Chromium's software WebGPU (SwiftShader) lacks: on a machine without a
# GPU the plot stays blank ("WebGPU is unavailable"). EMBEDDING_ATLAS_VERSION=0.26.0 for the newest release.
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3.11}
VERSION=${EMBEDDING_ATLAS_VERSION:-0.22.0}
[ -x .venv-atlas/bin/python ] || "$PY" -m venv .venv-atlas
# torch comes with sentence-transformers (Atlas embeds text when asked to; the race hands it x/y, so it never
# runs): the CPU wheel already on this machine, not a multi-GB CUDA build.
.venv-atlas/bin/python -m pip install -q --disable-pip-version-check "torch==2.13.0" "embedding-atlas==$VERSION"
.venv-atlas/bin/python -c 'import importlib.metadata as m; print("embedding-atlas", m.version("embedding-atlas"))'
