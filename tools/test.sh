#!/usr/bin/env bash
# The README's second command (and exactly what .ci/run runs): sets up libtorch (venv), starts a real single-node
# Slurm for the cluster-executor tests, runs every test, stops Slurm. Extra arguments go to the test binaries.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$here"
bash tools/bootstrap.sh >/dev/null
slurm_up=0
if [ "${SATM_NO_SLURM:-0}" != 1 ] && [ "$(id -u)" = 0 ]; then
  # Installs slurmctld/slurmd/munge if missing (~15 s). Exit 3: cannot be installed here -> those tests skip loudly.
  rc=0; bash tools/slurm_local.sh start || rc=$?
  if [ "$rc" = 0 ]; then
    slurm_up=1
    export SATM_SLURM=1 # installed and running: any Slurm problem now fails the tests
  elif [ "$rc" = 3 ]; then
    echo "WARNING: Slurm cannot be installed here; the real-Slurm grid tests will be SKIPPED" >&2
  else
    echo "ERROR: Slurm is installed but would not start (see above)" >&2
    exit 1
  fi
else
  echo "WARNING: not root or SATM_NO_SLURM=1; the real-Slurm grid tests will be SKIPPED" >&2
fi
cleanup() { if [ "$slurm_up" = 1 ]; then bash tools/slurm_local.sh stop || true; fi; }
trap cleanup EXIT
tools/cargo.sh test --release -- --test-threads=2 "$@"
