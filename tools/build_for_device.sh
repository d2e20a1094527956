#!/usr/bin/env bash
# Builds a satm binary for the GPU machine the `device` tool lends (an H200 with PyTorch 2.11.0+cu130 in
# /opt/torch/.venv, Python 3.12, no network and no Rust toolchain), here, against the same libtorch version:
#   1. a venv holding torch==2.11.0 (the CUDA wheel, like the device's), created once at $SATM_DEVICE_VENV
#      (default ~/.cache/satm/venv-torch2.11, about 4.6 GB);
#   2. tch 0.26 (written for libtorch 2.13) compiled against libtorch 2.11: torch-sys 0.26's C++ wrapper is patched
#      (tools/device/patch_torch_sys.py) so that the wrapper functions of ops libtorch 2.11 lacks or declares
#      differently (17, listed in dist/device/PATCHED: flash-attention and philox variants, lanczos upsampling, ...;
#      nothing satm calls) raise "not available in libtorch 2.11" instead of failing the build. Every other wrapper is
#      the text torch-sys 0.24 (tch's release for 2.11) compiles. The build runs in a copy of the tree
#      (target/device/tree) with a [patch] for torch-sys, so the checkout's Cargo.toml and Cargo.lock stay as they are;
#   3. the binary with the device's libtorch directory first in its rpath, copied to dist/device/satm with the test
#      programs of the PyTorch cross-checks (dist/device/tests/) and ref_satm.py, and checked here: `satm info` and a
#      short K = 2 SATM run on the CPU against the 2.11 libraries.
# dist/device/ then travels to the device (`run` with carry: ["dist/device"]), where tools/gpu_check.sh runs it.
# Usage: tools/build_for_device.sh [--no-check]        (about 10 minutes the first time on 2 cores)
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$here"
TORCH_VERSION="${SATM_DEVICE_TORCH:-2.11.0}"
REF_TORCH_SYS="${SATM_DEVICE_TORCH_SYS:-0.24.0}" # the torch-sys release written for $TORCH_VERSION
VENV="${SATM_DEVICE_VENV:-$HOME/.cache/satm/venv-torch${TORCH_VERSION%.*}}"
DEVICE_LIB="${SATM_DEVICE_TORCH_LIB:-/opt/torch/.venv/lib/python3.12/site-packages/torch/lib}"
say() { echo "build_for_device: $*" >&2; }

