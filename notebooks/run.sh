#!/usr/bin/env bash
# Executes the notebooks headless on a small run (CI does this after the tests).
#   bash notebooks/run.sh [path/to/meshsim]
# Installs the pinned requirements into a virtualenv (cached under ~/.cache/meshsim), makes a
# small replay and a small sweep with the given binary, and runs every notebook against them.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
meshsim=${1:-$here/../target/release/meshsim}
venv=${MESHSIM_NB_VENV:-$HOME/.cache/meshsim/nb-venv}
if [ ! -x "$venv/bin/python" ] || ! cmp -s "$here/requirements.txt" "$venv/requirements.txt"; then
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$here/requirements.txt"
  "$venv/bin/python" -m ipykernel install --prefix "$venv" --name python3 >/dev/null
  cp "$here/requirements.txt" "$venv/requirements.txt"
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export CI=1
"$meshsim" replay --trace embedded:azure-100 --minutes 5 --out "$work/replay" >/dev/null
cat > "$work/grid.toml" <<'GRID'
name = "notebook-check"
trace = "embedded:azure-100"
minutes = 5
replications = 2
[axes]
"cluster.workers" = [4, 8]
load_scale = [0.5, 1.0]
GRID
"$meshsim" sweep --grid "$work/grid.toml" --out "$work/sweep" >/dev/null
export MESHSIM_REPLAY="$work/replay" MESHSIM_SWEEP="$work/sweep/sweep.parquet" MESHSIM_NOTEBOOK_OUT="$work"
export JUPYTER_PATH="$venv/share/jupyter"
cd "$here"
"$venv/bin/python" execute.py fig1_slowdown.ipynb sweep.ipynb
test -s "$work/fig1_slowdown_notebook.png" && test -s "$work/sweep_notebook.png"
echo "notebooks: 2 executed, figures written"
