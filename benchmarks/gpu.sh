#!/usr/bin/env bash
# One prepared GPU session: gpu-marked tests, a timed training run of a GPU recipe (exported
# with its card and a held-out prior loss), then the attention and FFN benchmarks on the GPU.
# Every stage has its own timeout and log; a failing stage never stops the next one.
#
#   PYTHONPATH=. bash benchmarks/gpu.sh --out OUT [--recipe PATH] [--minutes M] [--deadline D]
#       [--workers W] [--work DIR] [--init-from CKPT] [--skip-tests] [--skip-bench] [--tiny]
#
# --minutes M   training time (default 8); the schedule is fitted to it (--fit-steps)
# --deadline D  minutes for the whole script (default 11.5); later stages shrink to fit
# --workers W   data worker processes (default: CPU cores - 2, at least 1)
# --work DIR    where the run directory (checkpoint.pt with optimizer state) goes
#               (default: a new temporary directory); never inside --out
# --init-from C warm-start from checkpoint C (train-prior --init-from: its network shape, a
#               fresh optimizer); the held-out loss is then measured for C too, same batches
# --tiny        the same path on the CPU in seconds (d_model 32, 2 layers, rows 64, fp32)
#
# OUT receives at most 7 files (the copy-back limits: <= 8 files, each <= 16 MiB, plain
# names): summary.md, tests.log, train.log, metrics.jsonl, bench.md, and the exported
# NAME.safetensors + NAME.md (the safetensors only if it is <= 16 MiB). See docs/gpu.md.
set -u

die() { echo "gpu.sh: $*" >&2; exit 2; }
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
OUT="" RECIPE="priors/tabular-clf-gpu-small.toml" MINUTES=8 DEADLINE=11.5 WORKERS="" WORK=""
SKIP_TESTS=0 SKIP_BENCH=0 TINY=0 INIT=""
is_num() { [[ "$1" =~ ^[0-9]+([.][0-9]+)?$ ]] && awk -v x="$1" 'BEGIN{exit !(x > 0)}'; }
while [ $# -gt 0 ]; do
  case "$1" in
    --out) [ $# -ge 2 ] || die "--out needs a directory"; OUT=$2; shift 2 ;;
    --recipe) [ $# -ge 2 ] || die "--recipe needs a .toml path"; RECIPE=$2; shift 2 ;;
    --minutes) [ $# -ge 2 ] && is_num "$2" || die "--minutes must be a number > 0. Got '${2:-}'."
      MINUTES=$2; shift 2 ;;
    --deadline) [ $# -ge 2 ] && is_num "$2" || die "--deadline must be a number > 0 (minutes). Got '${2:-}'."
      DEADLINE=$2; shift 2 ;;
    --workers) [[ $# -ge 2 && "$2" =~ ^[0-9]+$ ]] || die "--workers must be an int >= 0. Got '${2:-}'."
      WORKERS=$2; shift 2 ;;
    --work) [ $# -ge 2 ] || die "--work needs a directory"; WORK=$2; shift 2 ;;
    --init-from) [ $# -ge 2 ] && [ -e "$2" ] || die "--init-from needs an existing checkpoint. Got '${2:-}'."
      INIT=$(cd "$(dirname "$2")" && pwd)/$(basename "$2"); shift 2 ;;
    --skip-tests) SKIP_TESTS=1; shift ;;
    --skip-bench) SKIP_BENCH=1; shift ;;
    --tiny) TINY=1; shift ;;
    -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
    *) die "unknown option '$1'; allowed: --out --recipe --minutes --deadline --workers --work --init-from --skip-tests --skip-bench --tiny" ;;
  esac
