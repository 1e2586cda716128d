#!/bin/bash
# Device call 4 (prepared, not yet run): the `r1_zero` recipe on seeds 1 and 2 (its seed-0 run and
# the attempts beyond it are CPU runs, RESULTS.md), and seed 0's `r1` and `grpo_vs_drgrpo` again so
# that every seed of the three-seed R1 table is scored on 300 items per level (seed 0's CPU run
# is no longer in a cache). One process per job on one GPU; about 8 minutes on an H200 (call 3:
# 300 GRPO steps in 186 s beside eight other jobs; R1-Zero runs 600). Carry [".gpucache"] (seed
# 2's base and reasoning SFT; see call3.sh), and unpack the returned chunks into the cache, then
#   python experiments/rescore.py <logs>/r1_s0/results.json --eval-per-level 300 --out DIR
#   minimopd lineage --profile cpu --seed S --recipes r1_zero --eval-per-level 300      (S = 1, 2)
#   minimopd lineage --profile cpu --seed 0 --recipes grpo_vs_drgrpo --eval-per-level 300
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD OMP_NUM_THREADS=2 MINIMOPD_CACHE=${MINIMOPD_CACHE:-$PWD/.gpucache}
L=/tmp/logs; rm -rf $L; mkdir -p $L; C=$MINIMOPD_CACHE; mkdir -p $C; touch $L/start
BUDGET=${BUDGET:-520}; T0=$(date +%s); P=${PROFILE:-cpu}
left() { echo $(( BUDGET - ($(date +%s) - T0) - 15 )); }
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null
part() {  # seed part
  timeout $(left) python3 experiments/device/stage.py --profile $P --seed $1 --no-progress $2 > $L/$2_s$1.log 2>&1
  echo "$2 s$1 rc=$? at $(( $(date +%s) - T0 ))s"
}
lineage() {  # seed recipe
  timeout $(left) python3 -c "import sys; from minimopd.cli import main; sys.exit(main(sys.argv[1:]))" lineage \
    --profile $P --seed $1 --recipes $2 --out $L/$2_s$1 --no-progress > $L/$2_s$1.log 2>&1
  echo "$2 s$1 rc=$? at $(( $(date +%s) - T0 ))s"
}
lineage 1 r1_zero & lineage 2 r1_zero &
(part 0 small) &
(part 0 cold; part 0 grpo & part 0 dr_grpo & lineage 0 r1 & wait) &
wait
echo "all done at $(( $(date +%s) - T0 ))s"
for f in $L/*.log; do echo "== $f"; tr '\r' '\n' < $f | grep -v "it/s\]\|s/it\]" | tail -6; done
NEW=$(cd $C && find . -mindepth 1 -maxdepth 1 -type d -newer $L/start ! -name '*.tmp*' -printf '%f\n' | sort |
  while read k; do [ -e $OLDPWD/minimopd/checkpoints/$k ] || echo $k; done)
echo "new cache entries:" $NEW
(cd $C && tar cf - $NEW) | split -b 15M - ${OUT:-/tmp}/cache_new.tar.
tar czf ${OUT:-/tmp}/logs.tgz -C /tmp logs
ls -la ${OUT:-/tmp}
