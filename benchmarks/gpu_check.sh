#!/usr/bin/env bash
# GPU check: the CUDA paths of softlabels on one GPU, in about 5 minutes (8 at most), no download.
#
#   benchmarks/gpu_check.sh [OUT_DIR]        (default: $OUT, else ./gpu_check_out)
#
# Steps (each with its own time limit; a failing step is recorded and the others go on):
#   train_bf16_cl     WSL resnet32x4 -> resnet8x4, CIFAR-shaped synthetic data, bf16 autocast + channels_last
#   teacher_cache     KD (fills the cache) then WSL at the same seed (reads it): cache hits, time per run
#   compile           the bf16 + channels_last run with runtime.compile (inductor): first vs later epochs
#   torchrun_syncbn   torchrun --nproc_per_node 1 (run marked distributed): NCCL, SyncBatchNorm, DDP wrapper
#   torchdistill      benchmarks/torchdistill_compare.py --device cuda (skipped when torchdistill is missing)
#   bench_fp32 / bench_bf16_cl / bench_paths
#                     softlabels bench --device cuda (float32; bf16 + channels_last; eager vs compile vs bf16)
# Writes one JSON, OUT_DIR/gpu_check.json, with each step's status, time and figures.
# Without CUDA it prepares everything (teacher checkpoint, configs, config validation), records why it
# stops, writes the JSON and exits 0: the script is checked on CPU and run as is on a lent GPU.
# GPU_CHECK_CPU_REHEARSAL=1 runs every step on the CPU instead, on tiny sizes (resnet8 pair, 64 images, the
# eager compile backend, gloo instead of NCCL, no SyncBN): it checks the script's plumbing, not the GPU paths.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT_DIR="${1:-${OUT:-gpu_check_out}}"
mkdir -p "$OUT_DIR"
PY="${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}"
WORK="$(mktemp -d)"
STEPS="$WORK/steps"
mkdir -p "$STEPS"
export PYTHONUNBUFFERED=1
# a checkout without an installed package (e.g. a bare GPU machine with torch only): use the source tree
if ! "$PY" -c "import softlabels" 2>/dev/null; then export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"; fi
SL=("$PY" -m softlabels.cli)
REHEARSAL="${GPU_CHECK_CPU_REHEARSAL:-0}"
if [ "$REHEARSAL" = 1 ]; then
  DEV=cpu; TEACHER=resnet8; STUDENT=resnet8; TRAIN=64; BATCH=32; TEST=32; COMPILE_BACKEND=eager; BACKEND=gloo
  STEPS=2; ROUNDS=1; PATHS=(bf16); PAIR=(--teacher resnet8 --student resnet8 --shape 3 16 16 --batch-size 16 --num-classes 10)
else
  DEV=cuda; TEACHER=resnet32x4; STUDENT=resnet8x4; TRAIN=6400; BATCH=128; TEST=1000; COMPILE_BACKEND=inductor
  BACKEND=nccl; STEPS=40; ROUNDS=5; PATHS=(compile bf16 compile_bf16); PAIR=()
fi
BUDGET_S="${GPU_CHECK_BUDGET_S:-450}"  # all GPU steps together (the device loan is what limits us)
now_ms() { echo $(( $(date +%s%N) / 1000000 )); }

# record NAME STATUS MILLISECONDS LOG [RESULT_JSON_FILE]
record() {
  "$PY" - "$@" <<'EOF'
import json, sys
from pathlib import Path
name, status, seconds, log = sys.argv[1:5]
res = sys.argv[5] if len(sys.argv) > 5 else ""
entry = {"status": status, "seconds": round(float(seconds) / 1000, 1)}
text = Path(log).read_text(errors="replace") if Path(log).is_file() else ""
if status != "ok":
    entry["log_tail"] = text[-3000:]
if res and Path(res).is_file():
    try:
        entry["result"] = json.loads(Path(res).read_text())
    except ValueError as exc:
        entry["result_error"] = str(exc)
steps = Path(log).parent / "steps"
(steps / f"{len(list(steps.iterdir())):02d}_{name}.json").write_text(json.dumps({name: entry}))
print(f"[gpu_check] {name}: {status} ({float(seconds) / 1000:.0f} s)", flush=True)
EOF
}

