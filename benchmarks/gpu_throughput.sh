#!/usr/bin/env bash
# The GPU throughput measurement (issue 5) as one run on a lent device machine.
#
# The device machine has python3 (3.12) with a CUDA build of torch, numpy, scipy, pandas,
# scikit-image, tifffile and tqdm, but not cryoscore's other dependencies, and it cannot
# download. So, in two steps:
#
#   bash benchmarks/gpu_throughput.sh fetch    # here: wheels of the missing packages into .whl/ (~15 MB,
#                                              # git-ignored through .git/info/exclude)
#   bash benchmarks/gpu_throughput.sh run [N]  # there, through the device tool with carry [".whl"]:
#                                              # installs the wheels, times N (default 8) micrographs of
#                                              # 4096 x 4096 on the GPU, writes $OUT/gpu-throughput.md and
#                                              # .json; then runs the command line's GPU paths on a small
#                                              # simulated dataset ($OUT/gpu-cli.log): `denoise --device
#                                              # cuda` against `--device cpu` on the same micrographs, and
#                                              # a learned picker trained and run with `--device cuda`.
#
# The versions are those CI installs on the CPU (keep them in step with its `pip freeze`).
set -euo pipefail
cd "$(dirname "$0")/.."

WHEELS=(mrcfile==1.5.4 starfile==0.5.13 gemmi==0.7.5 torch-fourier-slice==0.6.0 torch-ctf==0.6.0 torch-so3==0.6.0
        torch-fourier-shell-correlation==0.6.0 torch-grid-utils==0.6.0 torch-image-interpolation==0.6.0
        torch-motion-correction==0.6.0 torch-fourier-rescale==0.6.0 torch-fourier-filter==0.6.0
        torch-fourier-shift==0.6.0 torch-cubic-spline-grids==0.6.0 healpy==1.20.1 astropy==8.0.2 pyerfa==2.0.1.5
        astropy-iers-data==0.2026.11.16.0.37.44 dask==2026.8.0 distributed==2026.8.0 partd==1.4.2 locket==1.0.0 tblib==3.2.2
        zict==3.0.0 tornado==6.6.1)

# The command line on the GPU: 4 simulated micrographs of 1024 px at 1.5 A/px; each step timed.
gpu_cli_checks() {
  local work cs="python3 -m cryoscore.cli"
  work=$(mktemp -d)
  set -x
  $cs simulate -o "$work/sim" --micrographs 4 --size 1024 --pixel-size 1.5 --dose 30
  time $cs denoise "$work/sim/micrographs" -o "$work/gpu" --device cuda
  time $cs denoise "$work/sim/micrographs" -o "$work/cpu" --device cpu
  python3 - "$work" <<'PY'
import sys, mrcfile, numpy as np, pathlib
work = pathlib.Path(sys.argv[1])
for gpu in sorted((work / "gpu").glob("*.mrc")):
    a, b = mrcfile.read(gpu).astype(np.float64), mrcfile.read(work / "cpu" / gpu.name).astype(np.float64)
    print(f"{gpu.name}: correlation cuda vs cpu {np.corrcoef(a.ravel(), b.ravel())[0, 1]:.6f}, "
          f"max |difference| / std {np.abs(a - b).max() / b.std():.2e}")
PY
  mkdir -p "$work/train" "$work/test" "$work/truth"
  cp "$work"/sim/micrographs/mic_000[012].mrc "$work/train" && cp "$work/sim/micrographs/mic_0003.mrc" "$work/test"
  cp "$work/sim/coordinates/mic_0003.star" "$work/sim/manifest.json" "$work/truth"
  time $cs pick "$work/test" -o "$work/picks" --method learned --device cuda --diameter 120 \
    --train-micrographs "$work/train" --train-coordinates "$work/sim/coordinates" --save-model "$work/picker.pt"
  $cs score "$work/picks" "$work/truth"
  time $cs denoise "$work/sim/micrographs/mic_0003.mrc" -o "$work/adapted" --device cuda --adapt 300
  # Training on the GPU: the shipped model's settings (score, crops of 160 at a 3 A floor), and the
  # same 30 steps on GPU and CPU, which draw the same crops and noise.
  local train="$cs train $work/sim --method score --crop 160 --min-pixel-size 3"
  time $train --steps 300 --device cuda -o "$work/cuda300.pt"
  time $train --steps 30 --device cuda -o "$work/cuda30.pt"
  time $train --steps 30 --device cpu -o "$work/cpu30.pt"
  $train --steps 15 --device cuda -o "$work/resumed.pt" && $train --steps 30 --device cuda --resume -o "$work/resumed.pt"
  python3 - "$work" <<'PY'
import sys, json, pathlib
work = pathlib.Path(sys.argv[1])
for name in ("cuda300", "cuda30", "cpu30", "resumed"):
    meta = json.loads((work / f"{name}.json").read_text())["extra"]
    print(f"{name}: final loss {meta['final_loss']:.4f}, {meta['train_seconds']:.1f} s")
PY
  time $cs train "$work/sim" --method guided --reference apoferritin --steps 50 --crop 128 --device cuda -o "$work/guided.pt"
  set +x
}

case "${1:-}" in
  fetch)
    grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
    python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
      --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
      --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl "${WHEELS[@]}"
    ls .whl
    ;;
  run|cli)
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH="/tmp/site:$PWD/src" PYTHONUNBUFFERED=1
    if [[ $1 == cli ]]; then gpu_cli_checks 2>&1 | tee "${OUT:-.}/gpu-cli.log"; exit; fi
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
    cd benchmarks
    python3 bench_throughput.py --device cuda --micrographs "${2:-8}" --train-steps 100 --topaz-micrographs 0 \
      --markdown "${OUT:-.}/gpu-throughput.md" --json "${OUT:-.}/gpu-throughput.json"
    cd .. && gpu_cli_checks 2>&1 | tee "${OUT:-.}/gpu-cli.log"
    ;;
  *)
    echo "usage: bash benchmarks/gpu_throughput.sh fetch|run [N]|cli" >&2
    exit 2
    ;;
esac
