#!/usr/bin/env bash
# The CPU demo end to end: install, synthetic data, train, evaluate, predict; prints where results are.
# Usage: bash quickstart.sh   (SKIP_INSTALL=1 to skip the pip step, PYTHON=... to pick the interpreter)
set -euo pipefail
cd "$(dirname "$0")"
PYTHON=${PYTHON:-python3}
CONFIG=${CONFIG:-configs/quickstart.yaml}
export NO_ALBUMENTATIONS_UPDATE=1
export WANDB_MODE=${WANDB_MODE:-disabled}

declare -a TIMES=()
timed() {  # timed LABEL COMMAND...: run it, remember how long it took
  local label=$1 start end
  shift
  start=$EPOCHREALTIME
  "$@"
  end=$EPOCHREALTIME
  TIMES+=("$(awk -v l="$label" -v a="$start" -v b="$end" 'BEGIN { printf "%-10s %6.1f s", l, b - a }')")
}

if [ "${SKIP_INSTALL:-0}" != 1 ]; then
  timed install bash -c "'$PYTHON' -m pip install -q -r requirements.txt && '$PYTHON' -m face.mesh_models > /dev/null"
fi
timed data "$PYTHON" -m data.synthetic --config "$CONFIG"
timed train bash -c "'$PYTHON' train.py --config '$CONFIG' > .quickstart_run"
RUN=$(tail -n 1 .quickstart_run) && rm -f .quickstart_run
timed evaluate "$PYTHON" evaluate.py --checkpoint "$RUN/checkpoints/best.pt" --output "$RUN/eval_test" --split test --threshold auto
# The classical baseline under the same protocol (its threshold chosen on validation).
timed baseline "$PYTHON" evaluate.py --baseline ridge --config "$CONFIG" --output "$RUN/eval_test_ridge" --split test
# Unseen faces (another seed, another size) stand in for a user's photos.
"$PYTHON" -m data.synthetic --output "$RUN/demo_faces" --n 6 --height 240 --width 200 --seed 777 > /dev/null
timed predict "$PYTHON" predict.py --checkpoint "$RUN/checkpoints/best.pt" --input "$RUN/demo_faces/images" --face-masks "$RUN/demo_faces/face_masks" --output "$RUN/predictions"
# A real photo (public domain, shipped with matplotlib): found, FFHQ-aligned, skin-masked by the face
# mesh, segmented and mapped back. The model has only seen synthetic faces: this shows the path.
mkdir -p "$RUN/photo_in"
cp "$("$PYTHON" -c "import matplotlib.cbook as c; print(c.get_sample_data('grace_hopper.jpg', asfileobj=False))")" "$RUN/photo_in/"
timed photo "$PYTHON" predict.py --checkpoint "$RUN/checkpoints/best.pt" --input "$RUN/photo_in" --output "$RUN/photo_predictions" --align ffhq --skin mesh

echo
echo "== quickstart done =="
printf '%s\n' "${TIMES[@]}"
"$PYTHON" - "$RUN" <<'PY'
import csv, json, sys
from pathlib import Path
run = Path(sys.argv[1])
rows = list(csv.DictReader(open(run / "metrics.csv")))
best = max(rows, key=lambda r: float(r["val_iou"]))
test = json.loads((run / "eval_test" / "metrics.json").read_text())
ridge = json.loads((run / "eval_test_ridge" / "metrics.json").read_text())
print(f"best validation IoU {float(best['val_iou']):.3f} (Dice {float(best['val_dice']):.3f}, AUC {float(best['val_auc']):.3f}) at epoch {best['epoch']}")
print(f"test, {test['n_images']} held-out images, thresholds chosen on validation:")
for name, m in (("network", test), ("ridge baseline", ridge)):
    print(f"  {name:15s} IoU {m['iou']:.3f}  Dice {m['dice']:.3f}  precision {m['precision']:.3f}  recall {m['recall']:.3f}  "
          f"F1@{m['tolerance_px']}px {m['tolerant_f1']:.3f}  clDice {m['cldice']:.3f}  AUC {m['auc']:.3f}  (threshold {m['threshold']:.3f})")
print(f"run folder:   {run}")
print(f"evaluation:   {run / 'eval_test'}  (metrics.json, per_image.csv, roc.png, pr.png, threshold.png, overlays/)")
print(f"predictions:  {run / 'predictions'}  (masks/, overlays/, summary.csv)")
photo = next(csv.DictReader(open(run / "photo_predictions" / "summary.csv")))
print(f"real photo:   {run / 'photo_predictions'}  {photo['file']}: {photo['status']}, wrinkles {photo['wrinkle_percent_of_skin']} % of skin "
      f"(forehead {photo['forehead_percent']}, glabella {photo['glabella_percent']}, periorbital {photo['periorbital_percent']}, cheeks {photo['cheeks_percent']})")
print(f"demo:         python app.py --checkpoint {run / 'checkpoints' / 'best.pt'} --align ffhq --skin mesh   (then open http://127.0.0.1:7860)")
PY
