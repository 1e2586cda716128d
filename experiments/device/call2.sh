#!/bin/bash
# Device call 2 (prepared, not yet run): the v3 lineage recipes on seeds 0-2 with the cpu
# profile's defaults, one process per (recipe, seed), on one GPU. Run it through the device tool
# with carry [".gpucache"]: .gpucache/sS holds seed S's base and reasoning SFT (and seed 0's cold
# start) from call 1, so no starting stage is retrained.
# Without .gpucache (a fresh checkout) the lineage trains the missing starting stages first
# (about 90 s per seed on an H200), so the script still works, only later.
# Each process is the plain command
#   minimopd lineage --profile cpu --seed S --recipes R --out DIR --no-progress
# (run as `python3 -c ... main()` because the GPU image has no console script; without plotly
# the lineage writes results.md / results.json and skips report.html).
export PYTHONUNBUFFERED=1 MINIMOPD_SHIPPED=0 PYTHONPATH=$PWD
L=/tmp/logs; rm -rf $L; mkdir -p $L; C=${CACHE_ROOT:-$PWD/.gpucache}
BUDGET=${BUDGET:-560}; T0=$(date +%s)
left() { echo $(( BUDGET - ($(date +%s) - T0) - 20 )); }
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
lineage() {  # seed recipe
  MINIMOPD_CACHE=$C/s$1 timeout $(left) python3 -c "import sys; from minimopd.cli import main; sys.exit(main(sys.argv[1:]))" \
    lineage --profile ${PROFILE:-cpu} --seed $1 --recipes $2 --out $L/$2_s$1 --no-progress > $L/$2_s$1.log 2>&1
  echo "$2 s$1 rc=$? at $(( $(date +%s) - T0 ))s"
}
for s in 0 1 2; do for r in ${RECIPES:-r1 r1_zero grpo_vs_drgrpo}; do lineage $s $r & done; done
wait
for f in $L/*_s?.log; do echo "== $f"; grep -A16 "== recipe" $f | head -20; done
tar czf $OUT/logs.tgz -C /tmp logs
