#!/usr/bin/env bash
# Prepare a container builder on a fresh Debian bookworm machine (as root) for the image stage and its tests:
#   1. Docker Engine from Debian (dockerd 20.10 with BuildKit; nothing is started here), and debootstrap;
#   2. a local base image, so no registry is needed: a minimal Debian bookworm root file system with Debian's
#      Python 3.11, packed as a tar that `docker import` turns into an image (the tests import it as
#      localhost/tweetbot-base:bookworm). It is cached: a second run takes a second.
# Where Docker Hub can be pulled from, none of this is needed: the Dockerfile defaults to python:3.11-slim.
set -euo pipefail

cache="${TWEETBOT_IMAGE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/tweetbot-image}"
base_tar="$cache/base-bookworm.tar"

if ! command -v dockerd >/dev/null || ! command -v debootstrap >/dev/null; then
    apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends docker.io debootstrap
fi

if [ ! -s "$base_tar" ]; then
    mkdir -p "$cache"
    # The same Debian mirror apt uses here (a closed network may reach no other).
    mirror="$(apt-get indextargets --format '$(REPO_URI) $(RELEASE)' | awk '$2 == "bookworm" {print $1; exit}')"
    rootfs="$(mktemp -d "$cache/rootfs.XXXXXX")"
    trap 'rm -rf "$rootfs" "$base_tar.partial"' EXIT
    debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
        bookworm "$rootfs" "${mirror:-http://deb.debian.org/debian/}" >"$cache/debootstrap.log"
    # apt's caches and lists are half of a minimal root file system and no use in an image.
    rm -rf "$rootfs"/var/cache/apt/* "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/log/* "$rootfs"/tmp/*
    tar --numeric-owner -C "$rootfs" -cf "$base_tar.partial" .
    mv "$base_tar.partial" "$base_tar"
fi
echo "builder ready: dockerd $(dockerd --version | awk '{print $3}' | tr -d ,), base image tar $base_tar"
