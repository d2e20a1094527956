#!/usr/bin/env bash
# The GPU check in one command, for a machine with a CUDA GPU (the `device` tool's H200: PyTorch 2.11.0+cu130 in
# /opt/torch/.venv, no network, no Rust toolchain). Run from the repository root, with the binary and test programs
# that tools/build_for_device.sh put in dist/device/ (carried there), in under 5 minutes:
#   1. info        `satm info`: the CUDA devices, their memory, cuDNN, and the libtorch satm runs on;
#   2. crosscheck  the PyTorch cross-checks on the GPU: the SATM step (tests/bench.rs: losses, weights and updates
#                  against ref_satm.py's step, λ = 0.3, α = ε/2 with the same noise) and standard training
#                  (tests/train.rs: against PyTorch's own loop), both sides on the same GPU with TF32 off;
#   3. satm_bf16   a K = 2 SATM run with bf16 autocast on cuda:0 (the networks on cuda:0 and cuda:1 when there are
#                  two GPUs), on the bundled sample faces, then a black-box evaluation;
#   4. bench       `satm bench --device cuda` against ref_satm.py on the same GPU (img/s and the ratio);
# then one summary (also written to $OUT/gpu_check.txt when $OUT is set, as the device tool gives it).
#   device tool:  run(command: "bash tools/gpu_check.sh", carry: ["dist/device"])
#   here:         bash tools/gpu_check.sh cpu    (the same steps on the CPU: checks this script and the device build)
# Each step has a time limit; a failed step does not stop the others; the exit status is 0 only when all passed.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
DEV="${1:-cuda}"
case "$DEV" in cuda | cpu) ;; *) echo "gpu_check: device '$DEV': use cuda (default) or cpu" >&2; exit 2 ;; esac
BIN=dist/device/satm
TESTS=dist/device/tests
if [ ! -x "$BIN" ]; then
  echo "gpu_check: no $BIN: run tools/build_for_device.sh here first (and carry dist/device to the device)" >&2
  exit 2
fi
# The Python that holds this machine's PyTorch (the device's /opt/torch/.venv; here the build venv of the binary).
if [ -n "${SATM_PY:-}" ]; then PY="$SATM_PY"
elif [ -x /opt/torch/.venv/bin/python3 ]; then PY=/opt/torch/.venv/bin/python3
elif [ -x "$HOME/.cache/satm/venv-torch2.11/bin/python" ]; then PY="$HOME/.cache/satm/venv-torch2.11/bin/python"
else PY="$(command -v python3)"; fi
TORCH_LIB="$("$PY" -c 'import torch, os; print(os.path.join(os.path.dirname(torch.__file__), "lib"))' 2>/dev/null)" || {
  echo "gpu_check: $PY cannot import torch" >&2; exit 2; }
export LD_LIBRARY_PATH="$TORCH_LIB${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
# satm's helpers find the reference Python and ref_satm.py through these.
venv="$(dirname "$(dirname "$PY")")"
if [ ! -x "$venv/bin/python" ]; then # a python3 without a `python` beside it: a venv-shaped folder pointing at it
  venv="$(mktemp -d)"; mkdir -p "$venv/bin"; ln -s "$PY" "$venv/bin/python"
fi
export SATM_VENV="$venv" SATM_REF_BENCH="$PWD/dist/device/ref_satm.py" SATM_REPO="$PWD"
export BIN TESTS DEV PY
OUTDIR="${OUT:-$(mktemp -d)}"
mkdir -p "$OUTDIR"
LOG="$OUTDIR/gpu_check.log"
: > "$LOG"
declare -a NAMES RESULTS SECS NOTES

step() { # name, time limit (s), note, command...
  local name="$1" limit="$2" note="$3"
  shift 3
  echo "=== $name: $*" | tee -a "$LOG"
  local t0=$SECONDS
  if declare -F "$1" >/dev/null; then # a function of this script: run it in a bash that has it
    timeout --signal=TERM --kill-after=10 "$limit" bash -c "$(declare -f "$1"); $1" >> "$LOG" 2>&1
  else
    timeout --signal=TERM --kill-after=10 "$limit" "$@" >> "$LOG" 2>&1
  fi
  local rc=$?
  local res=PASS
  [ $rc -eq 124 ] && res="FAIL (over ${limit}s)"
  [ $rc -ne 0 ] && [ $rc -ne 124 ] && res="FAIL (exit $rc)"
  NAMES+=("$name"); RESULTS+=("$res"); SECS+=("$((SECONDS - t0))"); NOTES+=("$note")
  echo "=== $name: $res in $((SECONDS - t0)) s" | tee -a "$LOG"
  tail -n 25 "$LOG" | sed 's/^/    /'
}

