#!/bin/bash
# Device call 1 (H200, 2026-11-26, 474 s): world v3 starting stages for seeds 0-2 (trained +
# diagnosed, 300 items per level), then an RLVR sweep on seed 0 (A-D) and config A on seeds 1-2.
# Ran through the `device` tool: $OUT is the folder whose files come back. Every line is a plain
# `python experiments/...` command that runs the same on a CPU (slower: ~1 h per seed).
# Note: the `ship` line below ran without MINIMOPD_CACHE, so it retrained seed 0 in a fresh
# cache; GPU training is not bit-deterministic, so its weights differ from cache_s0's. The
# package ships cache_s0's base and SFTs (the ones measured in RESULTS.md) and a cold start
# trained from that base on the CPU.
export PYTHONUNBUFFERED=1 MINIMOPD_SHIPPED=0 PYTHONPATH=$PWD
L=/tmp/logs; rm -rf $L; mkdir -p $L; C=$PWD/.gpucache; mkdir -p $C
BUDGET=${BUDGET:-540}; T0=$(date +%s)
left() { echo $(( BUDGET - ($(date +%s) - T0) - 25 )); }
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch,transformers;print(torch.__version__,transformers.__version__,torch.cuda.is_available())"
cal() {
  MINIMOPD_CACHE=$C/s$1 timeout $(left) python3 experiments/calibrate.py --profile cpu --seed $1 --n 300 \
    --json $L/cal_s$1.json > $L/cal_s$1.log 2>&1
  echo "cal s$1 rc=$? at $(( $(date +%s) - T0 ))s"
}
probe() {  # seed name args...
  local s=$1 n=$2; shift 2
  MINIMOPD_CACHE=$C/s$s timeout $(left) python3 experiments/rl_probe.py --profile cpu --seed $s --n 300 \
    --json $L/rl_${n}_s$s.json "$@" > $L/rl_${n}_s$s.log 2>&1
  echo "rl $n s$s rc=$? at $(( $(date +%s) - T0 ))s"
}
SEL="--steps 300 --select 4800"
(cal 0
 (timeout $(left) python3 -c "from minimopd.shipped import ship; print(ship('cpu', 0, progress=False))" \
    > $L/ship0.log 2>&1; echo "ship0 rc=$? at $(( $(date +%s) - T0 ))s") &
 probe 0 A $SEL --lr 5e-5 &
 probe 0 B $SEL --lr 1e-4 &
 probe 0 C $SEL --lr 5e-5 --extra '{"kl_beta": 0.05}' &
 probe 0 D $SEL --lr 2e-5 &
 wait) &
(cal 1; probe 1 A $SEL --lr 5e-5) &
(cal 2; probe 2 A $SEL --lr 5e-5) &
wait
echo "all done at $(( $(date +%s) - T0 ))s"
for f in $L/rl_*.log; do echo "== $f"; grep -v "it/s\]\|s/it\]" $f | tail -32; done
for f in $L/cal_*.log; do echo "== $f"; tr '\r' '\n' < $f | grep -v "it/s\]\|s/it\]\|%|" | tail -40; done
tar czf $OUT/logs.tgz -C /tmp logs
tar cf $OUT/ship0.tar minimopd/checkpoints
for s in 0 1 2; do tar cf $OUT/cache_s$s.tar -C $C s$s; done
ls -la $OUT
