#!/usr/bin/env bash
# Create (or refresh) the project's virtual environment with the pinned OpenMMLab stack.
#
# Idempotent: a stamp in the venv records a hash of this script and the requirements; when it
# matches, the script returns in about a second.  The slow part, mmcv 2.1.0 with compiled ops
# (~11 min on 2 cores), is built once per (mmcv, torch, python) triple and cached outside the
# clone in $MMEOMT_CACHE (default ~/.cache/mmeomt), so a fresh clone re-uses it.
#
# Why the build is patched: PyPI has no mmcv 2.1.0 wheel for torch 2.14, and mmcv's setup.py
# hard-codes -std=c++17 while torch 2.14's headers need C++20; -std=c++20 builds it.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${MMEOMT_VENV:-$ROOT/.venv}
CACHE=${MMEOMT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/mmeomt}
PYTHON=${PYTHON:-python3}

TORCH_VERSION=2.14.1
TORCHVISION_VERSION=0.29.1
MMCV_VERSION=2.1.0

say() { printf '[setup] %s\n' "$*" >&2; }
die() { printf '[setup] ERROR: %s\n' "$*" >&2; exit 1; }

stamp_inputs() {
  cat "$ROOT/tools/setup_env.sh" "$ROOT"/requirements/*.txt "$ROOT/setup.py"
}
want_stamp=$(stamp_inputs | sha256sum | cut -d' ' -f1)
if [[ -f "$VENV/.mmeomt-stamp" && "$(cat "$VENV/.mmeomt-stamp")" == "$want_stamp" ]]; then
  exit 0
fi

start=$(date +%s)
"$PYTHON" -c 'import sys; assert sys.version_info[:2] >= (3, 10), sys.version' \
  || die "need Python >= 3.10 (set PYTHON=...); got $("$PYTHON" --version 2>&1)"
# A stale stamp means the venv may be half-made: remove the stamp first so that an interrupted
# run can never leave a venv that claims to be complete.
rm -f "$VENV/.mmeomt-stamp"
[[ -x "$VENV/bin/python" ]] || { say "creating $VENV"; "$PYTHON" -m venv "$VENV"; }
PY="$VENV/bin/python"
PIP=(pip_quiet "$PY" -m pip --disable-pip-version-check --no-input)
# This machine's pip config lists local index folders that lack most packages; pip warns about
# each one.  Keep the output readable without hiding real errors.
pip_quiet() { "$@" 2> >(grep -v 'is ignored: it is neither a file nor a directory' >&2); }

say "torch $TORCH_VERSION, torchvision $TORCHVISION_VERSION, build tools"
"${PIP[@]}" install -q "torch==$TORCH_VERSION" "torchvision==$TORCHVISION_VERSION" \
  "setuptools>=77,<81" wheel ninja packaging

# ---- mmcv with compiled ops, cached by (mmcv, torch, python) --------------------------------
pytag=$("$PY" -c 'import sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}")')
torch_tag=$("$PY" -c 'import torch; print(torch.__version__.replace("+", "_"))')
# CUDA ops (FORCE_CUDA=1, needs nvcc) and CPU-only builds are different wheels: key them apart.
ops_tag=$([[ "${FORCE_CUDA:-0}" == 1 ]] && echo cudaops || echo cpuops)
wheel_dir="$CACHE/wheels/mmcv-$MMCV_VERSION-torch$torch_tag-$pytag-$(uname -m)-$ops_tag"
if ! compgen -G "$wheel_dir/mmcv-*.whl" >/dev/null; then
  say "building mmcv $MMCV_VERSION with ops against torch $torch_tag (about 11 min on 2 cores)"
  mkdir -p "$CACHE/wheels"
  work=$(mktemp -d "$CACHE/wheels/.build-XXXXXX")
  trap 'rm -rf "$work"' EXIT
  "${PIP[@]}" download -q --no-deps --no-binary :all: --no-build-isolation \
    "mmcv==$MMCV_VERSION" -d "$work/sdist" \
    || die "could not download the mmcv $MMCV_VERSION sdist from the package index"
  tar -xzf "$work"/sdist/mmcv-*.tar.gz -C "$work"
  src=$(echo "$work"/mmcv-"$MMCV_VERSION")
  grep -q -- '-std=c++17' "$src/setup.py" || die "mmcv setup.py no longer pins -std=c++17; review the patch"
  sed -i 's/-std=c++17/-std=c++20/g' "$src/setup.py"
  log="$CACHE/wheels/mmcv-build.log"
  if ! (cd "$src" && MMCV_WITH_OPS=1 FORCE_CUDA=${FORCE_CUDA:-0} MAX_JOBS=${MAX_JOBS:-$(nproc)} \
        "${PIP[@]}" wheel --no-build-isolation --no-deps -w "$work/out" . >"$log" 2>&1); then
    tail -n 40 "$log" >&2
    die "mmcv build failed; full log: $log"
  fi
  # Publish atomically: a reader either sees no wheel dir or a complete one.
  mkdir -p "$work/final" && mv "$work"/out/mmcv-*.whl "$work/final/"
  mv -T "$work/final" "$wheel_dir" 2>/dev/null || [[ -d "$wheel_dir" ]]
  rm -rf "$work"; trap - EXIT
fi
say "installing cached mmcv from $wheel_dir"
"${PIP[@]}" install -q --no-deps --force-reinstall "$wheel_dir"/mmcv-*.whl
"${PIP[@]}" install -q -r "$ROOT/requirements/mminstall.txt" -r "$ROOT/requirements/runtime.txt" \
  -r "$ROOT/requirements/tests.txt"
"${PIP[@]}" install -q -r "$ROOT/requirements/benchmark.txt" -r "$ROOT/requirements/optional.txt"
"${PIP[@]}" install -q -r "$ROOT/requirements/deploy.txt"
"${PIP[@]}" install -q --no-deps -r "$ROOT/requirements/mim.txt"
"${PIP[@]}" install -q --no-deps --no-build-isolation -e "$ROOT"

say "reference implementations for the parity tests -> $VENV/reference"
rm -rf "$VENV/reference"
"${PIP[@]}" install -q --no-deps --target "$VENV/reference" -r "$ROOT/requirements/reference.txt"
# transformers 5.x (DINOv3, EoMT-DINOv3) in a folder of its own: neither mmpretrain nor 4.57.
say "transformers 5 for the DINOv3 parity tests -> $VENV/reference-tf5"
rm -rf "$VENV/reference-tf5"
"${PIP[@]}" install -q --no-deps --target "$VENV/reference-tf5" \
  -r "$ROOT/requirements/reference-tf5.txt"

say "checking imports"
"$PY" - <<'PY' || die "the environment does not import cleanly (see the traceback above)"
import mmcv, mmcv.ops, torch, torchvision
import mmdet.models, mmseg.models, mmpretrain.models
import mmeomt
import onnx, onnxruntime, onnxscript  # requirements/deploy.txt: ONNX export and backend
from mmcv.ops import nms
import torch
nms(torch.rand(4, 4) * 10, torch.rand(4), 0.5)
print('[setup] torch', torch.__version__, '| mmcv', mmcv.__version__, '| mmeomt', mmeomt.__version__)
PY
echo "$want_stamp" >"$VENV/.mmeomt-stamp"
say "environment ready in $(( $(date +%s) - start )) s"
