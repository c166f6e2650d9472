#!/usr/bin/env bash
# Audit every generator checkpoint of a pytorch-CycleGAN-and-pix2pix training run for membership
# leakage, epoch by epoch, and compare them in one table and one utility-privacy plot.
#
#   audit_pix2pix_checkpoints.sh CHECKPOINT_DIR DATAROOT [--direction AtoB|BtoA] [--out DIR] [-- ATTACK_FLAGS...]
#
#   CHECKPOINT_DIR  a run folder as pix2pix writes it, e.g. checkpoints/facades_pix2pix/, holding
#                   <epoch>_net_G.pth (from --save_epoch_freq), iter_<N>_net_G.pth (--save_by_iter)
#                   and latest_net_G.pth
#   DATAROOT        the pix2pix data set root the run was trained on (aligned A|B images), with
#                   train/ (the members) and test/ (the non-members)
#   --direction     which half is the input, as in pix2pix's --direction (facades label -> photo
#                   is BtoA); default: the run's own, read from CHECKPOINT_DIR/train_opt.txt (a
#                   .pth does not record it, and guessing wrong makes a leaking model look clean)
#   --out DIR       where the reports go (default: privaudit-audit/<run name> in the current folder)
#   -- FLAGS...     passed on to every `privaudit attack`, e.g. -- --size 256 --stochastic --samples 4
#
# For each checkpoint (numbered epochs in order, then iterations, latest last) it runs
#   privaudit attack CKPT --members DATAROOT/train --nonmembers DATAROOT/test --json OUT/<name>.json
# and then `privaudit report` over all of them: OUT/audit.md (the table) and OUT/tradeoff.png.
# Depth, width and norm layer of each U-Net are read off its state_dict; privaudit loads it with
# torch.load(weights_only=True), so a checkpoint cannot run code.
#
# Exit codes: 0 done; 2 usage error, no checkpoints, or a checkpoint/data set privaudit refused
# (its one-line message names the file); any other code is privaudit's own.
# Needs `privaudit` on PATH (activate the virtual environment it is installed in).

set -euo pipefail

prog=$(basename "$0")

usage() {
    cat <<EOF
usage: $prog CHECKPOINT_DIR DATAROOT [--direction AtoB|BtoA] [--out DIR] [-- ATTACK_FLAGS...]

Audits every *_net_G.pth in CHECKPOINT_DIR (a pytorch-CycleGAN-and-pix2pix run folder) with
'privaudit attack', members DATAROOT/train, non-members DATAROOT/test, and compares them with
'privaudit report' (OUT/audit.md, OUT/tradeoff.png).
EOF
}

die_usage() {
    echo "$prog: $1" >&2
    echo "usage: $prog CHECKPOINT_DIR DATAROOT [--direction AtoB|BtoA] [--out DIR] [-- ATTACK_FLAGS...]  (--help for more)" >&2
    exit 2
}

# ---- arguments ---------------------------------------------------------------------------------
direction=""
out=""
positional=()
extra=()
while [ $# -gt 0 ]; do
    case "$1" in
        -h | --help)
            usage
            exit 0
            ;;
        --direction)
            [ $# -ge 2 ] || die_usage "--direction needs a value: AtoB or BtoA"
            direction=$2
            shift 2
            ;;
        --direction=*)
            direction=${1#--direction=}
            shift
            ;;
        --out)
            [ $# -ge 2 ] || die_usage "--out needs a folder"
            out=$2
            shift 2
            ;;
        --out=*)
            out=${1#--out=}
            shift
            ;;
        --)
            shift
            extra=("$@")
            break
            ;;
        -*)
            die_usage "unknown option '$1' (privaudit attack flags go after --)"
            ;;
        *)
            positional+=("$1")
            shift
            ;;
    esac
done

[ "${#positional[@]}" -eq 2 ] || die_usage "expected CHECKPOINT_DIR and DATAROOT, got ${#positional[@]} argument(s)"
ckpt_dir=${positional[0]%/}
dataroot=${positional[1]%/}

case "$direction" in
    "" | AtoB | BtoA) ;;
    *) die_usage "--direction must be AtoB or BtoA, not '$direction'" ;;
esac

[ -d "$ckpt_dir" ] || die_usage "checkpoint folder '$ckpt_dir' does not exist (pix2pix writes checkpoints/<name>/)"
for split in train test; do
    [ -d "$dataroot/$split" ] || die_usage "'$dataroot/$split' does not exist: DATAROOT must hold train/ (members) and test/ (non-members)"
