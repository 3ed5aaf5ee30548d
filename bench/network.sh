#!/usr/bin/env bash
# `berth run --rm IMG true` on berth's default bridge network against
# `podman run --rm IMG true` on podman's default network (podman 4 with its
# CNI backend and runc; cgroupfs, no events), warm: the same busybox image
# in both, run once before measuring (which also creates both default
# networks and their bridges). Both go through the same CNI plugins from
# /usr/lib/cni (bridge + host-local, portmap, firewall; podman adds
# tuning). Both data roots on disk, both state directories on a tmpfs.
# hyperfine measures berth, podman and `berth run --network none` in one
# run and prints berth/podman (target <= 0.35) and what the network costs
# berth. Then `berth -D` runs the same command RUNS times and sums the
# time each CNI plugin took (its debug log) against the wall time of the
# run: the share of berth's time the plugins take.
#
#   bench/network.sh                  # RUNS=20 WARMUP=3
#   RUNS=40 bench/network.sh
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
. "$ROOT/bench/lib.sh"
RUNS=${RUNS:-20}
WARMUP=${WARMUP:-3}
BERTH=${BERTH:-$ROOT/target/x86_64-unknown-linux-gnu/release/berth}
need_tools hyperfine podman conmon runc busybox python3 tar iptables
if [ ! -x "$BERTH" ]; then
    (cd "$ROOT" && cargo build --release -p berth-cli)
fi
[ "$(id -u)" = 0 ] || { echo "bench/network.sh needs root (namespaces, bridges, iptables)" >&2; exit 1; }

WORK=$(mktemp -d /var/tmp/berth-bench-network.XXXXXX)
STATE=$WORK/state
mkdir -p "$STATE"
mount -t tmpfs -o size=64m tmpfs "$STATE"
B="$BERTH --root $WORK/berth"
export BERTH_STATE_ROOT=$STATE/berth
unset BERTH_NETWORK
PRUN=$(mktemp -d /run/berth-bench.XXXXXX)
P="podman --root $WORK/podman --runroot $PRUN --runtime runc --storage-driver overlay --cgroup-manager cgroupfs --events-backend none --tmpdir $PRUN/tmp"
PODMAN_BRIDGE_BEFORE=$([ -e /sys/class/net/cni-podman0 ] && echo yes || echo no)
cleanup() {
    $B network rm berth >/dev/null 2>&1 || true
    $P rm -f -a >/dev/null 2>&1 || true
    [ "$PODMAN_BRIDGE_BEFORE" = yes ] || ip link delete cni-podman0 2>/dev/null || true
    grep -o " $WORK[^ ]*" /proc/self/mountinfo | sort -r | while read -r m; do umount -l "$m" 2>/dev/null || true; done
    umount -l "$STATE" 2>/dev/null || true
    grep -o " $PRUN[^ ]*" /proc/self/mountinfo | sort -r | while read -r m; do umount -l "$m" 2>/dev/null || true; done
    rm -rf "$WORK" "$PRUN"
}
trap cleanup EXIT

ROOTFS=$WORK/rootfs
mkdir -p "$ROOTFS/bin" "$ROOTFS/etc" "$ROOTFS/proc" "$ROOTFS/sys" "$ROOTFS/dev" "$ROOTFS/tmp"
cp "$(command -v busybox)" "$ROOTFS/bin/busybox"
for applet in sh true ip; do ln -s busybox "$ROOTFS/bin/$applet"; done
printf 'root:x:0:0:root:/root:/bin/sh\n' > "$ROOTFS/etc/passwd"
printf 'root:x:0:\n' > "$ROOTFS/etc/group"
tar -C "$ROOTFS" -cf "$WORK/busybox.tar" .
$B import "$WORK/busybox.tar" bench/busybox:latest >/dev/null
$B save -o "$WORK/busybox-oci.tar" bench/busybox:latest
$P load -q -i "$WORK/busybox-oci.tar" >/dev/null
IMG=docker.io/bench/busybox:latest
# Explicit rlimits: podman's defaults are above what this sandbox may set.
PN="--ulimit nofile=1024:1024 --ulimit nproc=1024:1024"

# Sanity (and warm): both containers have an address on a bridge.
$B run --rm $IMG ip -o -4 addr show eth0 | grep -q 'inet 10\.'
$P run --rm $PN $IMG ip -o -4 addr show eth0 | grep -q 'inet 10\.'

hyperfine -N --warmup "$WARMUP" --runs "$RUNS" --export-json "$WORK/result.json" \
    -n "berth run --rm (bridge)" "$B run --rm $IMG true" \
    -n "podman run --rm (bridge)" "$P run --rm $PN $IMG true" \
    -n "berth run --rm --network none" "$B run --rm --network none $IMG true"

python3 - "$WORK/result.json" <<'PY'
import json, sys
r = {x["command"]: x for x in json.load(open(sys.argv[1]))["results"]}
b, p, n = (r[k] for k in ["berth run --rm (bridge)", "podman run --rm (bridge)", "berth run --rm --network none"])
for name, x in [("berth (bridge)", b), ("podman (bridge)", p), ("berth (none)", n)]:
    print(f"{name:16} {x['mean']*1000:.1f} ms ± {x['stddev']*1000:.1f} (median {x['median']*1000:.1f})")
print(f"ratio berth/podman: {b['mean']/p['mean']:.3f} of means, {b['median']/p['median']:.3f} of medians  (target <= 0.35)")
print(f"the bridge network costs berth {(b['median']-n['median'])*1000:.1f} ms of {b['median']*1000:.1f} (medians)")
PY

# The plugins' share: each plugin's time from berth's debug log.
python3 - "$RUNS" $B run --rm $IMG true <<'PY'
import re, subprocess, sys, time, collections
runs, cmd = int(sys.argv[1]), sys.argv[2:]
cmd = cmd[:1] + ["-D"] + cmd[1:]
total, plugins, each = 0.0, 0.0, collections.defaultdict(float)
for _ in range(runs):
    t = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    total += time.perf_counter() - t
    for line in out.stderr.splitlines():
        line = re.sub(r"\x1b\[[0-9;]*m", "", line)  # the log's colours
        m = re.search(r'CNI plugin ran plugin="?([\w-]+)"? command="?(\w+)"? micros=(\d+)', line)
        if m:
            plugins += int(m[3]) / 1e6
            each[f"{m[1]} {m[2]}"] += int(m[3]) / 1e6
print(f"CNI plugins: {plugins/runs*1000:.1f} ms of {total/runs*1000:.1f} ms per berth run ({plugins/total*100:.0f} %)")
for k, v in sorted(each.items(), key=lambda kv: -kv[1]):
    print(f"  {k:16} {v/runs*1000:.1f} ms")
PY
