#!/usr/bin/env bash
# `berth run --rm IMG true` against `ctr run --rm IMG ID true` (containerd 1.6
# + its runc shim + runc), warm: the same busybox image is imported into both
# and run once before measuring, so layers are unpacked already. containerd
# is a private instance (scratch root, state and socket). Both data roots are
# on disk, both state directories on a tmpfs (as /var/lib/* and /run/* on a
# Debian machine). Both containers get a network namespace with only lo
# (ctr's default; berth's `--network none`, set through BERTH_NETWORK:
# bench/network.sh measures the bridge). hyperfine measures both in one
# run and the ratio berth/ctr is printed (target: <= 0.2).
#
#   bench/run.sh                                   # RUNS=30 WARMUP=3
#   BERTH=target/x86_64-unknown-linux-gnu/release/berth RUNS=50 bench/run.sh
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
. "$ROOT/bench/lib.sh"
RUNS=${RUNS:-30}
WARMUP=${WARMUP:-3}
BERTH=${BERTH:-$ROOT/target/x86_64-unknown-linux-gnu/release/berth}
need_tools hyperfine containerd ctr containerd-shim-runc-v2 runc busybox python3 tar
if [ ! -x "$BERTH" ]; then
    (cd "$ROOT" && cargo build --release -p berth-cli)
fi
[ "$(id -u)" = 0 ] || { echo "bench/run.sh needs root (namespaces, mounts, cgroups)" >&2; exit 1; }

export BERTH_NETWORK=none
WORK=$(mktemp -d /var/tmp/berth-bench-run.XXXXXX)
STATE=$WORK/state
mkdir -p "$STATE"
mount -t tmpfs -o size=64m tmpfs "$STATE"
CPID=
cleanup() {
    [ -n "$CPID" ] && kill "$CPID" 2>/dev/null && wait "$CPID" 2>/dev/null || true
    # Every container was run with --rm, so the shims have exited already.
    grep -o " $WORK[^ ]*" /proc/self/mountinfo | sort -r | while read -r m; do umount -l "$m" 2>/dev/null || true; done
    umount -l "$STATE" 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

# The image: the host's busybox, imported into berth, saved as an OCI archive
# and imported into containerd from that archive.
ROOTFS=$WORK/rootfs
mkdir -p "$ROOTFS/bin" "$ROOTFS/etc" "$ROOTFS/proc" "$ROOTFS/sys" "$ROOTFS/dev" "$ROOTFS/tmp"
cp "$(command -v busybox)" "$ROOTFS/bin/busybox"
for applet in sh true echo; do ln -s busybox "$ROOTFS/bin/$applet"; done
printf 'root:x:0:0:root:/root:/bin/sh\n' > "$ROOTFS/etc/passwd"
printf 'root:x:0:\n' > "$ROOTFS/etc/group"
tar -C "$ROOTFS" -cf "$WORK/busybox.tar" .
B="$BERTH --root $WORK/berth"
export BERTH_STATE_ROOT=$STATE/berth
$B import "$WORK/busybox.tar" bench/busybox:latest >/dev/null 2>&1
$B save -o "$WORK/busybox-oci.tar" bench/busybox:latest

cat > "$WORK/containerd.toml" <<EOF
version = 2
root = "$WORK/containerd-root"
state = "$STATE/containerd"
disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.devmapper", "io.containerd.tracing.processor.v1.otlp",
  "io.containerd.internal.v1.tracing"]
[grpc]
  address = "$WORK/c.sock"
[ttrpc]
  address = "$WORK/c.sock.ttrpc"
[debug]
  address = "$WORK/debug.sock"
[metrics]
  address = ""
[plugins."io.containerd.internal.v1.opt"]
  path = "$WORK/opt"
EOF
containerd --config "$WORK/containerd.toml" >"$WORK/containerd.log" 2>&1 &
CPID=$!
CTR="ctr --address $WORK/c.sock --namespace bench"
for _ in $(seq 1 600); do
    $CTR version >/dev/null 2>&1 && break
    kill -0 "$CPID" 2>/dev/null || { cat "$WORK/containerd.log" >&2; exit 1; }
    sleep 0.1
done
$CTR images import "$WORK/busybox-oci.tar" >/dev/null
IMG=docker.io/bench/busybox:latest
$CTR images ls -q | grep -qx "$IMG" || { echo "containerd did not import $IMG:" >&2; $CTR images ls >&2; exit 1; }

# Sanity (and warm: layers unpacked in both).
[ "$($B run --rm $IMG echo berth-ok)" = berth-ok ]
[ "$($CTR run --rm $IMG bench-ctr echo ctr-ok)" = ctr-ok ]

hyperfine -N --warmup "$WARMUP" --runs "$RUNS" --export-json "$WORK/result.json" \
    -n "berth run" "$B run --rm $IMG true" \
    -n "ctr run" "$CTR run --rm $IMG bench-ctr true"

python3 - "$WORK/result.json" <<'PY'
import json, sys
r = {x["command"]: x for x in json.load(open(sys.argv[1]))["results"]}
b, c = r["berth run"], r["ctr run"]
print(f"berth run --rm: {b['mean']*1000:.2f} ms ± {b['stddev']*1000:.2f} (user {b['user']*1000:.2f} ms, system {b['system']*1000:.2f} ms)")
print(f"ctr run --rm:   {c['mean']*1000:.2f} ms ± {c['stddev']*1000:.2f} (user {c['user']*1000:.2f} ms, system {c['system']*1000:.2f} ms; the daemon's and shim's time is not in these)")
print(f"ratio berth/ctr: {b['mean']/c['mean']:.3f} of means, {b['median']/c['median']:.3f} of medians  (target <= 0.2)")
PY
