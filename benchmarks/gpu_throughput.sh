#!/usr/bin/env bash
# The GPU throughput measurement (issue 5) as one run on a lent device machine.
#
# The device machine has python3 (3.12) with a CUDA build of torch, numpy, scipy, pandas,
# scikit-image, tifffile and tqdm, but not cryoscore's other dependencies, and it cannot
# download. So, in two steps:
#
#   bash benchmarks/gpu_throughput.sh fetch    # here: wheels of the missing packages into .whl/ (~15 MB,
#                                              # git-ignored through .git/info/exclude)
#   bash benchmarks/gpu_throughput.sh run      # there, through the device tool with carry [".whl"]:
#                                              # installs the wheels, times 20 micrographs of 4096 x 4096
#                                              # on the GPU, writes $OUT/gpu-throughput.md and .json
#
# The versions are those CI installs on the CPU (keep them in step with its `pip freeze`).
set -euo pipefail
cd "$(dirname "$0")/.."

WHEELS=(mrcfile==1.5.4 starfile==0.5.13 gemmi==0.7.5 torch-fourier-slice==0.6.0 torch-ctf==0.6.0 torch-so3==0.6.0
        torch-fourier-shell-correlation==0.6.0 torch-grid-utils==0.6.0 torch-image-interpolation==0.6.0
        healpy==1.20.1 dask==2026.8.0 distributed==2026.8.0 partd==1.4.2 locket==1.0.0 tblib==3.2.2
        zict==3.0.0 tornado==6.6.1)

case "${1:-}" in
  fetch)
    grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
    python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
      --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
      --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl "${WHEELS[@]}"
    ls .whl
    ;;
  run)
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH="/tmp/site:$PWD/src" PYTHONUNBUFFERED=1
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
    cd benchmarks
    python3 bench_throughput.py --device cuda --micrographs 20 --topaz-micrographs 0 \
      --markdown "${OUT:-.}/gpu-throughput.md" --json "${OUT:-.}/gpu-throughput.json"
    ;;
  *)
    echo "usage: bash benchmarks/gpu_throughput.sh fetch|run" >&2
    exit 2
    ;;
esac
