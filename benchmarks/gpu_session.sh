#!/usr/bin/env bash
# The GPU checks of one lent device session, in one command, inside a time budget (docs/performance.md).
#
#   OUT=/tmp/gpu DATA=.devdata/facades TEACHER=.devdata/teacher.pt BUDGET=480 bash benchmarks/gpu_session.sh
#
# In order, each stage capped by what is left of BUDGET seconds (RESERVE kept for packing up):
#   1. environment: the GPU, torch; installs carried wheels (.whl/*.whl) into WORK/site if any
#   2. timings on an idle GPU: benchmarks/scale.py --gpu-precision (fp32 against bf16 at 256 px, ngf 64),
#      --paper-akd --akd-epochs 10 (the paper-scale AKD run, shortened, projected to 200 epochs), and
#      torchrun with NCCL (one process) in memory and streamed at 256 px, batch 16
#   3. in the background: more seeds of issue 13's ablation on DATA with TEACHER (64 px), one process per
#      run, PAR at a time, most important first: the default student (objective-augment-short-ema995)
#      in bf16, the GPU's default precision (seeds 20-24: keep them out of the fp32 rows' OUT, whose
#      seeds 0-19 they would otherwise overwrite), the paper's in fp32 (seeds 7-9), the default in fp32
#      (seeds 15-19); a run is not started with less than MIN_RUN seconds left (default 150: about what
#      one takes on an H100 beside 5 others)
#   4. meanwhile, in the foreground: `privaudit demo --quick` (auto precision), fp32 --deterministic
#      twice (bit-identical?), bf16 against fp32 attack losses, the quick studies on cuda, and with
#      TESTS=N the test suite (not slow) on N workers with CUDA visible (INSTALL=1: an editable install first)
# Without DATA or TEACHER stage 3 is skipped; JOBS=FILE replaces its list (lines "VARIANT PRECISION
# SEED"). Everything lands in OUT: log.txt (one line per stage) and results.tar.gz (every stage's log
# and the ablation runs' JSON), rewritten after every stage and every run, so that a session cut off
# keeps what finished. The first session's figures: docs/performance.md, docs/defenses.md.
set -u
abs() { case "$1" in /*) echo "$1" ;; *) echo "$PWD/$1" ;; esac; }  # paths are the caller's, whatever the cd below
OUT=$(abs "${OUT:-gpu-session}")
W=$(abs "${WORK:-/tmp/gpu-session}")
[ -n "${DATA:-}" ] && DATA=$(abs "$DATA")
[ -n "${TEACHER:-}" ] && TEACHER=$(abs "$TEACHER")
[ -n "${JOBS:-}" ] && JOBS=$(abs "$JOBS")
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
BUDGET=${BUDGET:-480}
RESERVE=${RESERVE:-15}
PAR=${PAR:-6}
MIN_RUN=${MIN_RUN:-150}
DEV=${DEV:-cuda}
fail() { echo "gpu_session: $*" >&2; exit 2; }
[ -z "${DATA:-}" ] || [ -d "$DATA" ] || fail "DATA $DATA is not a folder; give the data root with train/, val/ and test/"
[ -z "${TEACHER:-}" ] || [ -f "$TEACHER" ] || fail "TEACHER $TEACHER is not a file; give the teacher checkpoint"
[ -z "${JOBS:-}" ] || [ -f "$JOBS" ] || fail "JOBS $JOBS is not a file; give lines \"VARIANT PRECISION SEED\", or leave JOBS unset"
mkdir -p "$OUT" "$W/logs" "$W/abl" 2>/dev/null && : >"$W/abl/done.txt" 2>/dev/null || fail "cannot write to OUT $OUT or WORK $W; choose writable folders"
LOG="$OUT/log.txt"
START=$(date +%s)
DEADLINE=$((START + BUDGET - RESERVE))
export PRIVAUDIT_NO_PROGRESS=1 PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}

left() { echo $((DEADLINE - $(date +%s))); }
note() { echo "[$(($(date +%s) - START))s] $*" | tee -a "$LOG"; }
# stage NAME CAP CMD...: runs CMD with at most min(CAP, time left) seconds, its output in logs/NAME.log
stage() {
    local name=$1 cap=$2; shift 2
    local t=$(left); [ "$t" -gt "$cap" ] && t=$cap
    if [ "$t" -lt 5 ]; then note "$name: skipped (no time left)"; return; fi
    local t0=$(date +%s)
    timeout -k 10 "$t" "$@" >"$W/logs/$name.log" 2>&1
    local rc=$?
    note "$name: rc=$rc in $(($(date +%s) - t0))s (cap ${t}s)$([ $rc = 124 ] && echo ', TIMED OUT')"
    tarball
}
tarball() {  # logs and runs, without models, into OUT/results.tar.gz (replaced whole when tar succeeds, one writer at a time)
    (cd "$W" && flock "$W/.lock" sh -c 'tar czf "$1/.results.tmp" --exclude="*.pt" --exclude="*.state" --exclude=refs logs abl 2>/dev/null; \
        [ $? -le 1 ] && mv "$1/.results.tmp" "$1/results.tar.gz"' _ "$OUT")
}
pack() {
    tarball
    note "packed: $(du -h "$OUT/results.tar.gz" | cut -f1)"
}
trap pack EXIT

# 1. environment
if ls .whl/*.whl >/dev/null 2>&1; then
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$W/site" .whl/*.whl >"$W/logs/pip.log" 2>&1 \
        && export PYTHONPATH="$ROOT:$W/site" || { note "wheels: install failed"; exit 1; }
else
    export PYTHONPATH="$ROOT"
fi
# the `privaudit` command, for the tests that run it (no index, no build isolation: nothing is fetched)
[ -n "${INSTALL:-}" ] && { $PY -m pip install -q --no-index --no-deps --no-build-isolation -e . >"$W/logs/install.log" 2>&1; note "editable install: rc=$?"; }
note "gpu: $(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null || echo none)"
note "$($PY -c 'import sys, torch; print("python", sys.version.split()[0], "torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available())' 2>&1 | tail -1)"
stage version 60 $PY -m privaudit --version

# 2. timings, the GPU to themselves (SKIP_TIMINGS=1: not at all, for a check of this script on the CPU)
[ -z "${SKIP_TIMINGS:-}" ] && stage gpu-precision 150 $PY benchmarks/scale.py --gpu-precision --gpu-device "$DEV"
[ -z "${SKIP_TIMINGS:-}" ] && stage paper-akd 150 $PY benchmarks/scale.py --paper-akd --akd-epochs 10 --gpu-device "$DEV"
[ -z "${SKIP_TIMINGS:-}" ] && stage nccl-stream 120 $PY benchmarks/scale.py --nproc 1 --device "$DEV" --size 256 --pairs 100 --batch-size 16 --epochs 3 --ngf 32 --workers 4

# 3. issue 13's ablation, more seeds, in the background
ABL_PID=
if [ -n "${DATA:-}" ] && [ -n "${TEACHER:-}" ]; then
    jobs="$W/abl/jobs.txt"; : >"$jobs"
    if [ -n "${JOBS:-}" ]; then cp "$JOBS" "$jobs"; else
    for s in 20 21 22 23 24; do echo "objective-augment-short-ema995 bf16 $s" >>"$jobs"; done
    for s in 7 8 9; do echo "akd fp32 $s" >>"$jobs"; done
    for s in 15 16 17 18 19; do echo "objective-augment-short-ema995 fp32 $s" >>"$jobs"; done
    fi
    export DATA TEACHER W DEADLINE DEV PY OUT MIN_RUN
    one() {  # variant precision seed: one run in its own folder, abandoned at the deadline
        local t=$((DEADLINE - $(date +%s)))
        [ "$t" -lt "$MIN_RUN" ] && return 0
        local o="$W/abl/$1-$2-s$3"
        timeout -k 10 "$t" env OMP_NUM_THREADS=1 $PY benchmarks/distill_ablation.py --data "$DATA" --teacher "$TEACHER" --out "$o" --variants "$1" \
            --seeds "$3" --device "$DEV" --precision "$2" --bootstrap 200 --doc "$o/section.md" >"$o.log" 2>&1
        echo "$1 $2 s$3 rc=$? $(date +%s)" >>"$W/abl/done.txt"
        tarball
    }
    export -f one tarball
    note "ablation: $(wc -l <"$jobs") runs, $PAR at a time, in the background"
    xargs -P "$PAR" -L 1 bash -c 'one "$@"' _ <"$jobs" &  # each run's log is abl/<run>.log, packed with abl/
    ABL_PID=$!
fi

# 4. correctness on the GPU, meanwhile
stage demo 150 $PY -m privaudit demo --quick --out "$W/demo"
D="$W/demo/data"
if [ -d "$D/train" ]; then
    for k in a b; do
        stage "det-fp32-$k" 90 $PY -m privaudit train "$D/train" --out "$W/det-$k.pt" --epochs 2 --ngf 8 --ndf 8 --device "$DEV" --precision fp32 --deterministic --seed 0
    done
    stage det-bf16 90 $PY -m privaudit train "$D/train" --out "$W/det-bf16.pt" --epochs 2 --ngf 8 --ndf 8 --device "$DEV" --precision bf16 --seed 0
    for p in fp32 bf16; do
        stage "attack-$p" 60 $PY -m privaudit attack "$W/det-a.pt" --members "$D/train" --nonmembers "$D/test" --device "$DEV" --precision "$p" \
            --allow-small --json "$W/attack-$p.json" --scores "$W/scores-$p.csv"
    done
    stage compare 60 $PY - "$W" <<'EOF'
import csv, json, sys
from pathlib import Path
import torch
w = Path(sys.argv[1])
sd = lambda p: torch.load(p, map_location="cpu", weights_only=True)["state_dict"]
a, b, h = sd(w / "det-a.pt"), sd(w / "det-b.pt"), (sd(w / "det-bf16.pt") if (w / "det-bf16.pt").exists() else None)
same = all(torch.equal(a[k], b[k]) for k in a)
print("fp32 --deterministic, twice: bit-identical" if same else "fp32 --deterministic, twice: DIFFER, max |diff| %.3g" % max((a[k].float() - b[k].float()).abs().max().item() for k in a))
if h is None or not (w / "attack-bf16.json").exists():
    sys.exit("no bf16 run to compare")
print("bf16 against fp32 weights after 2 epochs: max |diff| %.3g" % max((a[k].float() - h[k].float()).abs().max().item() for k in a if a[k].is_floating_point()))
loss = lambda p: {(r["name"], r["set"]): float(r["loss"]) for r in csv.DictReader(open(p))}
f, g = loss(w / "scores-fp32.csv"), loss(w / "scores-bf16.csv")
rel = max(abs(f[k] - g[k]) / max(abs(f[k]), 1e-12) for k in f)
aucs = [json.load(open(w / f"attack-{p}.json"))["attack"]["auc"] for p in ("fp32", "bf16")]
print(f"attack losses, bf16 against fp32: max relative difference {rel:.4f}; AUC fp32 {aucs[0]:.4f}, bf16 {aucs[1]:.4f}")
EOF
    note "$(cat "$W/logs/compare.log" 2>/dev/null | tail -3 | tr '\n' ';')"
fi
for s in attack_study segmentation_study reproduce_table2; do
    stage "$s" 150 $PY benchmarks/$s.py --quick --out "$W/$s" --device "$DEV"
done

# the test suite, with CUDA visible (device auto resolves to it), as many workers as the ablation leaves cores
[ -n "${TESTS:-}" ] && stage pytest 600 $PY -m pytest -q -p no:cacheprovider -n "${TESTS}" -m "not slow" --maxfail=30 tests

if [ -n "$ABL_PID" ]; then
    note "waiting for the ablation ($(left)s left)"
    wait "$ABL_PID"
    note "ablation: $(wc -l <"$W/abl/done.txt" 2>/dev/null || echo 0) runs ended; $(cat "$W/abl/done.txt" 2>/dev/null | grep -c 'rc=0') complete"
fi
