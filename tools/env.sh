#!/usr/bin/env bash
# Create (once) or reuse the wseg virtual environment, then make `wseg` importable from this checkout.
# The environment lives outside the clone, keyed by the hash of requirements.txt, so fresh clones (CI) reuse it.
# Usage: source tools/env.sh   (sets WSEG_PY to the environment's python)
set -euo pipefail
_wseg_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
_wseg_hash="$(sha256sum "$_wseg_root/requirements.txt" | cut -c1-16)"
WSEG_ENV="${WSEG_ENV_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/wseg/env-$_wseg_hash}"
if [ ! -f "$WSEG_ENV/.complete" ]; then
  echo "[wseg] creating environment $WSEG_ENV (first run downloads torch, a few minutes)" >&2
  rm -rf "$WSEG_ENV"
  python3 -m venv "$WSEG_ENV"
  "$WSEG_ENV/bin/python" -m pip install -q --upgrade pip >&2
  "$WSEG_ENV/bin/python" -m pip install -q -r "$_wseg_root/requirements.txt" >&2
  touch "$WSEG_ENV/.complete"
fi
WSEG_PY="$WSEG_ENV/bin/python"
# Point the environment at this checkout (cheap; a fresh clone in another folder re-points it).
# (checked from / so that the current folder cannot satisfy the import)
if ! (cd / && "$WSEG_PY" -c "import wseg, os, sys; sys.exit(os.path.dirname(os.path.dirname(wseg.__file__)) != '$_wseg_root')") 2>/dev/null; then
  "$WSEG_PY" -m pip install -q --no-deps --no-build-isolation -e "$_wseg_root" >&2
fi
export WSEG_ENV WSEG_PY
