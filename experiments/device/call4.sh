#!/bin/bash
# Device call 4 (prepared, not yet run): seed 0's `r1` recipe on a GPU, so that every seed of the
# three-seed R1 table is scored on 300 items per level and lab 06's saved outputs can be made from
# cached stages (seed 0's CPU run is no longer in a cache; about 1 h 40 min on the 2-core CPU).
# The R1-Zero seeds and seed 0 of GRPO vs Dr.GRPO, once part of this call, ran on the CPU on
# 2026-11-28 (RESULTS.md). About 4 minutes on an H200 (call 3: the r1 recipe in ~6 min beside
# eight other jobs). Carry [".gpucache"] (see call3.sh), unpack the returned chunks into the cache, then
#   python experiments/rescore.py <logs>/r1_s0/results.json --eval-per-level 300 --out DIR
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
(part 0 small) &
(part 0 cold; lineage 0 r1) &
wait
echo "all done at $(( $(date +%s) - T0 ))s"
for f in $L/*.log; do echo "== $f"; tr '\r' '\n' < $f | grep -v "it/s\]\|s/it\]" | tail -6; done
NEW=$(cd $C && find . -mindepth 1 -maxdepth 1 -type d -newer $L/start ! -name '*.tmp*' -printf '%f\n' | sort |
  while read k; do [ -e $OLDPWD/minimopd/checkpoints/$k ] || echo $k; done)
echo "new cache entries:" $NEW
(cd $C && tar cf - $NEW) | split -b 15M - ${OUT:-/tmp}/cache_new.tar.
tar czf ${OUT:-/tmp}/logs.tgz -C /tmp logs
ls -la ${OUT:-/tmp}
