#!/bin/sh
# Runs once inside the freshly debootstrapped root (chroot), before it becomes an image.
# Part of the recipe: a change here rebuilds the host images (tests/e2e/hosts.py hashes it).
set -eu

# A non-root login that may do anything through passwordless sudo (mirrorHosts ?sudo=true),
# and is deliberately not in the docker group: without sudo it can change nothing.
useradd --create-home --shell /bin/bash deploy
echo 'deploy ALL=(ALL) NOPASSWD:ALL' > /etc/sudoers.d/deploy
chmod 0440 /etc/sudoers.d/deploy
install -d -m 0700 /root/.ssh
install -d -m 0700 -o deploy -g deploy /home/deploy/.ssh

# Every host made from this image generates its own SSH host keys at boot.
rm -f /etc/ssh/ssh_host_*
# Key logins only.
printf 'PasswordAuthentication no\nKbdInteractiveAuthentication no\nPermitRootLogin prohibit-password\n' \
  > /etc/ssh/sshd_config.d/registry-stack.conf

# Nothing of this is needed to run the engines; a smaller image imports faster.
rm -rf /var/cache/apt/archives/*.deb /var/lib/apt/lists/* /usr/share/doc/* /usr/share/man/* \
  /usr/share/locale/* /usr/share/info/*
