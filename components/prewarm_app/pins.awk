# Drop pinned entries from distribution's proxy scheduler state, so the TTL never expires them.
# POSIX awk (busybox awk in the official registry image); run by the cache's start script:
#   awk -v mode=strip|check -v pins=<pins file> -v store=<storage>/docker/registry/v2 \
#       -v state=<storage>/scheduler-state.json -f pins.awk
#
# The state file, from distribution's registry/proxy/scheduler/scheduler.go (2.8 and 3.x alike):
# the proxy keeps it at "/scheduler-state.json" of its storage driver (proxyregistry.go,
# `scheduler.New(ctx, driver, "/scheduler-state.json")`), i.e. <rootdirectory>/scheduler-state.json;
# `writeState` is `json.Marshal(map[string]*schedulerEntry)`, one line:
#   {"<repo>@<digest>":{"Key":"<repo>@<digest>","ExpiryData":"<RFC 3339>","EntryType":0|1},...}
# (EntryType 0 a blob, 1 a manifest). `readState` loads it once, in `Start`, when the registry
# starts; every 5 s the registry rewrites it from memory. So an entry removed here before the
# registry starts is never scheduled again, unless the proxy fetches that digest from the
# upstream again (it adds an entry on every fetch, proxymanifeststore.go / proxyblobstore.go).
#
# Pinned keys: for `repo@digest` and `repo:tag` (the tag's current link in the storage), the
# manifest, and every digest its stored bytes name (config, layers; for an index its platform
# manifests, followed one level down when the repository holds them as manifests).
# mode=strip writes <state>.tmp without the pinned entries and prints what it dropped;
# mode=check exits 0 when the state holds a pinned entry, 1 otherwise. Nothing else is touched.

function readfile(path,    line, text) {
    text = ""
    while ((getline line < path) > 0) text = text line "\n"
    close(path)
    return text
}

function trim(text) {
    gsub(/^[ \t\r\n]+|[ \t\r\n]+$/, "", text)
    return text
}

function is_manifest(repo, digest,    parts) {
    split(digest, parts, ":")
    return readfile(store "/repositories/" repo "/_manifests/revisions/" parts[1] "/" parts[2] "/link") != ""
}

function pin_manifest(repo, digest, depth,    parts, text, found) {
    pinned[repo "@" digest] = 1
    split(digest, parts, ":")
    text = readfile(store "/blobs/" parts[1] "/" substr(parts[2], 1, 2) "/" parts[2] "/data")
    while (match(text, /sha(256|512):[a-f0-9]+/)) {
        found = substr(text, RSTART, RLENGTH)
        text = substr(text, RSTART + RLENGTH)
        if ((repo "@" found) in pinned) continue
        pinned[repo "@" found] = 1
        if (depth < 2 && is_manifest(repo, found)) pin_manifest(repo, found, depth + 1)
    }
}

function pin(reference,    at, repo, tag, colon, digest) {
    at = index(reference, "@")
    if (at > 0) {
        pin_manifest(substr(reference, 1, at - 1), substr(reference, at + 1), 0)
        return
    }
    colon = match(reference, /:[^:\/]+$/)
    if (!colon) return
    repo = substr(reference, 1, RSTART - 1)
    tag = substr(reference, RSTART + 1)
    digest = trim(readfile(store "/repositories/" repo "/_manifests/tags/" tag "/current/link"))
    if (digest != "") pin_manifest(repo, digest, 0)
}

BEGIN {
    while ((getline line < pins) > 0) {
        line = trim(line)
        if (line != "" && substr(line, 1, 1) != "#") pin(line)
    }
    close(pins)
    body = trim(readfile(state))
    if (body == "") exit (mode == "check" ? 1 : 0)
    sub(/^\{/, "", body)
    sub(/\}$/, "", body)
    count = split(body, parts, /\},/)
    kept = ""
    dropped = 0
    for (i = 1; i <= count; i++) {
        part = parts[i]
        if (i < count) part = part "}"
        if (part == "") continue
        key = ""
        if (match(part, /^"[^"]*"/)) key = substr(part, 2, RLENGTH - 2)
        if (key in pinned) {
            dropped++
            if (mode == "strip") print "pinned, never expires: " key
            continue
        }
        kept = kept (kept == "" ? "" : ",") part
    }
    if (mode == "check") exit (dropped > 0 ? 0 : 1)
    if (dropped > 0) {
        printf "{%s}", kept > (state ".tmp")
        close(state ".tmp")
    }
    exit 0
}