# step NAME LIMIT_S RESULT_FILE COMMAND...  (runs COMMAND under timeout, records it; the limit shrinks to
# what is left of BUDGET_S, and a step with under 20 s left is skipped)
step() {
  local name="$1" limit="$2" res="$3"; shift 3
  local log="$WORK/$name.log" t0 rc status left
  left=$(( DEADLINE - $(date +%s) ))
  if [ "$left" -lt 20 ]; then
    echo "skipped: the ${BUDGET_S} s budget of the GPU steps is spent" >"$log"; record "$name" skipped 0 "$log"; return
  fi
  [ "$left" -lt "$limit" ] && limit=$left
  t0=$(now_ms)
  timeout "$limit" "$@" >"$log" 2>&1
  rc=$?
  if [ $rc -eq 0 ]; then status=ok; elif [ $rc -eq 124 ]; then status="timeout after ${limit} s"; else status="failed (exit $rc)"; fi
  record "$name" "$status" $(( $(now_ms) - t0 )) "$log" "$res"
}

finish() {
  "$PY" - "$WORK" "$OUT_DIR/gpu_check.json" "$1" <<'EOF'
import json, os, platform, subprocess, sys
from pathlib import Path
work, out, stopped = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
info = {"platform": platform.platform(), "python": platform.python_version(), "stopped": stopped or None,
        "cpu_rehearsal": os.environ.get("GPU_CHECK_CPU_REHEARSAL") == "1"}
try:
    import torch
    info["torch"] = torch.__version__
    info["cuda_available"] = torch.cuda.is_available()
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
        info["cuda"] = torch.version.cuda
        info["gpu_count"] = torch.cuda.device_count()
except ImportError:
    info["torch"] = None
try:
    info["nvidia_smi"] = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version",
                                         "--format=csv,noheader"], capture_output=True, text=True,
                                        timeout=20).stdout.strip() or None
except (OSError, subprocess.SubprocessError):
    info["nvidia_smi"] = None
steps = {}
for f in sorted((work / "steps").glob("*.json")):
    steps.update(json.loads(f.read_text()))
info["steps"] = steps
info["all_ok"] = bool(steps) and all(v["status"] in ("ok", "skipped") for v in steps.values()) and not stopped
out.write_text(json.dumps(info, indent=2) + "\n")
print(f"[gpu_check] wrote {out}" + (f" (stopped: {stopped})" if stopped else ""))
EOF
  rm -rf "$WORK"
}

# ----------------------------------------------------------------------------- preparation (CPU)
"$PY" - "$WORK" "$TEACHER" "$STUDENT" "$TRAIN" "$BATCH" "$TEST" <<'EOF' >"$WORK/prepare.log" 2>&1
import sys
from pathlib import Path

import yaml

from softlabels.bench import save_random_teacher

