#!/usr/bin/env bash
# The README's second command (and exactly what .ci/run runs): sets up libtorch (venv), starts a real single-node
# Slurm for the cluster-executor test (skipped loudly if Slurm cannot be installed), runs every test, stops Slurm.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$here"
bash tools/bootstrap.sh >/dev/null
slurm_started=0
if [ "$(id -u)" = 0 ] && [ "${SATM_NO_SLURM:-0}" != 1 ]; then
  if bash tools/slurm_local.sh start; then
    slurm_started=1
    export SATM_SLURM=1
  else
    echo "WARNING: could not start a local Slurm; the real-Slurm test will be skipped" >&2
  fi
fi
cleanup() { if [ "$slurm_started" = 1 ]; then bash tools/slurm_local.sh stop || true; fi; }
trap cleanup EXIT
tools/cargo.sh test --release -- --test-threads=2 "$@"
