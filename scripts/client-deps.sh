#!/usr/bin/env bash
# Installs the pinned third-party clients that the client-interoperability tests drive
# (tests/clients/): a Python venv at tests/clients/.venv and node_modules under
# tests/clients/node. Idempotent: a stamp file records what was installed, so a second
# run with unchanged pins does nothing. Any failure exits non-zero (the tests then fail
# loudly; they never skip).
set -euo pipefail
cd "$(dirname "$0")/.."

clients=tests/clients
venv="$clients/.venv"
req="$clients/python/requirements.txt"
pkg="$clients/node/package.json"

python=${PYTHON:-python3}
stamp_py="$venv/.installed"
if [[ ! -f "$stamp_py" ]] || ! cmp -s "$req" "$stamp_py"; then
  echo "client-deps: installing Python clients into $venv" >&2
  rm -rf "$venv"
  "$python" -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$req"
  cp "$req" "$stamp_py"
fi

stamp_node="$clients/node/node_modules/.installed"
if [[ ! -f "$stamp_node" ]] || ! cmp -s "$pkg" "$stamp_node"; then
  echo "client-deps: installing node clients into $clients/node/node_modules" >&2
  (cd "$clients/node" && npm ci --no-audit --no-fund --loglevel=error)
  cp "$pkg" "$stamp_node"
fi
