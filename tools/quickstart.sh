#!/usr/bin/env bash
# The README's first command: sets up libtorch (venv), builds satm, and runs the quickstart end to end.
# Data: $SATM_DATA, else ../shared/data beside the clone, else what `satm data import` put in ~/.local/share/satm/data,
# else the sample of 1,500 UTKFace faces bundled in assets/sample (a bare clone needs nothing else).
# Extra arguments go to `satm run` (e.g. --set root=/path/to/utkface).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$here"
tools/cargo.sh build --release
exec target/release/satm run scripts/quickstart.rhai "$@"