work, teacher, student = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
train_size, batch, test_size = (int(x) for x in sys.argv[4:7])
ckpt = save_random_teacher(work, teacher, 100, 3)  # weights do not matter for the checks
base = {
    "name": "base", "seed": 0, "output_dir": str(work / "runs"),
    "data": {"name": "synthetic", "batch_size": batch, "augment": True,
             "synthetic": {"num_classes": 100, "image_size": 32, "channels": 3, "train_size": train_size,
                           "test_size": test_size}},
    "student": {"name": student},
    "teacher": {"name": teacher, "checkpoint": str(ckpt)},
    "method": {"name": "wsl", "temperature": 4.0, "alpha": 2.25},
    "optim": {"name": "sgd", "lr": 0.05, "momentum": 0.9, "weight_decay": 5e-4},
    "schedule": {"name": "constant", "epochs": 2},
    "runtime": {"progress": False, "device": "auto", "amp": "bf16", "channels_last": True},
}
(work / "base.yaml").write_text(yaml.safe_dump(base))
kd = {**base, "method": {"name": "kd", "temperature": 4.0, "ce_weight": 0.1, "kd_weight": 0.9}}
(work / "kd.yaml").write_text(yaml.safe_dump(kd))
EOF
t0=$(now_ms)
if [ ! -f "$WORK/base.yaml" ]; then
  record prepare "failed" $(( $(now_ms) - t0 )) "$WORK/prepare.log"
  finish "preparation failed (see steps.prepare.log_tail)"; exit 1
fi
B="$WORK/base.yaml"
R="$WORK/runs"
# every config the GPU steps train, validated now (on CPU too): a typo fails here, not after a device start
K="$WORK/kd.yaml"
for cfg_and_overrides in "$B name=v1" "$K name=v2 teacher.cache=true" "$B name=v3 teacher.cache=true" \
                         "$B name=v4 runtime.compile=true" "$B name=v5 runtime.sync_bn=true"; do
  # shellcheck disable=SC2086
  "${SL[@]}" validate $cfg_and_overrides >>"$WORK/prepare.log" 2>&1 \
    || { record prepare failed $(( $(now_ms) - t0 )) "$WORK/prepare.log"; finish "a config did not validate"; exit 1; }
done
record prepare ok $(( $(now_ms) - t0 )) "$WORK/prepare.log"

if [ "$REHEARSAL" != 1 ] && ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  echo "[gpu_check] no CUDA device here: preparation and config checks done, GPU steps skipped"
  finish "no CUDA device (torch.cuda.is_available() is False); run this script on a GPU machine"
  exit 0
fi

# ----------------------------------------------------------------------------- GPU steps
DEADLINE=$(( $(date +%s) + BUDGET_S ))
summary() { echo "$R/$1/summary.json"; }

step train_bf16_cl 120 "$(summary bf16_cl)" "${SL[@]}" train "$B" name=bf16_cl runtime.device=$DEV
# the cache: KD fills it (first run), WSL at the same seed reads it; metrics.jsonl records hits/misses
step cache_fill 120 "$(summary cache_kd)" "${SL[@]}" train "$K" name=cache_kd teacher.cache=true runtime.device=$DEV
step cache_read 120 "$(summary cache_wsl)" "${SL[@]}" train "$B" name=cache_wsl teacher.cache=true runtime.device=$DEV
step compile 240 "$(summary compiled)" "${SL[@]}" train "$B" name=compiled runtime.compile=true \
  runtime.compile_backend=$COMPILE_BACKEND runtime.device=$DEV

# per-epoch figures of those runs (the compiled run's first epoch includes compilation); the cache must be read
t0=$(now_ms)
"$PY" - "$R" "$WORK/epochs.json" <<'EOF' >"$WORK/epochs.log" 2>&1
import json, sys
from pathlib import Path
runs, out = Path(sys.argv[1]), Path(sys.argv[2])
res = {}
for name in ("bf16_cl", "cache_kd", "cache_wsl", "compiled"):
    f = runs / name / "metrics.jsonl"
    rows = [json.loads(line) for line in f.read_text().splitlines() if line.strip()] if f.is_file() else []
    res[name] = {k: [r.get(k) for r in rows] for k in ("epoch_time_s", "images_per_s", "test_top1",
                                                          "teacher_cache_hits", "teacher_cache_misses")}
out.write_text(json.dumps(res, indent=2))
hits = sum(h or 0 for h in res["cache_wsl"]["teacher_cache_hits"])
assert hits > 0, f"the second run read nothing from the teacher cache: {res['cache_wsl']}"
EOF
record epochs_and_cache "$([ $? -eq 0 ] && echo ok || echo failed)" $(( $(now_ms) - t0 )) "$WORK/epochs.log" \
  "$WORK/epochs.json"

