#!/usr/bin/env bash
# Rootless `berth run --rm IMG true` against rootless `podman run --rm
# --network none IMG true` (Debian's podman with runc and its own user
# namespace pause process), warm, both as a temporary unprivileged user the
# script makes (useradd with a subordinate id range; removed at exit). Both
# load the same busybox OCI archive and run it once before measuring.
# hyperfine measures both in one run and prints the ratio berth/podman.
#
#   bench/rootless.sh                              # RUNS=20 WARMUP=3
#   BERTH=target/x86_64-unknown-linux-gnu/release/berth RUNS=50 bench/rootless.sh
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
. "$ROOT/bench/lib.sh"
RUNS=${RUNS:-20}
WARMUP=${WARMUP:-3}
BERTH=${BERTH:-$ROOT/target/x86_64-unknown-linux-gnu/release/berth}
need_tools hyperfine podman setpriv useradd userdel newuidmap newgidmap busybox python3 tar
if [ ! -x "$BERTH" ]; then
    (cd "$ROOT" && cargo build --release -p berth-cli)
fi
[ "$(id -u)" = 0 ] || { echo "bench/rootless.sh needs root (to make and remove its user)" >&2; exit 1; }

NAME=berthbench$$
# Short: conmon puts sockets under the storage path (sun_path holds 108 bytes).
WORK=$(mktemp -d /var/tmp/brl.XXXXXX)
useradd --no-create-home --user-group --home-dir "$WORK" --shell /bin/sh \
    -K SUB_UID_COUNT=65536 -K SUB_GID_COUNT=65536 "$NAME"
cleanup() {
    # podman's pause process holds its user namespace; end it by its pid.
    pause=$WORK/run/libpod/tmp/pause.pid
    [ -f "$pause" ] && kill -9 "$(cat "$pause")" 2>/dev/null || true
    sleep 0.2
    userdel "$NAME" 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT
mkdir -p "$WORK/run" "$WORK/bin"
chmod 700 "$WORK/run"
cp "$BERTH" "$(dirname "$BERTH")/berth-monitor" "$WORK/bin/"

# The image: the host's busybox as a one-layer OCI archive, made by berth.
ROOTFS=$WORK/rootfs
mkdir -p "$ROOTFS/bin" "$ROOTFS/etc" "$ROOTFS/proc" "$ROOTFS/sys" "$ROOTFS/dev" "$ROOTFS/tmp"
cp "$(command -v busybox)" "$ROOTFS/bin/busybox"
for applet in sh true echo; do ln -s busybox "$ROOTFS/bin/$applet"; done
printf 'root:x:0:0:root:/root:/bin/sh\n' > "$ROOTFS/etc/passwd"
printf 'root:x:0:\n' > "$ROOTFS/etc/group"
tar -C "$ROOTFS" -cf "$WORK/busybox.tar" .
chown -R "$NAME:$NAME" "$WORK"
AS="setpriv --reuid=$(id -u "$NAME") --regid=$(id -g "$NAME") --clear-groups env -i HOME=$WORK XDG_RUNTIME_DIR=$WORK/run PATH=/usr/bin:/bin"
B="$AS $WORK/bin/berth --root $WORK/berth"
P="$AS podman --cgroup-manager cgroupfs --events-backend file"
$B import "$WORK/busybox.tar" bench/busybox:latest >/dev/null 2>&1
$B save -o "$WORK/busybox-oci.tar" bench/busybox:latest
IMG=$($P pull -q "oci-archive:$WORK/busybox-oci.tar" | tail -n1)

# Sanity (and warm: layers unpacked in both).
[ "$($B run --rm bench/busybox echo berth-ok)" = berth-ok ]
[ "$($P run --rm --network none "$IMG" echo podman-ok)" = podman-ok ]

hyperfine -N --warmup "$WARMUP" --runs "$RUNS" --export-json "$WORK/result.json" \
    -n "berth run" "$B run --rm bench/busybox true" \
    -n "podman run" "$P run --rm --network none $IMG true"

python3 - "$WORK/result.json" <<'PY'
import json, sys
r = {x["command"]: x for x in json.load(open(sys.argv[1]))["results"]}
b, p = r["berth run"], r["podman run"]
for name, x in (("berth run --rm", b), ("podman run --rm", p)):
    print(f"{name} (rootless): {x['mean']*1000:.2f} ms ± {x['stddev']*1000:.2f} (median {x['median']*1000:.2f} ms)")
print(f"ratio berth/podman: {b['mean']/p['mean']:.3f} of means, {b['median']/p['median']:.3f} of medians")
PY
