#!/usr/bin/env bash
# Every GPU figure bench/RESULTS.md asks for, in parts that each fit one 10-minute command on a GPU
# machine. Each step has its own time limit, so one slow step cannot take the others' output with it.
# Output goes to $OUT (or ./gpu-out): one log per part plus the JSON and SVG files the steps write.
#
#   bash bench/gpu-campaign.sh decode|profile|skip|train|all [--smoke]
#
#   decode  bench/webgpu.ts --peer (matmul, decode, prefill vs HF, HBM limit, memory),
#           bench/decode-breakdown.ts (125M and 1B)
#   profile bench/profile.ts (kernels by GPU time), the fp32 matmul without robust buffer access, the
#           host's share of decoding alone (Dawn's null backend), and the 1B decode breakdown without
#           Dawn's robust buffer access and with its workgroup-memory zeroing (which Brickwork turns off)
#   skip    bench/skip.ts --device webgpu (tiny, 125M, 1B) and `brickwork sweep --device webgpu` on the
#           bundled tiny-llama over WikiText-2 test (needs data/gpu/wikitext-2/{test,valid}.txt, copied
#           from ../shared/data beforehand: that folder does not travel to the GPU machine)
#   train   bench/train.ts --device webgpu --peer (GPT-2 124M, T 1024) and `brickwork compare --device webgpu`
# --smoke runs every step at toy sizes (no peer), to check the script itself on any adapter.
# On the GPU machine, run one part per command (all of them together return more than its 8 files).
# A session's 30 minutes of device time (machine start included) hold about three parts: decode, skip
# and train carry the figures the results file still lacks; profile is diagnosis, so it goes last.
set -uo pipefail
cd "$(dirname "$0")/.."
part=${1:-all}
smoke=${2:-}
out=${OUT:-gpu-out}
runs=$(mktemp -d)
mkdir -p "$out"
log="$out/$part.log"
: > "$log"
run_ts=(node --import ./scripts/ts.mjs)
# step SECONDS TITLE COMMAND...: runs one step under its own time limit and appends its output to the log.
step() {
  local limit=$1 title=$2; shift 2
  echo "=== $title ($(date -u +%H:%M:%S), limit ${limit}s)" | tee -a "$log"
  local t0=$SECONDS
  timeout --kill-after=10 "$limit" "$@" 2>&1 | tee -a "$log"
  local rc=${PIPESTATUS[0]}
  echo "=== $title: exit $rc after $((SECONDS - t0))s" | tee -a "$log"
}
data=data/gpu/wikitext-2
if [ -n "$smoke" ]; then
  peer=(); quickArgs=(--smoke); models=tiny; sweepTokens=128; small=(--small); big=(--narrow --tokens 8); sweepPolicies=ffn-skip
else
  peer=(--peer); quickArgs=(); models=tiny,125M,1B; sweepTokens=16384; small=(); big=(--1b --tokens 32); sweepPolicies=ffn-skip,block-influence,early-exit
fi

if [ "$part" = decode ] || [ "$part" = all ]; then
  command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee -a "$log"
  step 330 "bench/webgpu.ts ${peer[*]}" "${run_ts[@]}" bench/webgpu.ts "${peer[@]}" "${quickArgs[@]}"
  step 60 "decode breakdown, 125M" "${run_ts[@]}" bench/decode-breakdown.ts ${smoke:+--narrow --tokens 8}
  [ -z "$smoke" ] && step 60 "decode breakdown, 1B" "${run_ts[@]}" bench/decode-breakdown.ts "${big[@]}"
fi

if [ "$part" = profile ] || [ "$part" = all ]; then
  step 120 "kernel profile" "${run_ts[@]}" bench/profile.ts --models "$models" --train "${small[@]}"
  step 60 "fp32 matmul without robust buffer access" env BRICKWORK_DAWN_FLAGS=enable-dawn-features=disable_robustness \
    "${run_ts[@]}" bench/webgpu.ts --matmul-only "${quickArgs[@]}"
  # The host's share on this machine's CPU alone: Dawn's null backend records and submits but runs nothing.
  step 60 "host share of decoding (Dawn null backend), 1B layout" env BRICKWORK_DAWN_FLAGS=backend=null \
    "${run_ts[@]}" bench/decode-breakdown.ts --narrow --1b --tokens 450
  step 60 "decode breakdown, 1B, without robust buffer access" \
    env BRICKWORK_DAWN_FLAGS=enable-dawn-features=disable_robustness "${run_ts[@]}" bench/decode-breakdown.ts "${big[@]}"
  step 60 "decode breakdown, 1B, with workgroup memory zeroed" \
    env BRICKWORK_DAWN_FLAGS=disable-dawn-features=disable_workgroup_init "${run_ts[@]}" bench/decode-breakdown.ts "${big[@]}"
fi

if [ "$part" = skip ] || [ "$part" = all ]; then
  step 200 "bench/skip.ts --device webgpu" "${run_ts[@]}" bench/skip.ts --device webgpu --models "$models" ${smoke:+--tokens 8 --reps 1}
  if [ -f "$data/test.txt" ]; then
    step 360 "sweep on tiny-llama, webgpu" "${run_ts[@]}" src/cli/main.ts sweep --device webgpu --file "$data/test.txt" \
      --policy "${sweepPolicies}" --speculative --draft 3 --calib "$data/valid.txt" \
      --max-tokens "$sweepTokens" ${smoke:+--values 0.25 --gen-tokens 8 --window 64} --out "$out/sweep"
  else
    echo "=== sweep skipped: $data/test.txt is missing (copy ../shared/data/wikitext-2/raw/{test,valid}.txt there first)" | tee -a "$log"
  fi
fi

if [ "$part" = train ] || [ "$part" = all ]; then
  step 300 "bench/train.ts --device webgpu ${peer[*]}" "${run_ts[@]}" bench/train.ts --device webgpu "${peer[@]}" "${small[@]}"
  if [ -n "$smoke" ]; then
    step 200 "compare, webgpu" "${run_ts[@]}" src/cli/main.ts compare --device webgpu --width 64 --layers 2 --heads 4 --ffn 128 \
      --steps 4 --batch 2 --seq 32 --eval-every 2 --eval-batches 1 --out "$runs/compare"
  else
    step 240 "compare, webgpu" "${run_ts[@]}" src/cli/main.ts compare --device webgpu --width 256 --layers 4 --heads 8 --ffn 688 \
      --steps 200 --batch 8 --seq 64 --lr 2e-3 --warmup 20 --eval-every 25 --eval-batches 4 --seed 2 --out "$runs/compare"
  fi
  # Only the report comes back (a GPU machine returns at most 8 files); the runs' checkpoints stay behind.
  mkdir -p "$out/compare" && cp "$runs"/compare/compare.{json,svg} "$out/compare/" 2>/dev/null
fi
echo "log: $log"
