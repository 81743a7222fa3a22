#!/usr/bin/env bash
# Rebuild the default model shipped in src/cryoscore/models/ with cryoscore's own code:
# simulate a broad corpus (random compact and elongated particles and the built-in small one;
# pixel sizes 0.8-4.5 A; 10-80 e/A^2; ice at every scale, gradients, carbon, contamination;
# see scripts/make_default_corpus.py for the ranges and what is held out), then train the
# score method on all of it with a 3 A pixel-size floor.
#
#   bash scripts/train_default_model.sh [WORK_DIR]
#
# The exact training command line is recorded in src/cryoscore/models/default.json.
set -euo pipefail
cd "$(dirname "$0")/.."
work=${1:-$(mktemp -d)}
models=src/cryoscore/models

python scripts/make_default_corpus.py "$work" --micrographs "${MICROGRAPHS:-48}" --seed 0
cryoscore train "$work"/c[0-9][0-9][0-9] --method score --min-pixel-size 3 \
  -o "$models/default.pt" --steps "${STEPS:-2500}" --batch-size 8 --crop 160 --seed 0
rm -f "$models/default.state.pt"  # the resumable optimiser state is not shipped
ls -l "$models"
