#!/usr/bin/env bash
# Real-data results for the README: three model configurations on ../shared/data/ai4mars64x128.npz.
# Runs in a scratch copy of this checkout (nothing here changes); prints each run's validation metrics.
#   bash benchmarks/real_data.sh [SCRATCH_DIR]
# CPU budget: a seeded 1,500-row subset (data.limit) and lighter augmentation multipliers
# (1 copy per image, 4-6 per big-rock image) instead of the defaults' 4-6 and 24-36.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
npz="$repo/../shared/data/ai4mars64x128.npz"
[ -f "$npz" ] || { echo "skip: $npz is absent"; exit 0; }
scratch=${1:-$(mktemp -d)}
export PATH="$repo/.venv/bin:$PATH"
git clone -q "$repo" "$scratch/repo" && cd "$scratch/repo"
common=(-S data.source=npz -S "data.path=$(realpath "$npz")" -S data.limit=1500
        -S augment.copies_min=1 -S augment.copies_max=1 -S augment.rare_copies_min=4 -S augment.rare_copies_max=6
        -S train.epochs=10)
run() {  # name, extra -S args...
  local name=$1; shift
  dvc exp run -n "$name" "${common[@]}" "$@" > "$scratch/$name.log" 2>&1 ||
    { grep -h "^error:" "$scratch/$name.log" >&2; echo "error: run $name failed; its log: $scratch/$name.log" >&2; exit 1; }
  echo "== $name: $*"
  python -c "import json; m = json.load(open('metrics/evaluate.json')); print({k: v for k, v in m.items() if 'iou' in k or 'accuracy' in k})"
  python -c "import json; m = json.load(open('metrics/clean.json')); print({k: v for k, v in m.items() if k.startswith(('rows', 'removed'))})"
}
run real-cpu-small
run real-attention-se -S model.arch=attention_unet -S model.se=true -S model.skip_gate=true
run real-unet3p -S model.arch=unet3p -S model.dropout='[0.0,0.0,0.2,0.3]'
dvc exp show --only-changed --csv > "$scratch/exp_show.csv" && echo "dvc exp show: $scratch/exp_show.csv"
