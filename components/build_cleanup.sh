#!/bin/sh
# registry-stack-cleanup: scheduled, safe garbage collection of the build registry.
#
# Installed by registry-stack (components/build_cleanup.py) when buildCleanup is set; its
# settings are in build-cleanup.conf beside it (rendered from the stack's config).
#
#   registry-stack-cleanup serve            the container's entrypoint: runs the registry and,
#                                           at the schedule, the maintenance window
#   registry-stack-cleanup now [--hold S]   runs the window now (asks `serve`), prints the report;
#                                           --hold keeps it read-only S more seconds after the
#                                           garbage collection (a consistent backup of the volume)
#   registry-stack-cleanup now --dry-run    prints what the rules would delete; changes nothing
#   registry-stack-cleanup plan             one line per tag: keep|delete, why, push time, name
#   registry-stack-cleanup untagged         the manifests no tag and no kept manifest needs
#
# Why a window: distribution's garbage collection is stop-the-world, run "with the registry
# stopped or in storage.maintenance.readonly mode" (docs/content/about/garbage-collection.md of
# distribution/distribution). The window:
#  1. writes the maintenance marker: the front answers every write with a clear 405 UNSUPPORTED
#     (a read-only distribution would answer a bare "405 Method Not Allowed" without a registry
#     error: its handlers leave the write methods out of gorilla's MethodHandler,
#     registry/handlers/blobupload.go `if !ctx.readOnly`);
#  2. starts a read-only registry on the same storage on READONLY_PORT and waits until the
#     front's health check has seen it, then stops the writer: the front fails over to the
#     read-only one (renderers._build_proxy), so pulls keep working;
#  3. deletes the tags the retention rules select (their folders under _manifests/tags, as
#     distribution's tag store keeps them), never a protected one;
#  4. deletes the manifests no tag points at any more, except those a kept manifest references
#     (the platform manifests of a multi-platform index), then runs `registry garbage-collect`
#     (with --delete-untagged on 3.x): blobs no manifest references are deleted. The untagged
#     manifests are found here, not by --delete-untagged alone: distribution 2.8.2's deletes the
#     children of a kept index (measured on Debian's 2.8.2 by tests/e2e/test_build_cleanup.py;
#     upstream issue 3178, fixed in 3.x by unmarkReferencedManifest in garbagecollect.go);
#  5. starts the writer again, waits until the front has seen it, removes the marker, stops the
#     read-only registry; writes the report (reports/<id>.json, and the log).
#
# POSIX sh with busybox-style tools: the official registry image is Alpine (busybox); where a
# tool is missing, it is linked to busybox in a private folder.
set -u

CONF=${REGISTRY_STACK_CLEANUP_CONF:-/etc/registry-stack/build-cleanup.conf}
# shellcheck source=/dev/null
. "$CONF"
REPORTS="$STATE_DIR/reports"
REPOSITORIES="$DATA_DIR/docker/registry/v2/repositories"

log() { echo "registry-stack-cleanup: $*" >&2; }

link_missing_tools() {
  busybox=$(command -v busybox 2>/dev/null) || return 0
  tools="$RUN_DIR/bin"
  "$busybox" mkdir -p "$tools"
  for tool in awk cat cp date dirname find grep kill ls mkdir mv rm sed sleep sort stat tail touch wc wget; do
    command -v "$tool" >/dev/null 2>&1 || "$busybox" ln -sf "$busybox" "$tools/$tool"
  done
  PATH="$PATH:$tools"
}

# The clock, in seconds since the epoch (REGISTRY_STACK_CLEANUP_NOW replaces it in tests).
now_seconds() { echo "${REGISTRY_STACK_CLEANUP_NOW:-$(date -u +%s)}"; }
iso_time() { date -u -d "@$1" +%Y-%m-%dT%H:%M:%SZ; }

# -- retention rules ------------------------------------------------------------------------

# The protected pattern that covers repository $1, tag $2 (printed); fails when none does.
# "<tag glob>" covers that tag in every repository, "<repository glob>:<tag glob>" in the
# repositories it matches; `case` globs: * matches any characters ("/" too), ? one.
protecting() {
  set -f
  for pattern in $PROTECTED; do
    case $pattern in
      *:*) subject="$1:$2" ;;
      *) subject=$2 ;;
    esac
    # shellcheck disable=SC2254 # the pattern is a glob on purpose
    case $subject in
      $pattern) set +f; echo "$pattern"; return 0 ;;
    esac
  done
  set +f
  return 1
}

