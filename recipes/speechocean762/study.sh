#!/usr/bin/env bash
# The recipe study of STUDY.md: every variant trains from scratch on the same compute budget,
# then gets the same quick phone and speaker probes. Usage, from the repository root:
#   bash recipes/speechocean762/study.sh train VARIANT    # train (resumable: run it again)
#   bash recipes/speechocean762/study.sh probe VARIANT    # quick probes of its last checkpoint
#   bash recipes/speechocean762/study.sh probe shipped    # the same probes of the shipped weights
#   bash recipes/speechocean762/study.sh probe random     # ... and of a random-init paper model
#   bash recipes/speechocean762/study.sh list             # the variants
# Issue 21's continuation study: every variant starts from the shipped weights and trains STEPS
# updates (default 1500), then gets the full probe table and ABX on the dev test split:
#   bash recipes/speechocean762/study.sh cont VARIANT      # train (resumable: run it again)
#   bash recipes/speechocean762/study.sh evaluate VARIANT  # full probes + ABX of its last step
#   bash recipes/speechocean762/study.sh evaluate shipped  # the same for the shipped weights
# A variant may join others with +: c256-lstm+aug-past+k4.
# Environment: BUDGET (CPU seconds of the training process, default 1200), THREADS (torch
# threads per run, default 1, so that several variants can share a machine fairly), OUT
# (default runs/study), DATA (default ../shared/data/speechocean762-train), PRECISION (default
# bf16 where the CPU has avx512_bf16 instructions, else fp32: bf16 is emulated, ~9x slower).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
CONF=$HERE/conf.yaml
BUDGET=${BUDGET:-1200}
THREADS=${THREADS:-1}
OUT=${OUT:-runs/study}
DATA=${DATA:-$HERE/../../../shared/data/speechocean762-train}
CPCSPEECH=${CPCSPEECH:-cpcspeech}
if [ -z "${PRECISION:-}" ]; then
  if grep -q avx512_bf16 /proc/cpuinfo; then PRECISION=bf16; else PRECISION=fp32; fi
fi

# Kharitonov et al. 2020's chain, on one side: pitch, reverb, band reject, additive coloured
# noise and babble from other training utterances, time dropout.
AUG="augment.pitch_p=0.5 augment.reverb_p=0.5 augment.band_reject_p=0.2 \
augment.colored_noise_p=0.3 augment.corpus_noise_p=0.3 augment.time_dropout_p=0.2 \
data.num_workers=1"
SMALL="model.encoder_channels=256 model.context_type=lstm"

variant() {  # the --set overrides of one variant; A+B joins the overrides of A and B
  if [[ "$1" == *+* ]]; then
    local part
    for part in ${1//+/ }; do variant "$part"; done
    return
  fi
  case "$1" in
    base) echo "" ;;                                   # the shipped weights' recipe, 1.83 h
    aug-past) echo "augment.side=past $AUG" ;;
    aug-both) echo "augment.side=both $AUG" ;;
    aug-future) echo "augment.side=future $AUG" ;;
    c256) echo "model.encoder_channels=256" ;;
    lstm) echo "model.context_type=lstm" ;;
    c256-lstm) echo "$SMALL" ;;                         # CPC_audio's released shape
    c256-lstm-aug-past) echo "$SMALL augment.side=past $AUG" ;;
    neg64) echo "loss.num_negatives=64" ;;
    neg128) echo "loss.num_negatives=128" ;;
    same-seq) echo "loss.negative_mode=same_seq" ;;
    mlp) echo "loss.predictor=mlp" ;;                   # one hidden layer per step (CPC_audio ffd)
    transformer) echo "loss.predictor=transformer" ;;   # causal attention before the heads
    same-speaker) echo "loss.negative_mode=same_speaker data.speakers_per_batch=2" ;;
    k4) echo "loss.prediction_steps=4" ;;
    *) echo "unknown variant $1; see: $0 list" >&2; exit 2 ;;
  esac
}

case "${1:-}" in
  list)
    for v in base aug-past aug-both aug-future c256 lstm c256-lstm c256-lstm-aug-past \
             neg64 neg128 same-seq same-speaker k4 mlp transformer; do
      echo "$v: $(variant "$v")"
    done ;;
  train)
    sets=()
    for kv in $(variant "$2"); do sets+=(--set "$kv"); done
    OMP_NUM_THREADS=$THREADS $CPCSPEECH train "$CONF" --resume \
      --set train.out_dir="$OUT/$2" --set train.max_steps=10000000 \
      --set train.budget_seconds="$BUDGET" --set train.budget_clock=cpu \
      --set train.precision="$PRECISION" \
      --set train.valid_every=250 --set train.checkpoint_every=250 --set train.valid_batches=8 \
      "${sets[@]}" ;;
  cont)
    # Continuation of the shipped weights: heads and Adam fresh, a short warm-up of the body.
    sets=()
    for kv in $(variant "$2"); do sets+=(--set "$kv"); done
    OMP_NUM_THREADS=$THREADS $CPCSPEECH train "$CONF" --resume \
      --set train.out_dir="${COUT:-runs/cont}/$2" --set train.init_from=default \
      --set optim.warmup_steps=100 --set train.max_steps="${STEPS:-1500}" \
      --set train.precision="$PRECISION" \
      --set train.valid_every=250 --set train.checkpoint_every=250 --set train.valid_batches=8 \
      --set train.keep_last=20 "${sets[@]}" ;;
  evaluate)
    # Full probes (train_split -> test_split, c_t) and ABX (test_split) of one model.
    if [ "$2" = shipped ]; then
      model=default
    else
      model=$(ls -d "${COUT:-runs/cont}/$2"/checkpoints/step-* | sort | tail -1)
    fi
    dest=${COUT:-runs/cont}/$2
    OMP_NUM_THREADS=$THREADS $CPCSPEECH probe --table --no-baselines --data "$DATA" \
      --labels "$DATA/converted_aligned_phones.txt" --model "$model" --out "$dest/full-probe"
    OMP_NUM_THREADS=$THREADS $CPCSPEECH abx --model "$model" --data "$DATA" \
      --labels "$DATA/converted_aligned_phones.txt" --out "$dest/abx" --quiet ;;
  probe)
    # Quick probes: 4 training utterances per speaker (500) -> 2 test utterances per speaker
    # (250), from the probes' own train and test splits.
    lists=$OUT/quick-lists
    mkdir -p "$lists"
    for split in train:4 test:2; do
      name=${split%%:*}; per=${split##*:}
      awk -v per="$per" 'NR == FNR {spk[$1] = $2; next} {n[spk[$1]]++} n[spk[$1]] <= per' \
        "$DATA/utt2spk" "$DATA/${name}_split.txt" > "$lists/$name.txt"
    done
    if [ "$2" = shipped ]; then  # reference rows: the shipped weights and random init (the
      last=default               # paper model, seeded), probed the same way
    elif [ "$2" = random ]; then
      last=random
    else
      last=$(ls -d "$OUT/$2"/checkpoints/step-* | sort | tail -1)
    fi
    OMP_NUM_THREADS=$THREADS $CPCSPEECH probe --table --no-baselines --data "$DATA" \
      --labels "$DATA/converted_aligned_phones.txt" --model "$last" \
      --train-list "$lists/train.txt" --test-list "$lists/test.txt" --out "$OUT/$2/probe" ;;
  *) sed -n 2,9p "$0"; exit 2 ;;
esac
