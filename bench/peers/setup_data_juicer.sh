#!/usr/bin/env bash
# Data-Juicer in its own virtual environment (bench/peers/.venv-dj), never in qspace's: it pins its own versions.
# The same torch and transformers as qspace's .venv, so the race compares the tools, not the libraries.
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3.11}
[ -x .venv-dj/bin/python ] || "$PY" -m venv .venv-dj
tf=$(../../.venv/bin/python -c 'import transformers; print(transformers.__version__)')
# aiohttp: imported by data_juicer.utils.file_utils but not declared by py-data-juicer 1.6.1
.venv-dj/bin/python -m pip install -q --disable-pip-version-check "torch==2.13.0" "transformers==$tf" \
  py-data-juicer==1.6.1 aiohttp
.venv-dj/bin/python -P -c 'import data_juicer; print("data-juicer", data_juicer.__version__)'
