#!/usr/bin/env bash
# GPU check for known-ops (issue 2, deliverable 8), for a machine with an NVIDIA GPU, nvcc,
# a CUDA build of torch in its python3, and no network:
#   1. pick a python that sees the CUDA torch (a venv with --system-site-packages, or python3 itself
#      when it already is a venv: a venv made from a venv would not see the parent's packages),
#   2. build the extension with its CUDA kernels (nothing is downloaded: --no-index, --no-deps),
#   3. print nvidia-smi and the torch / CUDA versions,
#   4. run the CUDA tests (CPU vs CUDA agreement),
#   5. time ours on CUDA: case a with a batch of 256, the GPU target's problem (256 views, batch 256),
#      case c, and the 3D cone case g (256^3 voxels, 256x256 detector, 256 views), via
#      benchmarks/operators.py --device cuda (against the grid_sample baseline),
#   6. time the voxel-driven pair and FBP/FDK on CUDA (benchmarks/voxel_timing.py),
#   7. time a training step of every learned model on CUDA (benchmarks/training_speed.py).
# Note: case g (3D) adds about a minute (its grid_sample baseline builds its trilinear grids in each call);
# GPU_CHECK_CASES overrides the cases timed (e.g. a256,g256,c to leave the 3D case out).
# Results go to $OUT when it is set, else benchmarks/results/: gpu_operators.{json,md},
# gpu_voxel_timing.{json,md}, training_speed_cuda.{json,md} and gpu_check.log.
# Environment: PYTHON (default python3), MAX_JOBS (build parallelism), TORCH_CUDA_ARCH_LIST (default: the
# GPUs present), GPU_CHECK_REPEATS (timed repeats, default 20), GPU_CHECK_CASES (default a256,g256,c,g).
# Meant to finish within about 5 minutes.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
RESULTS_DIR="${OUT:-$ROOT/benchmarks/results}"
mkdir -p "$RESULTS_DIR"
LOG="$RESULTS_DIR/gpu_check.log"
exec > >(tee "$LOG") 2>&1

step() { printf '\n=== [%s] %s\n' "$(date +%H:%M:%S)" "$*"; }
START=$SECONDS

step "python"
PY="${PYTHON:-python3}"
if "$PY" -c 'import sys; sys.exit(0 if sys.prefix != sys.base_prefix else 1)'; then
    echo "$("$PY" -c 'import sys; print(sys.prefix)') is already a virtual environment: using it"
else
    VENV="$ROOT/.venv-gpu"
    [ -x "$VENV/bin/python" ] || "$PY" -m venv --system-site-packages "$VENV"
    PY="$VENV/bin/python"
fi
"$PY" - <<'EOF'
import sys
import torch
print(f"python {sys.version.split()[0]} at {sys.executable}")
print(f"torch {torch.__version__}, CUDA build {torch.version.cuda}, cuda available {torch.cuda.is_available()}")
if torch.version.cuda is None or not torch.cuda.is_available():
    sys.exit("gpu_check: this python's torch is not a CUDA build or sees no GPU; set PYTHON to one that does")
for i in range(torch.cuda.device_count()):
    p = torch.cuda.get_device_properties(i)
    print(f"  cuda:{i} {p.name}, {p.total_memory / 2**30:.1f} GiB, {p.multi_processor_count} SMs, "
          f"capability {p.major}.{p.minor}")
EOF

step "nvidia-smi"
nvidia-smi || echo "(nvidia-smi failed; continuing: torch sees the GPU)"
command -v nvcc >/dev/null && nvcc --version | tail -n 2 || echo "nvcc not on PATH (torch's CUDA_HOME is used)"

step "build the extension with CUDA"
export KNOWN_OPS_CUDA=1
export MAX_JOBS="${MAX_JOBS:-$(nproc)}"
"$PY" -m pip install --no-build-isolation --no-deps --no-index -e . 2>&1 | tail -n 20
"$PY" - <<'EOF'
import torch
import known_ops
from known_ops import _build_info
assert _build_info.WITH_CUDA, "known_ops was built without its CUDA kernels"
print(f"known_ops {known_ops.__version__} built with CUDA kernels against torch {_build_info.TORCH_VERSION}")
EOF
echo "build done after $((SECONDS - START)) s"

step "CUDA tests (CPU vs CUDA agreement): every test marked cuda (tests/test_cuda.py, the learned models, ...)"
if [ ! -f tests/test_cuda.py ]; then
    echo "gpu_check: tests/test_cuda.py is missing" >&2
    exit 1
fi
TEST_STATUS=0
"$PY" -m pytest -q -p no:cacheprovider -m cuda tests || TEST_STATUS=$?
echo "tests done after $((SECONDS - START)) s (pytest exit status $TEST_STATUS)"

step "timings on CUDA"
"$PY" benchmarks/operators.py --device cuda --cases "${GPU_CHECK_CASES:-a256,g256,c,g}" --peers ours,grid_sample \
    --repeats "${GPU_CHECK_REPEATS:-20}" --output-dir "$RESULTS_DIR" --name gpu_operators

step "voxel-driven pair and FBP/FDK timings on CUDA"
"$PY" benchmarks/voxel_timing.py --device cuda --output-dir "$RESULTS_DIR" --name gpu_voxel_timing

step "training throughput of the learned models on CUDA"
"$PY" benchmarks/training_speed.py --device cuda --steps 20 --output "$RESULTS_DIR" \
    --models LearnedFBP VariationalNetwork LearnedGradient LearnedPrimal LearnedPrimalDual UNetPostProcessing \
    "LearnedPrimalDual (torch.compile)" "LearnedPrimalDual (bf16 autocast)" || echo "training_speed failed"

step "done in $((SECONDS - START)) s; results in $RESULTS_DIR"
exit "$TEST_STATUS"
