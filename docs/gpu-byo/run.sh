#!/usr/bin/env bash
# Issue 29 item 5: examples/resnet.py against the paper's CNN family (--space paper) on
# Segmented, grayscale and RGB, 100 px: the same number of trials each, then the best of each
# confirmed on 5 fresh seed/split pairs. Four pipelines at once.
set -u
TRIALS=${TRIALS:-6}; SEEDS=${SEEDS:-5}; WORKERS=${WORKERS:-3}; CW=${CW:-5}; LIMIT=${LIMIT:-420}
SEARCH_S=${SEARCH_S:-170}; V=${V:-Segmented}; W=${W:-/tmp/w}; mkdir -p "$W"
START=$SECONDS
pipeline() {
  local net=$1 color=$2; local name=$net-$V-$color; local R=$W/$name
  local bundle=.devdata/$V.npz; [ "$color" = rgb ] && bundle=.devdata/$V-rgb.npz
  local space=(--space paper); [ "$net" = resnet ] && space=(--space examples/resnet.yaml --model examples.resnet:build)
  timeout -s TERM $((LIMIT - (SECONDS - START))) python3 -m allsearch.study --record "$R" \
    --data "$bundle" --color "$color" "${space[@]}" --study-name "$name" --trials "$TRIALS" \
    --workers "$WORKERS" --timeout "$SEARCH_S" --log-models none --no-progress > "$W/$name.log" 2>&1
  echo "$name study rc=$? at $((SECONDS - START)) s"
  timeout -s TERM $((LIMIT - (SECONDS - START))) python3 -m allsearch.confirm --record "$R" \
    --study "$name" --top 1 --seeds "$SEEDS" --workers "$CW" --no-progress >> "$W/$name.log" 2>&1
  echo "$name confirm rc=$? at $((SECONDS - START)) s"
}
for net in resnet paper; do for color in gray rgb; do pipeline $net $color & done; done
wait
echo "all done at $((SECONDS - START)) s"
tail -n 4 "$W"/*.log
