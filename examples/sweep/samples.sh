#!/usr/bin/env bash
# The paper's slowdown ratios on other 200-function samples of the Azure trace. The paper
# replays its own sample (200 functions, ~32.5K invocations in 30 minutes), which is not
# published. This draws samples of 200 functions from the bundled 500-function sample with
# InVitro's method (`meshsim trace sample`: best of 100 random subsets by Wasserstein distance
# of rate, duration and memory), keeps those with 20,000-45,000 invocations in their first 30
# minutes (the samples holding the 500 sample's one event-triggered function have ~120,000 and
# overload every profile), and sweeps {no mesh, istio-policies} over them in InVitro's
# deployment shape, 3 replications. sim/README.md ("Not reached") has the table.
#
#   examples/sweep/samples.sh results/samples          # seeds 1-30: 16 samples kept, 96 runs
#   examples/sweep/samples.sh results/samples "1 2 3"  # other seeds
#
# Writes OUT/s<seed>/ (the traces), OUT/grid.toml and OUT/sweep/ (the sweep's table).
set -euo pipefail

OUT=${1:?usage: samples.sh OUT_DIR [SEEDS]}
SEEDS=${2:-$(seq 1 30)}
MESHSIM=${MESHSIM:-meshsim}   # the binary: cargo install --path experiments, or target/release/meshsim
HERE=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)

kept=()
for s in $SEEDS; do
  dir="$OUT/s$s"
  "$MESHSIM" trace sample --trace embedded:azure-500 --functions 200 --seed "$s" --out "$dir" >/dev/null
  n=$("$MESHSIM" trace stats --trace "$dir" --minutes 30 | awk '$1 == "invocations" { print $2 }')
  [[ $n =~ ^[0-9]+$ ]] || { echo "seed $s: no invocation count in 'meshsim trace stats' output" >&2; exit 1; }
  if (( n >= 20000 && n <= 45000 )); then
    kept+=("'$dir'")   # TOML literal strings: no escapes inside
    echo "seed $s: $n invocations in 30 min, kept"
  else
    echo "seed $s: $n invocations in 30 min, left out"
  fi
done
(( ${#kept[@]} > 0 )) || { echo "no sample in 20,000-45,000 invocations" >&2; exit 1; }

traces=$(IFS=,; echo "${kept[*]}")
cat >"$OUT/grid.toml" <<EOF
# Written by examples/sweep/samples.sh.
name = "samples"
minutes = 30
seed = 42
replications = 3
base = '$HERE/../../models/profiles/invitro-knative.toml'

[axes]
trace = [$traces]
"mesh.profile" = ["none", "istio-policies"]
EOF
"$MESHSIM" sweep --grid "$OUT/grid.toml" --out "$OUT/sweep"