# 1. info (and, on cuda, at least one device)
info_check() {
  "$BIN" info || return 1
  [ "$DEV" = cpu ] && return 0
  "$BIN" info --json | "$PY" -c 'import json, sys; v = json.load(sys.stdin); d = v["cuda_devices"];
print("cuda devices:", len(d), "cudnn:", v.get("cudnn")); sys.exit(0 if d else 1)'
}
step info 60 "devices, memory, cuDNN, libtorch" info_check

# 2. the PyTorch cross-checks on $DEV
crosscheck() {
  local t
  for t in bench:satm_step_matches_pytorch_reference train:r_adv_zero_and_r_da_zero_is_pytorchs_standard_training; do
    local bin="$TESTS/${t%%:*}" name="${t#*:}"
    [ -x "$bin" ] || { echo "no $bin: rebuild with tools/build_for_device.sh"; return 1; }
    SATM_TEST_DEVICE="$DEV" "$bin" --exact "$name" --test-threads 1 --nocapture || return 1
  done
}
step crosscheck 150 "SATM step and standard training vs PyTorch on $DEV, 1e-4 relative" crosscheck

# 3. K = 2 SATM with bf16 autocast
if [ "$DEV" = cuda ]; then
  prec=bf16
  ngpu="$("$BIN" info --json 2>/dev/null | "$PY" -c 'import json, sys; print(len(json.load(sys.stdin)["cuda_devices"]))' 2>/dev/null || echo 1)"
  devb=cuda:0; [ "${ngpu:-1}" -ge 2 ] && devb=cuda:1
  deva=cuda:0
else
  prec=auto; deva=cpu; devb=cpu
fi
limit=120; [ "$DEV" = cpu ] && limit=300 # the CPU run only checks the plumbing, on a machine that may be busy
step satm_bf16 "$limit" "K = 2 on $deva + $devb, precision $prec" "$BIN" -q --precision "$prec" --set deva="$deva" --set devb="$devb" -e '
  let d = utkface(#{size: 32, folds: 5, seed: 1, limit: 1024});
  let f = d.fold(0);
  let a = model("vggbn_s", #{classes: d.num_classes, width: 0.25, size: 32, device: param("deva", "cpu")});
  let b = model("resnet_s", #{classes: d.num_classes, width: 0.125, size: 32, device: param("devb", "cpu")});
  train(a, f.train, #{steps: 30, batch: 64, lr: 0.002, optimizer: "adam", progress: false});
  train(b, f.train, #{steps: 30, batch: 64, lr: 0.002, optimizer: "adam", progress: false});
  let before = evaluate(b, f.test, #{attack: "r_step_ll", sources: a, seed: 7}).accuracy;
  let r = satm(#{nets: [a, b], data: f.train, steps: 40, batch: 64, lr: 0.001, optimizer: "adam", r_adv: 1.0, r_da: 0.1, progress: false});
  let after = evaluate(b, f.test, #{attack: "r_step_ll", sources: a, seed: 7}).accuracy;
  if r.steps != 40 { throw `SATM ran ${r.steps} steps, not 40`; }
  let pct = |x| (x * 1000.0).round() / 10.0;
  print(`SATM K = 2 (${a.device} + ${b.device}, ${precision()}): ${r.steps} steps in ${r.wall_s} s; B from A black-box ${pct.call(before)}% -> ${pct.call(after)}%`);'

# 4. satm bench against ref_satm.py on the same device (on the CPU, the smallest setting: it checks the plumbing)
if [ "$DEV" = cuda ]; then bench_args=(--arch resnet_s --steps 8); else bench_args=(--arch vgg_s --modes fp32 --steps 3); fi
step bench 200 "satm vs PyTorch (ref_satm.py), same device" "$BIN" bench --device "$DEV" "${bench_args[@]}" --rounds 3 --budget 60 --run-timeout 90

{
  echo
  echo "gpu_check summary ($DEV; $("$BIN" --version 2>/dev/null); libtorch from $TORCH_LIB)"
  printf '%-11s %-22s %6s  %s\n' step result seconds what
  for i in "${!NAMES[@]}"; do printf '%-11s %-22s %6s  %s\n' "${NAMES[$i]}" "${RESULTS[$i]}" "${SECS[$i]}" "${NOTES[$i]}"; done
  echo "full log: $LOG"
} | tee "$OUTDIR/gpu_check.txt"
for r in "${RESULTS[@]}"; do [ "$r" = PASS ] || exit 1; done
exit 0