done
[ -n "$OUT" ] || die "--out DIR is required (the folder that receives the results)."
[ -f "$RECIPE" ] || [ -f "$ROOT/$RECIPE" ] || die "--recipe '$RECIPE' does not exist; give a .toml recipe such as priors/tabular-clf-gpu-small.toml."
[ -f "$RECIPE" ] || RECIPE="$ROOT/$RECIPE"
mkdir -p "$OUT" || die "cannot create --out '$OUT'"
OUT=$(cd "$OUT" && pwd)
[ -n "$WORK" ] || WORK=$(mktemp -d "${TMPDIR:-/tmp}/pfnkit-gpu.XXXXXX")
mkdir -p "$WORK" || die "cannot create --work '$WORK'"
WORK=$(cd "$WORK" && pwd)
case "$WORK/" in "$OUT"/*) die "--work '$WORK' must not be inside --out '$OUT' (copy-back limits)." ;; esac
NAME=$(basename "$RECIPE" .toml | tr -c 'A-Za-z0-9._\n-' '_')

export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 PYTHONUNBUFFERED=1
PY=${PYTHON:-python}
cd "$ROOT" || die "cannot enter $ROOT"
CORES=$(nproc 2>/dev/null || echo 2)
[ -n "$WORKERS" ] || WORKERS=$(( CORES > 3 ? CORES - 2 : 1 ))
LIMIT=$(awk -v d="$DEADLINE" 'BEGIN{printf "%d", d * 60}')
SUMMARY="$OUT/summary.md"
: > "$SUMMARY"
say() { echo "$*" | tee -a "$SUMMARY"; }
left() { echo $(( LIMIT - SECONDS )); }
# run NAME TIMEOUT LOG CMD...: a stage with its own timeout (SIGINT first: training saves)
run() {
  local name=$1 t=$2 log=$3; shift 3
  local cap=$(( $(left) - 5 ))
  [ "$t" -le "$cap" ] || t=$cap
  if [ "$t" -lt 5 ]; then say "- $name: skipped, the deadline (${DEADLINE} min) is too close"; return 124; fi
  local t0=$SECONDS rc
  echo "## $name (timeout ${t}s): $*" >> "$log"
  timeout --signal=INT --kill-after=20 "$t" "$@" >> "$log" 2>&1
  rc=$?
  say "- $name: exit $rc after $(( SECONDS - t0 )) s (log: $(basename "$log"))"
  return $rc
}

if [ $TINY = 1 ]; then
  DEVICE=cpu MINUTES=${TINY_MINUTES:-0.05} WORKERS=1
  TRAIN_EXTRA=(--device cpu --precision fp32 --rows 64 --batch-size 4 --threads 1
    --checkpoint-every 20)
  # a warm start keeps its checkpoint's shape; from scratch the tiny network is tiny
  [ -n "$INIT" ] || TRAIN_EXTRA+=(--d-model 32 --n-layers 2 --n-heads 2 --d-ffn 64 --features 8)
  ATT=(--device cpu --rows 256) FFN=(--device cpu --d-model 32 --widths 256 --batches 1 --reps 2 --rounds 1)
  HELDOUT=16
else
  "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" \
    || die "no CUDA GPU here (torch.cuda.is_available() is False); use --tiny for the CPU dry run."
  DEVICE=cuda TRAIN_EXTRA=(--device cuda --threads 1)
  ATT=(--device cuda --rows 1024 4096 16384 --max-gb 40) FFN=(--device cuda --reps 20 --rounds 3)
  HELDOUT=256
fi

say "# pfnkit GPU session: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
say ""
say "recipe $RECIPE, ${MINUTES} min of training, $WORKERS data workers, deadline ${DEADLINE} min, work dir $WORK"
say ""
say '```'
{
  git -C "$ROOT" log -1 --format='commit %h %s' 2>/dev/null
  "$PY" - <<'EOF'
import os, platform, sys, torch
print(f"python {platform.python_version()}, torch {torch.__version__}, {os.cpu_count()} CPUs")
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    print(f"GPU {p.name}, {p.total_memory / 2**30:.0f} GiB, bf16 {torch.cuda.is_bf16_supported()}")
EOF
  command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.used,memory.total --format=csv,noheader
  df -h /dev/shm 2>/dev/null | tail -1 | awk '{print "/dev/shm " $2}'
} 2>&1 | tee -a "$SUMMARY"
say '```'
say ""
say "## Stages"
say ""

# 1. gpu-marked tests (collection errors, e.g. optuna missing for the HPO tests, are not fatal)
if [ $SKIP_TESTS = 0 ]; then
  run "gpu tests" 90 "$OUT/tests.log" "$PY" -m pytest -m gpu tests/ -q -p no:cacheprovider \
    --continue-on-collection-errors
  tail -3 "$OUT/tests.log" | sed 's/^/    /' | tee -a "$SUMMARY"
fi

# 2. training: a time budget with the schedule fitted to it; SIGINT at the timeout saves
TRAIN_T=$(awk -v m="$MINUTES" 'BEGIN{printf "%d", m * 60 + 90}')
[ -z "$INIT" ] || TRAIN_EXTRA+=(--init-from "$INIT")
run "train" "$TRAIN_T" "$OUT/train.log" "$PY" -m pfnkit.cli train-prior "$RECIPE" --out "$WORK/run" \
  --overwrite --quiet --max-minutes "$MINUTES" --fit-steps --data-workers "$WORKERS" "${TRAIN_EXTRA[@]}"
tail -2 "$OUT/train.log" | sed 's/^/    /' | tee -a "$SUMMARY"
[ -f "$WORK/run/metrics.jsonl" ] && cp "$WORK/run/metrics.jsonl" "$OUT/metrics.jsonl"

# 3. export (safetensors + card) and the held-out prior loss
if [ -f "$WORK/run/checkpoint.pt" ]; then
  mkdir -p "$WORK/export"
  run "export" 60 "$OUT/train.log" "$PY" -m pfnkit.cli export "$WORK/run" "$WORK/export/$NAME.safetensors"
  if [ -f "$WORK/export/$NAME.safetensors" ]; then
    size=$(stat -c %s "$WORK/export/$NAME.safetensors")
    cp "$WORK/export/$NAME.md" "$OUT/$NAME.md"
    if [ "$size" -le $(( 16 * 1024 * 1024 )) ]; then
      cp "$WORK/export/$NAME.safetensors" "$OUT/$NAME.safetensors"
      say "- exported $NAME.safetensors ($size bytes)"
    else
      say "- $NAME.safetensors is $size bytes, over the 16 MiB copy-back limit: left in $WORK/export"
    fi
  fi
  run "held-out loss" 120 "$OUT/train.log" "$PY" - "$WORK/run" "$DEVICE" "$HELDOUT" "$INIT" <<'EOF'
import sys, torch
from pfnkit.priors import build_prior
from pfnkit.train.checkpoint import load_checkpoint
from pfnkit.train.config import TrainConfig
from pfnkit.train.data import sample_indexed

run, device, n, init = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
model = load_checkpoint(run, device=device)
card = model.card
prior = build_prior(card["prior"])
models = {"trained": model}
if init:  # the warm start's own network, scored on the same batches
    models["init (" + init.rsplit("/", 1)[-1] + ")"] = load_checkpoint(init, device=device)
rows = sorted({m.card["train_config"]["rows"] for m in models.values()})
for r in rows:
    tc = TrainConfig.from_dict({**card["train_config"], "batch_size": 8, "rows": r,
                                "max_context": None})
    losses = {name: [] for name in models}
    with torch.inference_mode(), torch.autocast(device, torch.bfloat16, enabled=device == "cuda"):
        for k in range(0, n, 8):  # a stream no training batch uses (rank 1 << 21)
            batch = sample_indexed(prior, tc, model.config.n_features, 1 << 21, k).to(device)
            for name, m in models.items():
                logits = m(**m.inputs_of(batch))
                losses[name].append(float(m.loss_from_logits(logits, batch)))
    for name, vals in losses.items():
        print(f"held-out prior loss (NLL) {name}: {sum(vals) / len(vals):.4f} on "
              f"{len(vals) * 8} tables of {r} rows")
print(f"trained: step {card['step']}, final training loss {card['metrics']['loss']:.4f}, "
      f"{card['metrics']['wall_time'] / 60:.1f} min, {card['metrics']['datasets_seen']:,} tables")
EOF
  grep -E "held-out prior loss|^trained: step" "$OUT/train.log" | sed 's/^/    /' | tee -a "$SUMMARY"
else
  say "- no checkpoint was written: nothing to export (see train.log)"
fi

# 4. benchmarks on the GPU, with the time left
if [ $SKIP_BENCH = 0 ]; then
  run "attention benchmark" 75 "$OUT/bench.md" "$PY" benchmarks/attention.py "${ATT[@]}"
  run "ffn benchmark" 75 "$OUT/bench.md" "$PY" benchmarks/ffn.py "${FFN[@]}"
fi
say ""
say "total $SECONDS s; outputs: $(cd "$OUT" && ls | tr '\n' ' ')"
exit 0
