#!/usr/bin/env bash
# Cold run: `berth run --rm REF true` against `podman run --rm REF true`, REF
# a Debian minbase image served by Debian's docker-registry on 127.0.0.1,
# each run from an empty data root (berth) and an empty store (podman): pull,
# unpack, create, start, wait, remove. Target: berth <= 0.3x (ratio of
# hyperfine medians).
#
#   MINBASE_TAR=host RUNS=5 bench/coldrun.sh   # no network: minbase's packages
#                                              # copied from this Debian host
#   MINBASE_TAR=/path/rootfs.tar bench/coldrun.sh
#   bench/coldrun.sh                           # debootstrap (needs deb.debian.org)
#
# podman (Debian's 4.3, runc, conmon) runs with private configuration only:
# CONTAINERS_CONF, CONTAINERS_REGISTRIES_CONF and CONTAINERS_STORAGE_CONF in
# the work directory, its store and run root given per run; the script runs
# in a mount namespace of its own where a private directory hides
# /var/lib/containers (podman keeps its blob-info cache there whatever its
# root). Both sides: `--network none` (no default network to set up), the
# same rlimits (see containers.conf below), cgroupfs, both state directories
# on one tmpfs (as /run on a Debian machine), both data roots on disk.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
. "$ROOT/bench/lib.sh"
[ "$(id -u)" = 0 ] || { echo "bench/coldrun.sh needs root (namespaces, mounts, cgroups)" >&2; exit 1; }
if [ -z "${BERTH_COLDRUN_NS:-}" ]; then
    # Mounts made from here on (the tmpfs, the containers' root file
    # systems, the hidden /var/lib/containers) stay in this namespace.
    BERTH_COLDRUN_NS=1 exec unshare --mount --propagation private "$0" "$@"
fi
RUNS=${RUNS:-5}
WARMUP=${WARMUP:-1}
PORT=${PORT:-15713}
BERTH=${BERTH:-$ROOT/target/x86_64-unknown-linux-gnu/release/berth}
need_tools hyperfine docker-registry podman conmon runc python3 tar
[ -x "$BERTH" ] || (cd "$ROOT" && cargo build --release -p berth-cli)

WORK=$(mktemp -d /var/tmp/berth-bench-coldrun.XXXXXX)
# podman refuses a run root path longer than 50 characters: a short one.
STATE=$(mktemp -d /run/berth-cold.XXXXXX)
mount -t tmpfs -o size=512m tmpfs "$STATE"
# When the last run of this script deleted its trees (see below).
STAMP=/var/tmp/berth-bench-coldrun.cleaned
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    umount_under "$STATE"
    umount_under "$WORK"
    rm -rf "$WORK" "$STATE"
    date +%s >"$STAMP"
}
trap cleanup EXIT

serve_minbase "$WORK" "$PORT"

# podman's private configuration. Its default rlimits fail here: podman asks
# for nofile 1048576 and nproc 4194304, and this machine gives root neither
# CAP_SYS_RESOURCE nor hard limits that high (nofile 20000), so runc's
# prlimit of the container's init fails with EPERM ("error setting rlimit
# type 7"; with nofile lowered, type 6, nproc). podman also lowers its own
# nproc limit to 32768 at start, which caps what its children may set. So:
# nofile 1024 (berth's default, and runc's spec default) and nproc 32768.
mkdir -p "$WORK/containers" "$WORK/podman-tmp" "$WORK/var-lib-containers"
cat >"$WORK/containers/containers.conf" <<EOC
[containers]
default_ulimits = ["nofile=1024:1024", "nproc=32768:32768"]
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "none"
image_copy_tmp_dir = "$WORK/podman-tmp"
EOC
cat >"$WORK/containers/registries.conf" <<EOC
unqualified-search-registries = []
[[registry]]
location = "127.0.0.1:$PORT"
insecure = true
EOC
cat >"$WORK/containers/storage.conf" <<EOC
[storage]
driver = "overlay"
graphroot = "$WORK/podman-unused"
runroot = "$STATE/podman-unused"
EOC
export CONTAINERS_CONF=$WORK/containers/containers.conf
export CONTAINERS_REGISTRIES_CONF=$WORK/containers/registries.conf
export CONTAINERS_STORAGE_CONF=$WORK/containers/storage.conf
[ -d /var/lib/containers ] || mkdir /var/lib/containers
mount --bind "$WORK/var-lib-containers" /var/lib/containers

# Every run gets fresh directories: `next SIDE` (hyperfine's --prepare)
# makes them and records the run's number, which the timed command reads
# with a shell builtin. Nothing is deleted before the end: this ext4 has no
# journal, and inodes deleted within the last 60 s make inode allocation
# crawl (fs/ext4/ialloc.c recently_deleted; see bench/unpack.sh), for
# whichever tool runs then. `sync` writes the previous run's data back
# before the next one starts (neither side syncs what it unpacks).
cat >"$WORK/next" <<EOF
#!/bin/sh
set -e
n=\$(( \$(cat $WORK/\$1.n 2>/dev/null || echo 0) + 1 ))
mkdir -p $WORK/runs/\$1-\$n $STATE/\$1-\$n
echo \$n >$WORK/\$1.n
sync
EOF
cat >"$WORK/berth-cold" <<EOF
#!/bin/sh
read n <$WORK/berth.n
exec $BERTH --root $WORK/runs/berth-\$n run --rm --network none --state-root $STATE/berth-\$n $REF true
EOF
cat >"$WORK/podman-cold" <<EOF
#!/bin/sh
read n <$WORK/podman.n
exec podman --root $WORK/runs/podman-\$n --runroot $STATE/podman-\$n --tmpdir $STATE/podman-\$n/tmp run --rm --network none $REF true
EOF
chmod +x "$WORK/next" "$WORK/berth-cold" "$WORK/podman-cold"

# A run of this script soon after the last one would allocate its inodes
# among the ones that run deleted, which ext4 skips for 60 s, and for 360 s
# while their inode-table block is dirty (which allocating next to them
# makes it): wait that out.
if [ -f "$STAMP" ]; then
    wait_s=$(( $(cat "$STAMP") + 361 - $(date +%s) ))
    if [ "$wait_s" -gt 0 ]; then
        echo "waiting $wait_s s: the last run's trees were deleted less than 361 s ago" >&2
        sleep "$wait_s"
    fi
fi
echo "== cold run of $REF ($(du -h "$TAR" | cut -f1) rootfs), hyperfine --runs $RUNS --warmup $WARMUP, load average $(cut -d' ' -f1-3 /proc/loadavg)"
hyperfine -N --runs "$RUNS" --warmup "$WARMUP" --export-json "$WORK/coldrun.json" \
    --prepare "$WORK/next berth" -n "berth run --rm" "$WORK/berth-cold" \
    --prepare "$WORK/next podman" -n "podman run --rm" "$WORK/podman-cold"
python3 - "$WORK/coldrun.json" <<'EOP'
import json, sys
r = json.load(open(sys.argv[1]))["results"]
b, p = r[0], r[1]
print(f"berth run --rm: median {b['median']:.3f} s (mean {b['mean']:.3f} ± {b['stddev']:.3f}), "
      f"podman run --rm: median {p['median']:.3f} s (mean {p['mean']:.3f} ± {p['stddev']:.3f})")
print(f"ratio of medians {b['median'] / p['median']:.3f}x (target <= 0.3x)")
EOP
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
