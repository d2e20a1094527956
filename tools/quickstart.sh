#!/usr/bin/env bash
# The README's first command: sets up libtorch (venv), builds satm, and runs the quickstart end to end.
# Extra arguments go to `satm run` (e.g. --set root=/path/to/utkface).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$here"
tools/cargo.sh build --release
exec target/release/satm run scripts/quickstart.rhai "$@"
