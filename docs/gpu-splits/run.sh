#!/usr/bin/env bash
# Issue 30 item 5: search/best.yaml under random and blocks splits, Original and Segmented,
# one study (trial 0) + confirm on 5 fresh seed/split pairs each, four pipelines at once.
set -u
SPACE=${SPACE:-best}; SEEDS=${SEEDS:-5}; WORKERS=${WORKERS:-5}; LIMIT=${LIMIT:-500}
W=${W:-/tmp/w}; mkdir -p "$W"
START=$SECONDS
pipeline() {
  local v=$1 s=$2; shift 2
  local name=${TAG:-$SPACE}-$v-$s; local R=$W/$name
  local left=$((LIMIT - (SECONDS - START)))
  timeout -s TERM $left python3 -m allsearch.study --record "$R" --data .devdata/$v.npz \
    --space "$SPACE" --study-name "$name" --trials 1 --log-models none --no-progress "$@" \
    > "$W/$name.log" 2>&1
  echo "$name study rc=$? at $((SECONDS - START)) s"
  left=$((LIMIT - (SECONDS - START)))
  timeout -s TERM $left python3 -m allsearch.confirm --record "$R" --study "$name" --top 1 \
    --seeds $SEEDS --workers $WORKERS --no-progress >> "$W/$name.log" 2>&1
  echo "$name confirm rc=$? at $((SECONDS - START)) s"
}
for v in Original Segmented; do
  pipeline $v random &
  pipeline $v blocks --split blocks --block-size 100 --embargo 10 &
done
wait
echo "all done at $((SECONDS - START)) s"
tail -n 4 "$W"/*.log