# stdin: "<push time> <repository> <tag>", grouped by repository, newest first;
# stdout: "<keep|delete> <reason> <push time> <repository> <tag>". A tag is deleted only when
# no pattern protects it, KEEP_TAGS newer unprotected tags of its repository exist and it was
# pushed KEEP_DAYS days ago or earlier.
decide() {
  now=$1
  previous=""
  rank=0
  while read -r pushed repository tag; do
    if [ "$repository" != "$previous" ]; then previous=$repository; rank=0; fi
    if pattern=$(protecting "$repository" "$tag"); then
      echo "keep protected:$pattern $pushed $repository $tag"
      continue
    fi
    rank=$((rank + 1))
    age=$((now - pushed))
    if [ "$rank" -le "$KEEP_TAGS" ]; then
      echo "keep newest:$rank $pushed $repository $tag"
    elif [ "$age" -lt $((KEEP_DAYS * 86400)) ]; then
      echo "keep younger-than:${KEEP_DAYS}d $pushed $repository $tag"
    else
      echo "delete older:$((age / 86400))d,rank:$rank $pushed $repository $tag"
    fi
  done
}

# Every tag with its push time: the mtime of _manifests/tags/<tag>/current/link, which the tag
# store rewrites on every push of the tag (registry/storage/tagstore.go Tag -> blobStore.link).
tags_with_push_times() {
  [ -d "$REPOSITORIES" ] || return 0
  find "$REPOSITORIES" -path '*/_manifests/tags/*/current/link' -type f | while read -r link; do
    relative=${link#"$REPOSITORIES"/}
    repository=${relative%%/_manifests/tags/*}
    tag=${relative#*/_manifests/tags/}
    tag=${tag%/current/link}
    echo "$(stat -c %Y "$link") $repository $tag"
  done
}

plan() {
  tags_with_push_times | sort -k2,2 -k1,1nr -k3,3 | decide "$(now_seconds)"
}

# Deletes the tags a plan marks; prints the lines of those it deleted.
delete_tags() {
  while read -r decision reason pushed repository tag; do
    [ "$decision" = delete ] || continue
    # Checked again right where it matters: a protected tag is never removed.
    if protecting "$repository" "$tag" >/dev/null; then continue; fi
    folder="$REPOSITORIES/$repository/_manifests/tags/$tag"
    if rm -rf "$folder"; then
      echo "$decision $reason $pushed $repository $tag"
    else
      log "could not delete $repository:$tag ($folder)"
    fi
  done <"$1"
}

# "<repository> <hex>" of every manifest no tag points at and no kept manifest references, in
# any depth (an index's platform manifests, their indexes' in turn).
untagged_manifests() {
  [ -d "$REPOSITORIES" ] || return 0
  blobs="$DATA_DIR/docker/registry/v2/blobs/sha256"
  scratch="$RUN_DIR/untagged.$$"
  mkdir -p "$RUN_DIR"
  find "$REPOSITORIES" -type d -name _manifests | while read -r manifests; do
    revisions="$manifests/revisions/sha256"
    [ -d "$revisions" ] || continue
    repository=${manifests#"$REPOSITORIES"/}
    repository=${repository%/_manifests}
    # awk, not cat: distribution writes link files without a final newline.
    awk '{ sub(/^sha256:/, ""); print }' "$manifests"/tags/*/current/link 2>/dev/null | sort -u >"$scratch.keep"
    while :; do
      # The manifests the kept ones name (only this repository's manifests are read: small files).
      while read -r hex; do
        data="$blobs/${hex%"${hex#??}"}/$hex/data"
        [ -f "$data" ] && grep -o 'sha256:[0-9a-f]\{64\}' "$data" | sed 's/^sha256://'
      done <"$scratch.keep" | sort -u | while read -r hex; do
        [ -d "$revisions/$hex" ] && echo "$hex"
      done >"$scratch.named"
      sort -u "$scratch.keep" "$scratch.named" >"$scratch.all"
      [ "$(wc -l <"$scratch.all")" -gt "$(wc -l <"$scratch.keep")" ] || break
      mv "$scratch.all" "$scratch.keep"
    done
    ls -1 "$revisions" | while read -r hex; do
      grep -qx "$hex" "$scratch.keep" || echo "$repository $hex"
    done
  done
  rm -f "$scratch.keep" "$scratch.named" "$scratch.all"
}

# Deletes the manifests of file $1 (untagged_manifests' lines): their revision links, and the
# tag histories' entries that name them; garbage-collect then sweeps their blobs.
delete_manifests() {
  while read -r repository hex; do
    rm -rf "$REPOSITORIES/$repository/_manifests/revisions/sha256/$hex"
    for entry in "$REPOSITORIES/$repository"/_manifests/tags/*/index/sha256/"$hex"; do
      [ -e "$entry" ] && rm -rf "$entry"
    done
  done <"$1"
}

# Bytes of everything the registry stores (blobs, manifests, links).
storage_bytes() {
  if [ ! -d "$DATA_DIR/docker" ]; then echo 0; return; fi
  find "$DATA_DIR/docker" -type f -exec stat -c %s {} + | awk '{ total += $1 } END { printf "%d\n", total }'
}

# -- the report ------------------------------------------------------------------------------

# A JSON array of the plan lines in file $1 whose decision is $2 (names need no escaping:
# repository and tag names are [a-z0-9._/-] and [A-Za-z0-9_.-]).
json_entries() {
  separator=""
  printf '['
  while read -r decision reason pushed repository tag; do
    [ "$decision" = "$2" ] || continue
    printf '%s\n    {"repository": "%s", "tag": "%s", "pushed": "%s", "reason": "%s"}' \
      "$separator" "$repository" "$tag" "$(iso_time "$pushed")" "$reason"
    separator=","
  done <"$1"
  printf ']'
}

# A JSON array of the manifests in file $1 (untagged_manifests' lines), as "<repository>@sha256:<hex>".
json_manifests() {
  awk 'BEGIN { printf "[" } { printf "%s\"%s@sha256:%s\"", (NR > 1 ? ", " : ""), $1, $2 } END { printf "]" }' "$1"
}

json_protected() {
  set -f
  separator=""
  printf '['
  for pattern in $PROTECTED; do printf '%s"%s"' "$separator" "$pattern"; separator=", "; done
  printf ']'
  set +f
}

count_lines() { awk -v pattern="$2" 'index($0, pattern) { n++ } END { print n + 0 }' "$1"; }

# write_report ID STATUS ERROR PLAN DELETED UNTAGGED GC_LOG GC_STATUS BEFORE AFTER STARTED READ_ONLY_FROM
write_report() {
  id=$1 report_status=$2 error=$3 plan_file=$4 deleted_file=$5 untagged_file=$6 gc_log=$7 gc_status=$8
  before=$9
  shift 9
  after=$1 started=$2 read_only_from=$3
  finished=$(now_seconds)
  mkdir -p "$REPORTS"
  report="$REPORTS/$id.json"
  {
    printf '{\n  "id": "%s",\n  "dryRun": false,\n  "status": "%s",\n  "error": "%s",\n' "$id" "$report_status" "$error"
    printf '  "started": "%s",\n  "finished": "%s",\n  "readOnlySeconds": %d,\n' \
      "$(iso_time "$started")" "$(iso_time "$finished")" $((finished - read_only_from))
    printf '  "rules": {"keepTags": %d, "keepDays": %d, "protected": %s},\n' "$KEEP_TAGS" "$KEEP_DAYS" \
      "$(json_protected)"
    printf '  "deleted": %s,\n' "$(json_entries "$deleted_file" delete)"
    printf '  "kept": %s,\n' "$(json_entries "$plan_file" keep)"
    printf '  "untaggedManifestsDeleted": %s,\n' "$(json_manifests "$untagged_file")"
    printf '  "garbageCollect": {"exitCode": %d, "blobsDeleted": %d, "manifestsDeleted": %d},\n' "$gc_status" \
      "$(count_lines "$gc_log" "blob eligible for deletion:")" \
      "$(count_lines "$gc_log" "manifest eligible for deletion:")"
    printf '  "storageBytesBefore": %d,\n  "storageBytesAfter": %d,\n  "bytesFreed": %d\n}\n' \
      "$before" "$after" $((before - after))
  } >"$report.tmp"
  mv "$report.tmp" "$report"
  cp "$report" "$STATE_DIR/last-report.json"
  while read -r decision reason pushed repository tag; do
    log "deleted $repository:$tag (pushed $(iso_time "$pushed"), $reason)"
  done <"$deleted_file"
  while read -r repository hex; do log "deleted untagged manifest $repository@sha256:$hex"; done <"$untagged_file"
  log "window $id $report_status${error:+: $error}: $(count_lines "$deleted_file" delete) tags deleted," \
    "$((before - after)) bytes freed ($before before, $after after); report $report"
  # The newest 50 reports stay.
  ls -1t "$REPORTS" | tail -n +51 | while read -r old; do rm -f "$REPORTS/$old"; done
}

dry_run_report() {
  mkdir -p "$RUN_DIR"
  plan_file="$RUN_DIR/dry-run.$$"
  plan >"$plan_file"
  printf '{\n  "dryRun": true,\n  "rules": {"keepTags": %d, "keepDays": %d, "protected": %s},\n' \
    "$KEEP_TAGS" "$KEEP_DAYS" "$(json_protected)"
  printf '  "wouldDelete": %s,\n  "kept": %s\n}\n' "$(json_entries "$plan_file" delete)" \
    "$(json_entries "$plan_file" keep)"
  rm -f "$plan_file"
}

# -- processes -------------------------------------------------------------------------------

REGISTRY_BIN=""
WRITER_PID=""
READONLY_PID=""

registry_binary() {
  # The official image's `registry`; Debian's package names it docker-registry.
  command -v registry 2>/dev/null || command -v docker-registry 2>/dev/null || {
    log "no registry binary (registry or docker-registry) on PATH"
    return 1
  }
}

start_writer() {
  "$REGISTRY_BIN" serve "$REGISTRY_CONFIG" &
  WRITER_PID=$!
}

start_readonly() {
  "$REGISTRY_BIN" serve "$READONLY_CONFIG" &
  READONLY_PID=$!
}

# Waits for process $1 to end (a trapped signal interrupts `wait`; the process may go on).
# sh has no local variables: each function's names are its own (exit_status here).
wait_for_exit() {
  while :; do
    wait "$1"
    exit_status=$?
    kill -0 "$1" 2>/dev/null || return "$exit_status"
  done
}

stop_process() {
  [ -n "$1" ] || return 0
  kill -TERM "$1" 2>/dev/null && wait_for_exit "$1"
  return 0
}

# Waits up to $2 seconds for the registry on port $1 to answer (while process $3 lives).
wait_serving() {
  tries=$2
  while [ "$tries" -gt 0 ]; do
    wget -q -O /dev/null "http://127.0.0.1:$1/v2/" 2>/dev/null && return 0
    kill -0 "$3" 2>/dev/null || return 1
    sleep 1
    tries=$((tries - 1))
  done
  return 1
}

# The run of the window with id $1, held $2 seconds after the collection (see the top of this file).
window() {
  id=$1
  hold=${2:-0}
  work="$RUN_DIR/window"
  rm -rf "$work"
  mkdir -p "$work" "$(dirname "$MARKER")"
  : >"$work/deleted"
  : >"$work/untagged"
  : >"$work/gc.log"
  started=$(now_seconds)
  before=$(storage_bytes)
  log "window $id: the build registry turns read-only (pushes are refused, pulls keep working)"
  touch "$MARKER"
  read_only_from=$(now_seconds)
  start_readonly
  if ! wait_serving "$READONLY_PORT" 60 "$READONLY_PID"; then
    stop_process "$READONLY_PID"
    READONLY_PID=""
    rm -f "$MARKER"
    plan >"$work/plan"
    write_report "$id" failed "the read-only registry did not start: nothing was deleted" "$work/plan" \
      "$work/deleted" "$work/untagged" "$work/gc.log" 0 "$before" "$before" "$started" "$read_only_from"
    return
  fi
  sleep "$GRACE_START"
  stop_process "$WRITER_PID"
  WRITER_PID=""
  plan >"$work/plan"
  delete_tags "$work/plan" >"$work/deleted"
  untagged_manifests >"$work/untagged"
  delete_manifests "$work/untagged"
  # shellcheck disable=SC2086 # GC_FLAGS is zero or more flags
  "$REGISTRY_BIN" garbage-collect $GC_FLAGS "$REGISTRY_CONFIG" >"$work/gc.log" 2>&1 &
  wait_for_exit $!
  gc_status=$?
  after=$(storage_bytes)
  if [ "$hold" -gt 0 ]; then
    log "window $id: held read-only for ${hold}s"
    sleep "$hold"
  fi
  start_writer
  outcome=ok error=""
  if [ "$gc_status" -ne 0 ]; then
    outcome=failed error="garbage-collect exited with $gc_status (its output: docker logs)"
    cat "$work/gc.log" >&2
  fi
  if wait_serving "$PORT" 60 "$WRITER_PID"; then
    sleep "$GRACE_END"
    rm -f "$MARKER"
    stop_process "$READONLY_PID"
    READONLY_PID=""
  else
    # The read-only registry keeps serving pulls; `serve` exits and Docker restarts the container.
    outcome=failed error="the registry did not come back read-write"
  fi
  write_report "$id" "$outcome" "$error" "$work/plan" "$work/deleted" "$work/untagged" "$work/gc.log" "$gc_status" \
    "$before" "$after" "$started" "$read_only_from"
}

# Whether the daily SCHEDULE ("HH:MM", UTC) is due: within SLOT_MINUTES after it, once.
due() {
  case $SCHEDULE in
    [0-2][0-9]:[0-5][0-9]) ;;
    *) return 1 ;;
  esac
  now=$(now_seconds)
  minute=$((now % 86400 / 60))
  target=$(((1${SCHEDULE%:*} - 100) * 60 + 1${SCHEDULE#*:} - 100))
  [ $(((minute - target + 1440) % 1440)) -lt "$SLOT_MINUTES" ] || return 1
  last=$(cat "$STATE_DIR/last-scheduled" 2>/dev/null || echo 0)
  [ $((now - last)) -gt $((SLOT_MINUTES * 60)) ]
}

shutdown() {
  trap '' TERM INT
  for pid in $WRITER_PID $READONLY_PID; do kill -TERM "$pid" 2>/dev/null; done
  for pid in $WRITER_PID $READONLY_PID; do wait_for_exit "$pid"; done
}

serve() {
  REGISTRY_BIN=$(registry_binary) || exit 1
  mkdir -p "$RUN_DIR" "$STATE_DIR"
  # A window cut short (the container was stopped or killed) must not keep pushes refused.
  rm -rf "$MARKER" "$RUN_DIR/request" "$RUN_DIR/window"
  echo $$ >"$RUN_DIR/serve.pid"
  trap 'shutdown; exit 143' TERM INT
  trap ':' USR1  # `now` wakes the loop
  start_writer
  log "serving; cleanup ${SCHEDULE}: keep the newest $KEEP_TAGS tags of each repository, tags younger" \
    "than $KEEP_DAYS days, and tags matching: $PROTECTED"
  while :; do
    if ! kill -0 "$WRITER_PID" 2>/dev/null; then
      wait "$WRITER_PID"
      writer_status=$?
      log "the registry exited with $writer_status"
      shutdown
      exit "$writer_status"
    fi
    id="" hold=0
    if [ -f "$RUN_DIR/request" ]; then
      read -r id hold <"$RUN_DIR/request"
      rm -f "$RUN_DIR/request"
    elif due; then
      now_seconds >"$STATE_DIR/last-scheduled"
      id="scheduled-$(date -u +%Y%m%dT%H%M%SZ)"
    fi
    if [ -n "$id" ]; then
      trap '' USR1  # nothing may interrupt the window's waits; `now` refuses meanwhile
      window "$id" "$hold"
      rm -rf "$RUN_DIR/window"
      trap ':' USR1
    fi
    sleep 5 &
    wait $! 2>/dev/null
  done
}

run_now() {
  hold=0
  case ${1:-} in
    --dry-run) dry_run_report; return ;;
    --hold)
      hold=${2:-}
      case $hold in
        '' | *[!0-9]*) log "--hold takes whole seconds, such as --hold 600"; exit 64 ;;
      esac
      ;;
    '') ;;
    *) log "usage: registry-stack-cleanup now [--dry-run | --hold SECONDS]"; exit 64 ;;
  esac
  pid=$(cat "$RUN_DIR/serve.pid" 2>/dev/null) && kill -0 "$pid" 2>/dev/null || {
    log "no \`registry-stack-cleanup serve\` runs in this container"
    exit 1
  }
  if [ -e "$RUN_DIR/window" ] || [ -e "$RUN_DIR/request" ]; then
    log "a maintenance window is running already: its report will be $STATE_DIR/last-report.json"
    exit 2
  fi
  id="now-$(date -u +%Y%m%dT%H%M%SZ)-$$"
  echo "$id $hold" >"$RUN_DIR/request.tmp"
  mv "$RUN_DIR/request.tmp" "$RUN_DIR/request"
  kill -USR1 "$pid"
  log "window $id requested; waiting for its report"
  waited=0
  while [ ! -f "$REPORTS/$id.json" ]; do
    if [ "$waited" -ge "$NOW_TIMEOUT" ]; then
      log "no report after ${NOW_TIMEOUT}s: see docker logs"
      exit 1
    fi
    sleep 1
    waited=$((waited + 1))
  done
  cat "$REPORTS/$id.json"
  grep -q '"status": "ok"' "$REPORTS/$id.json"
}

link_missing_tools
case ${1:-} in
  serve) serve ;;
  now) shift; run_now "$@" ;;
  plan) plan ;;
  untagged) untagged_manifests ;;
  due) due && echo due || echo "not due" ;;
  *)
    echo "usage: registry-stack-cleanup serve | now [--dry-run | --hold SECONDS] | plan" >&2
    exit 64
    ;;
esac
