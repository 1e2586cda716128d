#!/bin/bash
# Device call 3 (H200, 2026-11-28; ran in 470 s as `GPU_PROBE=200 BUDGET=505 bash call3.sh`): the
# training of R1 and GRPO vs Dr.GRPO on seeds 1 and 2 (seed 0 ran on the CPU), split into
# independent processes on one GPU, plus a timing probe of the `gpu` profile. The new cache
# entries come back as tar chunks (unpack them into ~/.cache/minimopd); they are scored on the CPU
# at 300 items per level with
#   python experiments/rescore.py <logs>/r1_sS/results.json --eval-per-level 300 --out DIR
#   minimopd lineage --profile cpu --seed S --recipes grpo_vs_drgrpo --eval-per-level 300
# (`lineage --recipes r1` would re-sample r1's rejection traces, which differ on a CPU, and retrain).
# Carry [".gpucache"]: it holds seed 2's base and reasoning SFT (seed 1's ship with the package).
# Name it in every call: a later call without it found .gpucache gone and retrained seed 2's base
# and SFT on the GPU (not bit-identical to the CPU-trained ones; RESULTS.md, `tulu3`).
# Per seed: the cold start first; then three processes: GRPO, Dr.GRPO (experiments/device/
# stage.py) and the r1 recipe (cold start -> reasoning RL -> rejection sampling -> SFT -> final
# RL -> distillation), beside the small model's base and cold start.
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD OMP_NUM_THREADS=2 MINIMOPD_CACHE=${MINIMOPD_CACHE:-$PWD/.gpucache}
L=/tmp/logs; rm -rf $L; mkdir -p $L; C=$MINIMOPD_CACHE; mkdir -p $C; touch $L/start
BUDGET=${BUDGET:-500}; T0=$(date +%s); P=${PROFILE:-cpu}; SEEDS=${SEEDS:-1 2}
left() { echo $(( BUDGET - ($(date +%s) - T0) - 15 )); }
py() { timeout $(left) python3 "$@"; }
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null
python3 -c "import torch,transformers;print(torch.__version__,transformers.__version__,torch.cuda.is_available())"
part() {  # seed part
  py experiments/device/stage.py --profile $P --seed $1 --no-progress $2 > $L/$2_s$1.log 2>&1
  echo "$2 s$1 rc=$? at $(( $(date +%s) - T0 ))s"
}
r1() {  # seed
  py -c "import sys; from minimopd.cli import main; sys.exit(main(sys.argv[1:]))" lineage --profile $P \
    --seed $1 --recipes r1 --out $L/r1_s$1 --no-progress > $L/r1_s$1.log 2>&1
  echo "r1 s$1 rc=$? at $(( $(date +%s) - T0 ))s"
}
for s in $SEEDS; do
  (part $s small) &
  (part $s cold; part $s grpo & part $s dr_grpo & r1 $s & wait) &
done
if [ -n "$GPU_PROBE" ]; then  # the gpu profile's first stages, for their speed only (logs tqdm's rates)
  (MINIMOPD_CACHE=/tmp/gpuprof timeout ${GPU_PROBE} python3 -c "import sys; from minimopd.cli import main; \
sys.exit(main(sys.argv[1:]))" lineage --profile gpu --seed 0 --recipes tulu3 --out $L/gpu_tulu3 \
    > $L/gpu_profile.log 2>&1; echo "gpu profile probe rc=$? at $(( $(date +%s) - T0 ))s") &
fi
wait
echo "all done at $(( $(date +%s) - T0 ))s"
for f in $L/*.log; do echo "== $f"; tr '\r' '\n' < $f | grep -v "it/s\]\|s/it\]" | tail -6; done
tr '\r' '\n' < $L/gpu_profile.log 2>/dev/null | grep "it/s\]\|s/it\]" | awk 'NR%40==0' | tail -12
NEW=$(cd $C && find . -mindepth 1 -maxdepth 1 -type d -newer $L/start ! -name '*.tmp*' -printf '%f\n' | sort |
  while read k; do [ -e minimopd/checkpoints/$k ] || [ -e $OLDPWD/minimopd/checkpoints/$k ] || echo $k; done)
echo "new cache entries:" $NEW
(cd $C && tar cf - $NEW) | split -b 15M - ${OUT:-/tmp}/cache_new.tar.
tar czf ${OUT:-/tmp}/logs.tgz -C /tmp logs
ls -la ${OUT:-/tmp}
