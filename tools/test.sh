#!/usr/bin/env bash
# The README's second command (and exactly what .ci/run runs): sets up libtorch (venv), starts a real single-node
# Slurm for the cluster-executor tests, runs every test, stops Slurm. Extra arguments go to the test binaries.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$here"
bash tools/bootstrap.sh >/dev/null
slurm_up=0
# Under CI (CI=true) the real-Slurm grid tests must run: a Slurm that cannot be installed or started fails the run.
# Elsewhere they are skipped, saying why.
ci=0
case "${CI:-}" in true | 1) ci=1 ;; esac
if [ "$ci" = 1 ] || { [ "${SATM_NO_SLURM:-0}" != 1 ] && [ "$(id -u)" = 0 ]; }; then
  if [ "$(id -u)" != 0 ]; then
    echo "ERROR: CI=true but not root: tools/slurm_local.sh needs root to start Slurm for the grid tests" >&2
    exit 1
  fi
  # Installs slurmctld/slurmd/munge if missing (~15 s). Exit 3: cannot be installed here.
  rc=0; bash tools/slurm_local.sh start || rc=$?
  if [ "$rc" = 0 ]; then
    slurm_up=1
    export SATM_SLURM=1 # installed and running: any Slurm problem now fails the tests
  elif [ "$rc" = 3 ] && [ "$ci" = 0 ]; then
    echo "WARNING: Slurm cannot be installed here (see above); the real-Slurm grid tests will be SKIPPED" >&2
  elif [ "$rc" = 3 ]; then
    echo "ERROR: CI=true and Slurm cannot be installed here (see above); the real-Slurm grid tests must run under CI" >&2
    exit 1
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
