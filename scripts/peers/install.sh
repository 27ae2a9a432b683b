#!/usr/bin/env bash
# Installs the peers' npm packages (exact versions from package.json) into
# scripts/peers/node_modules (gitignored), once.
set -euo pipefail
cd "$(dirname "$0")"
bun=node_modules/@oven/bun-linux-x64/bin/bun
if [ -x "$bun" ] && [ -f node_modules/ws/package.json ] && [ -f node_modules/socket.io/package.json ] && [ node_modules -nt package.json ]; then
  exit 0
fi
echo "installing peer npm packages into $(pwd)/node_modules" >&2
npm install --no-audit --no-fund --no-package-lock >&2
touch node_modules