# 1. the libtorch to build against
if ! { [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c "import torch,sys; sys.exit(0 if torch.__version__.split('+')[0]=='$TORCH_VERSION' else 1)" 2>/dev/null; }; then
  say "creating $VENV with torch==$TORCH_VERSION (a few minutes, about 4.6 GB)"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --upgrade pip
  "$VENV/bin/pip" install --quiet "torch==$TORCH_VERSION" numpy
fi
# The cross-checks read and write safetensors from Python (the device's venv has it; so must this one, for the check).
"$VENV/bin/python" -c "import safetensors" 2>/dev/null || "$VENV/bin/pip" install --quiet safetensors
lib="$("$VENV/bin/python" -c 'import torch, os; print(os.path.join(os.path.dirname(torch.__file__), "lib"))' 2>/dev/null)"
[ -f "$lib/libtorch_cuda.so" ] || { say "$lib has no libtorch_cuda.so: $VENV holds a CPU-only torch; remove it and run again"; exit 1; }

# 2. torch-sys 0.26 patched for libtorch $TORCH_VERSION, and a copy of the tree that uses it
dev="$here/target/device"
mkdir -p "$dev"
cargo fetch --quiet
new_ts="$(cargo metadata --format-version 1 2>/dev/null | python3 -c 'import json, sys, os
m = json.load(sys.stdin)
print(next(os.path.dirname(p["manifest_path"]) for p in m["packages"] if p["name"] == "torch-sys"))')"
ref_ts="$HOME/.cache/satm/torch-sys-$REF_TORCH_SYS"
if [ ! -f "$ref_ts/libtch/torch_api_generated.cpp" ]; then
  say "fetching torch-sys $REF_TORCH_SYS (the reference wrapper for libtorch $TORCH_VERSION) from crates.io"
  mkdir -p "$(dirname "$ref_ts")"
  curl -fsSL "https://static.crates.io/crates/torch-sys/torch-sys-$REF_TORCH_SYS.crate" | tar -xz -C "$(dirname "$ref_ts")"
fi
ts="$dev/torch-sys-libtorch$TORCH_VERSION"
python3 tools/device/patch_torch_sys.py "$new_ts/libtch/torch_api_generated.cpp" "$ref_ts/libtch/torch_api_generated.cpp" \
  "$dev/torch_api_generated.cpp" "$TORCH_VERSION" > "$dev/PATCHED"
# A fresh copy only when the patched wrapper changed (the C++ wrapper takes minutes to compile).
if ! cmp -s "$dev/torch_api_generated.cpp" "$ts/libtch/torch_api_generated.cpp"; then
  rm -rf "$ts" && cp -r "$new_ts" "$ts" && cp "$dev/torch_api_generated.cpp" "$ts/libtch/torch_api_generated.cpp"
fi
say "$(head -n 1 "$dev/PATCHED")"
tree="$dev/tree"
mkdir -p "$tree"
# A mirror, not an overlay: a file moved or deleted in the checkout must not linger in the copy (tar keeps the mtimes,
# so cargo rebuilds only what changed).
rm -rf "$tree/build.rs" "$tree/csrc" "$tree/src" "$tree/tests" "$tree/assets"
tar -c build.rs csrc src tests assets/fonts | tar -x -C "$tree"
# The copy's Cargo.lock also locks the patched torch-sys: taken from the checkout once, then cargo keeps it current.
[ -f "$tree/Cargo.lock" ] || cp -p Cargo.lock "$tree/Cargo.lock"
# Cargo.toml with the [patch], rewritten only when it changes (a new mtime would rebuild all of satm).
{ cat Cargo.toml; printf '\n[patch.crates-io]\ntorch-sys = { path = "%s" }\n' "$ts"; } > "$dev/Cargo.toml.patched"
cmp -s "$dev/Cargo.toml.patched" "$tree/Cargo.toml" || cp "$dev/Cargo.toml.patched" "$tree/Cargo.toml"

# 3. build (binary and the cross-check test programs) in the copy
say "building against $("$VENV/bin/python" -c 'import torch; print(torch.__version__)' 2>/dev/null) ($lib)"
export PATH="$VENV/bin:$PATH" LIBTORCH_USE_PYTORCH=1 LIBTORCH_BYPASS_VERSION_CHECK=1 SATM_EXTRA_RPATH="$DEVICE_LIB"
unset LIBTORCH LIBTORCH_LIB LIBTORCH_INCLUDE
(cd "$tree" && CARGO_TARGET_DIR="$dev" cargo build --release --bin satm)
tests_json="$(cd "$tree" && CARGO_TARGET_DIR="$dev" cargo test --release --no-run --test bench --test train --message-format=json)"
rm -rf dist/device && mkdir -p dist/device/tests
cp "$dev/release/satm" dist/device/satm
for t in bench train; do
  exe="$(printf '%s\n' "$tests_json" | python3 -c 'import json, sys
name = sys.argv[1]
for l in sys.stdin:
    try: m = json.loads(l)
    except ValueError: continue
    if m.get("reason") == "compiler-artifact" and m.get("target", {}).get("name") == name and m.get("executable"): print(m["executable"])' "$t" | tail -n 1)"
  [ -n "$exe" ] || { say "the test program '$t' was not built"; exit 1; }
  cp "$exe" "dist/device/tests/$t"
done
# Symbols are not needed to run; stripped, the whole of dist/device fits the device tool's carry beside the tree.
strip dist/device/satm dist/device/tests/*
ref="${SATM_REF_BENCH:-$here/../shared/bench/ref_satm.py}"
[ -f "$ref" ] || { say "ref_satm.py not found (../shared/bench/ref_satm.py, or set SATM_REF_BENCH)"; exit 1; }
cp "$ref" dist/device/ref_satm.py
cp "$dev/PATCHED" dist/device/PATCHED
echo "$TORCH_VERSION" > dist/device/TORCH_VERSION
readelf -d dist/device/satm | grep -q 'libtorch_cuda.so' || { say "libtorch_cuda.so is not linked: CUDA would be missing"; exit 1; }
say "dist/device holds $(du -sh dist/device | cut -f1) (the device tool carries at most 64 MiB); rpath: $(readelf -d dist/device/satm | sed -n 's/.*R\(UN\)\?PATH.*\[\(.*\)\]/\2/p')"
[ "${1:-}" = "--no-check" ] && exit 0

# The check here: the binary runs on libtorch 2.11 (the build venv's; on the device, /opt/torch/.venv's).
export LD_LIBRARY_PATH="$lib"
./dist/device/satm info | grep -E '^(satm|libtorch|cuda) '
./dist/device/satm -q --threads 2 -e '
  let d = utkface(#{size: 32, folds: 5, seed: 1, limit: 256});
  let a = model("vggbn_s", #{classes: d.num_classes, width: 0.125, size: 32});
  let b = model("resnet_s", #{classes: d.num_classes, width: 0.125, size: 32});
  let r = satm(#{nets: [a, b], data: d, steps: 3, batch: 32, r_adv: 1.0, r_da: 0.1, progress: false});
  print(`build_for_device check: SATM K = 2, ${r.steps} steps on the CPU with libtorch ${info().libtorch}: ok`);'
