#!/usr/bin/env bash
# Build the `medium` world (experiment=medium) on a GPU machine that reaches no package index, and
# pack its bundle for the trip back (parts of at most 15 MiB under $OUT).
#
# Prepare on a machine with the project's .venv (the CPU one is fine):
#   .venv/bin/worldsim quickstart until=lam        # runs/quickstart/{autoencoder,lam}: ~8 min on 2 cores
#   make wheelhouse                                 # .whl/: the pure-Python wheels the GPU image lacks
#   mkdir -p .ffmpeg && xz -T2 -9 -c "$(.venv/bin/python -c 'import imageio_ffmpeg as f; print(f.get_ffmpeg_exe())')" \
#       > .ffmpeg/ffmpeg.xz                         # 48 MB: the videos' encoder (optional: FFMPEG_BINARY)
# Carry .whl, .ffmpeg, runs/quickstart/autoencoder/model and runs/quickstart/lam/model (51 MB in
# all with the tree), then there, in calls that each end inside the machine's 10-minute limit
# (a re-run skips the finished steps and resumes the dynamics from its last checkpoint):
#   OUT=<dir> bash benchmarks/build_medium_world.sh until=dynamics stages.dynamics.max_minutes=6
#   OUT=<dir> bash benchmarks/build_medium_world.sh stages.dynamics.max_minutes=6
# and back here:
#   mkdir -p runs/medium && cat <dir>/medium.tar.xz.* | xz -d | tar -x -C runs/medium
#
# Arguments are quickstart overrides; EXPERIMENT (default medium) picks the preset and PYTHON
# (default python3, the image's torch) the interpreter. Step times land in metrics.json.
set -euo pipefail
cd "$(dirname "$0")/.."
: "${OUT:?set OUT to the folder the packed bundle goes to}"
PYTHON=${PYTHON:-python3}
EXPERIMENT=${EXPERIMENT:-medium}

"$PYTHON" -m pip install --quiet --no-index --no-deps .whl/*.whl
"$PYTHON" -m pip install --quiet --no-index --no-deps --no-build-isolation -e .
if [ -z "${FFMPEG_BINARY:-}" ] && [ -f .ffmpeg/ffmpeg.xz ]; then
    xz -dc .ffmpeg/ffmpeg.xz > "${TMPDIR:-/tmp}/ffmpeg" && chmod +x "${TMPDIR:-/tmp}/ffmpeg"
    export FFMPEG_BINARY="${TMPDIR:-/tmp}/ffmpeg"
fi
"$PYTHON" -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"

"$PYTHON" -m worldsim.cli quickstart "experiment=$EXPERIMENT" out=runs/medium progress=false \
    autoencoder_from=runs/quickstart/autoencoder lam_from=runs/quickstart/lam "$@"

mkdir -p "$OUT"
cp runs/medium/metrics.json "$OUT/"
if [ -f runs/medium/bundle/bundle.json ]; then  # not yet after until=...
    tar -C runs/medium -cf - bundle metrics.json | xz -T0 -1 | split -b 15M - "$OUT/medium.tar.xz."
fi
ls -l "$OUT"
