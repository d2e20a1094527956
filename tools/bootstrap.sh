#!/usr/bin/env bash
# Installs what satm needs on a fresh machine: a Python venv holding torch==2.13.0 (its libtorch is what tch 0.26 links),
# reused when present. Location: $SATM_VENV, default ~/.cache/satm/venv (outside the clone, so CI and clones share it).
# Prints the venv path on its last line. Nothing else is downloaded at build or run time.
set -euo pipefail
TORCH_VERSION=2.13.0
VENV="${SATM_VENV:-$HOME/.cache/satm/venv}"
if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c "import torch,sys; sys.exit(0 if torch.__version__.split('+')[0]=='$TORCH_VERSION' else 1)" 2>/dev/null; then
  echo "satm bootstrap: reusing $VENV (torch $TORCH_VERSION)" >&2
else
  echo "satm bootstrap: creating $VENV with torch==$TORCH_VERSION (about a minute, 4.7 GB)" >&2
  mkdir -p "$(dirname "$VENV")"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --upgrade pip >&2
  "$VENV/bin/pip" install --quiet "torch==$TORCH_VERSION" >&2
fi
# The cross-check tests need torchvision and safetensors beside torch; cheap when already there.
if ! "$VENV/bin/python" -c "import torchvision, safetensors" 2>/dev/null; then
  "$VENV/bin/pip" install --quiet "torchvision==0.28.0" safetensors pillow >&2
fi
# The statistics cross-checks (tests/stats.rs) compare against scipy.stats.
if ! "$VENV/bin/python" -c "import scipy.stats" 2>/dev/null; then
  "$VENV/bin/pip" install --quiet "scipy==1.17.1" >&2
fi
echo "$VENV"
