#!/usr/bin/env bash
# Rebuild the default model shipped in src/cryoscore/models/ with cryoscore's own commands:
# simulate three specimens (structured ice background, contamination, a range of defocus and
# dose), then train the score method on all their even/odd halves.
#
#   bash scripts/train_default_model.sh [WORK_DIR]
#
# The exact training command line is recorded in src/cryoscore/models/default.json.
set -euo pipefail
cd "$(dirname "$0")/.."
work=${1:-$(mktemp -d)}
models=src/cryoscore/models

# specimen  particles (about 15% of the area)  dose e/A^2  seed
while read -r specimen particles dose seed; do
  cryoscore simulate -o "$work/$specimen" --specimen "$specimen" --particles "$particles" --dose "$dose" \
    --micrographs 4 --size 1024 --pixel-size 1.5 --defocus 0.8 3.0 --background-strength 1.5 \
    --contamination 1 --seed "$seed" --overwrite
done <<'TABLE'
apoferritin 31 30 101
elongated 7 20 102
small 125 40 103
TABLE

cryoscore train "$work/apoferritin" "$work/elongated" "$work/small" --method score \
  -o "$models/default.pt" --steps "${STEPS:-1500}" --batch-size 8 --crop 256 --seed 0
rm -f "$models/default.state.pt"  # the resumable optimiser state is not shipped
ls -l "$models"
