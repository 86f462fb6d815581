#!/usr/bin/env bash
# The GPU checks of worldsim in one call, on a bare H100/H200 machine that reaches no package
# index (its image holds torch, lightning, numpy, matplotlib, pytest, ...; docs/training.md, "On a
# GPU machine without internet"). Writes JSON, plots and logs under $OUT and ends with a table:
#
#   1. the gpu-marked tests (pytest -m gpu): every quickstart step on CUDA;
#   2. imagined frames/s of a bundle at B = 1 .. 4096 in bf16, eager, with torch.compile, and
#      with torch.compile's CUDA graphs (mode reduce-overhead): benchmarks/bench_simulator.py;
#   3. training seconds per step of each dynamics preset, float32 and bf16 autocast:
#      benchmarks/bench_dynamics_training.py.
#
# Prepare here (the CPU machine):  make wheelhouse   # .whl/, carried with the tree
# There:                           OUT=<dir> bash benchmarks/gpu_check.sh
# Rehearse on a CPU in a virtual environment holding only the GPU image's packages:
#   OUT=/tmp/gpu_check PYTHON=<that venv's python> BATCHES="1 4 16" PRESETS="tiny quickstart" \
#       bash benchmarks/gpu_check.sh
#
# Environment: PYTHON (python3, the image's torch), BUNDLE (a bundle directory; default an
# untrained bundle of PRESET, quickstart: the same FLOPs), BATCHES, PRESETS (dynamics presets
# for the training bench: tiny quickstart medium base), TIMEOUT (seconds per part, 240).
set -uo pipefail
cd "$(dirname "$0")/.."
: "${OUT:?set OUT to the folder the results go to}"
PYTHON=${PYTHON:-python3}
PRESET=${PRESET:-quickstart}
BATCHES=${BATCHES:-"1 4 16 64 256 1024 4096"}
PRESETS=${PRESETS:-"tiny quickstart medium base"}
TIMEOUT=${TIMEOUT:-240}
mkdir -p "$OUT"
status=0

"$PYTHON" -m pip install --quiet --no-index --no-deps .whl/*.whl || exit 1
"$PYTHON" -m pip install --quiet --no-index --no-deps --no-build-isolation -e . || exit 1
"$PYTHON" - > "$OUT/device.json" <<'EOF'
import json, platform, torch
cuda = torch.cuda.is_available()
print(json.dumps({
    "torch": torch.__version__, "cuda": cuda, "python": platform.python_version(),
    "device": torch.cuda.get_device_name(0) if cuda else platform.processor() or "cpu",
    "bf16": torch.cuda.is_bf16_supported() if cuda else True,
}, indent=2))
EOF
cat "$OUT/device.json"
CUDA=$("$PYTHON" -c "import torch; print(int(torch.cuda.is_available()))")

echo "== 1. gpu-marked tests"
if [ "$CUDA" = 1 ]; then
    timeout "$TIMEOUT" "$PYTHON" -m pytest -q -m gpu -p no:cacheprovider tests \
        --junitxml "$OUT/gpu_tests.xml" 2>&1 | tee "$OUT/gpu_tests.log"
    [ "${PIPESTATUS[0]}" = 0 ] || status=1
else
    echo "no CUDA device: the gpu-marked tests need one (rehearsal)" | tee "$OUT/gpu_tests.log"
fi

echo "== 2. imagined frames/s, bf16, B = $BATCHES"
for mode in none default reduce-overhead; do
    # shellcheck disable=SC2086
    timeout "$TIMEOUT" "$PYTHON" benchmarks/bench_simulator.py ${BUNDLE:+--bundle "$BUNDLE"} \
        --preset "$PRESET" --dtype bfloat16 --compile "$mode" --batches $BATCHES --steps 8 \
        --out "$OUT/simulator_${mode}.json" > "$OUT/simulator_${mode}.log" 2>&1 || status=1
    tail -n 12 "$OUT/simulator_${mode}.log"
done

echo "== 3. training seconds per step, presets: $PRESETS"
# shellcheck disable=SC2086
timeout "$TIMEOUT" "$PYTHON" benchmarks/bench_dynamics_training.py --configs $PRESETS \
    --batch 64 --clip-len 12 --steps 5 --bf16 --out "$OUT/dynamics_training.json" \
    > "$OUT/dynamics_training.log" 2>&1 || status=1
tail -n 12 "$OUT/dynamics_training.log"

"$PYTHON" - "$OUT" <<'EOF'
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
print(f"\n{'check':44s} result")
for mode in ("none", "default", "reduce-overhead"):
    path = out / f"simulator_{mode}.json"
    if not path.exists():
        print(f"{'simulator, compile ' + mode:44s} missing (see its log)")
        continue
    rows = json.loads(path.read_text())["batched"]
    best = max(rows, key=lambda b: rows[b]["fps_latents"])
    print(f"{'simulator, compile ' + mode:44s} best {rows[best]['fps_latents']:,.0f} frames/s "
          f"at B={best} (MFU {rows[best]['mfu_latents']:.2f})")
path = out / "dynamics_training.json"
if path.exists():
    for row in json.loads(path.read_text())["rows"]:
        print(f"{'train ' + row['config'] + ' ' + row['precision']:44s} "
              f"{row['seconds_per_step'] * 1000:,.1f} ms/step (MFU {row['mfu']:.2f})")
EOF
echo "status $status"
exit $status