# softlabels treats a torchrun of world size 1 as one plain process (no process group), so this check joins
# the process group itself and marks the run distributed: one GPU then runs NCCL, SyncBatchNorm and DDP
cat >"$WORK/ddp_check.py" <<EOF
import json, os, sys
import torch, torch.distributed as dist
from torch import nn
import softlabels.engine.distributed as sl_dist
import softlabels.engine.trainer as sl_trainer
from softlabels.config import load_config
from softlabels.engine.trainer import Trainer

expect_backend, expect_sync_bn = "$BACKEND", "$DEV" == "cuda"  # SyncBN is converted on CUDA only


def join_world_of_one(device_name):
    local = int(os.environ.get("LOCAL_RANK", "0"))
    device = None
    if expect_backend == "nccl":
        torch.cuda.set_device(local)
        device = torch.device("cuda", local)
    dist.init_process_group(backend=expect_backend)
    return sl_dist.DistInfo(int(os.environ["RANK"]), dist.get_world_size(), local), device


sl_dist.DistInfo.enabled = property(lambda self: dist.is_initialized())
sl_trainer.init_distributed = join_world_of_one
exp = load_config("$B", ["name=torchrun_syncbn", "runtime.sync_bn=true", "runtime.device=$DEV"])
trainer = Trainer(exp)
student = trainer.method.student
res = {"backend": dist.get_backend() if dist.is_initialized() else None,
       "world_size": dist.get_world_size() if dist.is_initialized() else 1,
       "sync_bn_layers": sum(isinstance(m, nn.SyncBatchNorm) for m in student.modules()),
       "ddp": isinstance(trainer.model, nn.parallel.DistributedDataParallel)}
summary = trainer.fit()
res.update(best_top1=summary.get("best_top1"), images_per_s=summary.get("images_per_s"))
print(res)
if res["backend"] != expect_backend or (expect_sync_bn and res["sync_bn_layers"] == 0) or not res["ddp"]:
    sys.exit(3)
if int(os.environ.get("RANK", 0)) == 0:
    open("$WORK/ddp.json", "w").write(json.dumps(res))
dist.destroy_process_group()
EOF
step torchrun_syncbn 180 "$WORK/ddp.json" "$PY" -m torch.distributed.run --standalone --nproc_per_node 1 "$WORK/ddp_check.py"

if "$PY" -c "import torchdistill" 2>/dev/null; then
  step torchdistill 150 "$WORK/td.json" "$PY" benchmarks/torchdistill_compare.py --device $DEV "${PAIR[@]}" \
    --steps $(( STEPS / 2 + 1 )) --rounds $ROUNDS --json "$WORK/td.json"
else
  echo "torchdistill is not installed (pip install -e .[compare]); step skipped" >"$WORK/td.log"
  record torchdistill skipped 0 "$WORK/td.log"
fi

step bench_fp32 120 "$WORK/bench_fp32.json" "${SL[@]}" bench --device $DEV "${PAIR[@]}" --steps $STEPS \
  --rounds $ROUNDS --json "$WORK/bench_fp32.json"
step bench_bf16_cl 120 "$WORK/bench_bf16.json" "${SL[@]}" bench --device $DEV "${PAIR[@]}" --amp bf16 --channels-last \
  --steps $STEPS --rounds $ROUNDS --json "$WORK/bench_bf16.json"
step bench_paths 240 "$WORK/bench_paths.json" "${SL[@]}" bench --device $DEV "${PAIR[@]}" --channels-last \
  --steps $STEPS --rounds $(( ROUNDS > 3 ? 3 : ROUNDS )) --runtime-paths "${PATHS[@]}" --json "$WORK/bench_paths.json"

finish ""
