#!/usr/bin/env bash
# Runs cargo with the project venv's libtorch: bootstraps the venv if needed, then LIBTORCH_USE_PYTORCH=1 with the
# venv first on PATH (torch-sys asks that python where torch lives). Usage: tools/cargo.sh build --release, ...
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$(bash "$here/tools/bootstrap.sh" | tail -n 1)"
export SATM_VENV="$venv"
export PATH="$venv/bin:$PATH"
export LIBTORCH_USE_PYTORCH=1
unset LIBTORCH LIBTORCH_LIB LIBTORCH_INCLUDE
cd "$here"
exec cargo "$@"