done
command -v privaudit >/dev/null 2>&1 || {
    echo "$prog: 'privaudit' is not on PATH; activate the environment it is installed in (pip install privaudit)" >&2
    exit 2
}

run_name=$(basename "$ckpt_dir")
[ -n "$out" ] || out="privaudit-audit/$run_name"

# ---- the checkpoints, in training order ----------------------------------------------------------
# Sort key: 0 <epoch> for numbered epochs, 1 <iteration> for iter_<N>, 2 for any other name, 3 for
# latest (always last). A tab separates key and path, so paths may hold spaces.
tab=$(printf '\t')
checkpoints=()
while IFS="$tab" read -r _group _number path; do
    checkpoints+=("$path")
done < <(
    for f in "$ckpt_dir"/*_net_G.pth; do
        [ -f "$f" ] || continue
        stem=$(basename "$f" _net_G.pth)
        case "$stem" in
            latest) printf '3\t0\t%s\n' "$f" ;;
            iter_*[!0-9]* | iter_) printf '2\t0\t%s\n' "$f" ;;
            iter_*) printf '1\t%s\t%s\n' "${stem#iter_}" "$f" ;;
            *[!0-9]*) printf '2\t0\t%s\n' "$f" ;;
            *) printf '0\t%s\t%s\n' "$stem" "$f" ;;
        esac
    done | sort -t "$tab" -k1,1n -k2,2n -k3,3
)

if [ "${#checkpoints[@]}" -eq 0 ]; then
    echo "$prog: no *_net_G.pth in '$ckpt_dir': expected a pytorch-CycleGAN-and-pix2pix run folder" \
        "(checkpoints/<name>/ with latest_net_G.pth, <epoch>_net_G.pth)" >&2
    exit 2
fi

# pix2pix writes its options to train_opt.txt, e.g. "                direction: BtoA    [default: AtoB]".
if [ -z "$direction" ] && [ -f "$ckpt_dir/train_opt.txt" ]; then
    direction=$(awk '$1 == "direction:" { print $2; exit }' "$ckpt_dir/train_opt.txt")
    case "$direction" in
        AtoB | BtoA) echo "$prog: direction $direction, from $ckpt_dir/train_opt.txt" >&2 ;;
        *) direction="" ;;
    esac
fi
[ -n "$direction" ] || die_usage "pass --direction AtoB or BtoA (which half of DATAROOT's images the generator takes as input): '$ckpt_dir' has no train_opt.txt that records it"

mkdir -p "$out"
echo "$prog: auditing ${#checkpoints[@]} checkpoint(s) of '$run_name' (direction $direction) into $out/" >&2

# ---- attack each one ---------------------------------------------------------------------------
reports=()
names=""
for ckpt in "${checkpoints[@]}"; do
    name=$(basename "$ckpt" _net_G.pth)
    json="$out/$name.json"
    echo "  $name: $ckpt" >&2
    # ${extra[@]+...}: an empty array under `set -u` is an error in bash < 4.4 (macOS ships 3.2).
    privaudit attack "$ckpt" --members "$dataroot/train" --nonmembers "$dataroot/test" \
        --direction "$direction" --json "$json" --quiet ${extra[@]+"${extra[@]}"} || {
        rc=$?
        echo "$prog: privaudit attack failed on '$ckpt' (exit $rc); reports so far are in $out/" >&2
        exit "$rc"
    }
    reports+=("$json")
    names="${names:+$names,}$name"
done

# ---- compare -----------------------------------------------------------------------------------
# The reports are passed in training order (a glob would put 10 before 5), named by epoch.
privaudit report "${reports[@]}" --names "$names" --markdown "$out/audit.md" --plot "$out/tradeoff.png"

echo ""
echo "Audit of $run_name: ${#reports[@]} checkpoint(s)"
echo "  reports: $out/<epoch>.json (one per checkpoint; attack.auc is the headline number)"
echo "  table:   $out/audit.md"
echo "  plot:    $out/tradeoff.png"
last=${reports[${#reports[@]}-1]}
echo "Gate the last one on privacy alone:  privaudit gate \"$last\" --no-policy --max-auc 0.60"
echo "(a policy with max_nkid needs a report from privaudit evaluate, which also measures KID)"
