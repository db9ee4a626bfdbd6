#!/bin/sh
# The host container's command: make it a machine with its own engine, then wait.
#   registry-stack-host-boot dockerd|containerd|none
# Part of the recipe (tests/e2e/hosts.py hashes it). Logs go to /var/log/<daemon>.log.
set -eu
role="${1:-none}"

# The container starts with /sys and the cgroup hierarchies read-only (the VM cannot run
# --privileged; see shared/reference/platform.md): an engine inside needs them writable.
mount -o remount,rw /sys
for cgroup in $(awk '$3 == "cgroup" {print $2}' /proc/mounts); do
  mount -o remount,bind,rw "$cgroup"
done

# The real upstreams are unreachable from this host: their names lead nowhere. Only the
# stack's cache (and its stand-ins, on the stack's network) can serve an image here.
printf '127.0.0.1 %s  # registry-stack e2e: upstreams unreachable\n' \
  "registry-1.docker.io index.docker.io auth.docker.io docker.io production.cloudflare.docker.com ghcr.io pkg-containers.githubusercontent.com quay.io cdn.quay.io" \
  >> /etc/hosts

ssh-keygen -A >/dev/null
mkdir -p /run/sshd
/usr/sbin/sshd -E /var/log/sshd.log

wait_for() {  # wait_for <seconds> <command...>
  limit=$1; shift
  i=0
  until "$@" >/dev/null 2>&1; do
    i=$((i + 1))
    if [ "$i" -gt $((limit * 5)) ]; then echo "boot: '$*' never succeeded" >&2; return 1; fi
    sleep 0.2
  done
}

case "$role" in
  dockerd)
    dockerd >/var/log/dockerd.log 2>&1 &
    wait_for 60 docker info
    ;;
  containerd)
    containerd >/var/log/containerd.log 2>&1 &
    wait_for 60 ctr version
    ;;
  none) ;;
  *) echo "boot: unknown role $role" >&2; exit 2 ;;
esac
touch /run/registry-stack-host.ready
exec sleep infinity
