# registry-stack: start of a cache that has pinned images (components/prewarm.py renders the values).
# Before the registry starts, and again while it runs, pinned entries are dropped from the
# proxy's TTL scheduler state (pins.awk says why this works and where the file is). The
# scheduler reads its state only at start, so once a pinned digest was fetched from the
# upstream again (a first pre-warm, a moved tag), the registry is restarted to forget it:
# checked every @CHECK_SECONDS@ s, and only while the upstream answers, because distribution
# exits at start when its upstream is unreachable (issue 4038).
STATE='@STATE@'
PINS='@PINS@'
STORE='@STORE@'
AWK_SCRIPT='@AWK_SCRIPT@'
CONFIG='@CONFIG@'
UPSTREAM='@UPSTREAM@'
CHECK_ROUNDS=@CHECK_ROUNDS@
TICK=@TICK_SECONDS@

pins() {  # $1 strip|check
  [ -f "$STATE" ] && [ -f "$PINS" ] || return 1
  awk -v mode="$1" -v pins="$PINS" -v store="$STORE" -v state="$STATE" -f "$AWK_SCRIPT" || return 1
  if [ "$1" = strip ] && [ -f "$STATE.tmp" ]; then mv "$STATE.tmp" "$STATE"; fi
  return 0
}

upstream_answers() {  # any HTTP answer (Docker Hub's /v2/ is a 401) within 10 s
  wget -S -q -O /dev/null "$UPSTREAM" >/tmp/upstream.out 2>&1 &
  pid=$!
  (sleep 10; kill "$pid") >/dev/null 2>&1 </dev/null &
  timer=$!
  wait "$pid" 2>/dev/null
  kill "$timer" 2>/dev/null
  case "$(cat /tmp/upstream.out)" in *HTTP/*) return 0 ;; esac
  return 1
}

# The official image runs /bin/registry; the e2e test bed's Debian build is docker-registry.
binary=registry
command -v registry >/dev/null 2>&1 || binary=docker-registry

start() { "$binary" serve "$CONFIG" & registry=$!; }
stop() { kill -TERM "$registry" 2>/dev/null; wait "$registry" 2>/dev/null; }
trap 'stop; exit 0' TERM INT

pins strip
start
rounds=0
while :; do
  sleep "$TICK" & wait $!
  if ! kill -0 "$registry" 2>/dev/null; then
    wait "$registry"
    exit $?  # the container exits with the registry: its restart policy applies as before
  fi
  rounds=$((rounds + 1))
  [ "$rounds" -ge "$CHECK_ROUNDS" ] || continue
  rounds=0
  if pins check && upstream_answers; then
    echo "registry-stack: pinned digests were fetched again; restarting the registry to drop them from its TTL scheduler"
    stop
    pins strip
    start
  fi
done
