#!/usr/bin/env bash
# Detached containers: `berth run -d` + `berth stop` + `berth rm` against
# `podman run -d` + `podman stop` + `podman rm` (podman 4 with runc and
# conmon), warm (the same busybox image in both, run once before measuring),
# `--network none` on both sides (berth's through BERTH_NETWORK;
# bench/network.sh measures the bridge) and explicit rlimits on podman's
# side (see below), cgroupfs, no events. Both data roots on disk, both state
# directories on a tmpfs. hyperfine measures both in one run and prints the
# ratio (target <= 0.2). Then the resident memory (VmRSS, and Pss) of one
# container's berth-monitor against its conmon (target <= 1).
#
#   bench/containers.sh                  # RUNS=20 WARMUP=2
#   RUNS=40 bench/containers.sh
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
. "$ROOT/bench/lib.sh"
RUNS=${RUNS:-20}
WARMUP=${WARMUP:-2}
BERTH=${BERTH:-$ROOT/target/x86_64-unknown-linux-gnu/release/berth}
need_tools hyperfine podman conmon runc busybox python3 tar
if [ ! -x "$BERTH" ] || [ ! -x "$(dirname "$BERTH")/berth-monitor" ]; then
    (cd "$ROOT" && cargo build --release -p berth-cli)
fi
[ "$(id -u)" = 0 ] || { echo "bench/containers.sh needs root (namespaces, mounts, cgroups)" >&2; exit 1; }

WORK=$(mktemp -d /var/tmp/berth-bench-containers.XXXXXX)
STATE=$WORK/state
mkdir -p "$STATE"
mount -t tmpfs -o size=64m tmpfs "$STATE"
B="$BERTH --root $WORK/berth"
export BERTH_NETWORK=none
export BERTH_STATE_ROOT=$STATE/berth
# podman refuses a runroot path longer than 50 characters: /run (a tmpfs).
PRUN=$(mktemp -d /run/berth-bench.XXXXXX)
P="podman --root $WORK/podman --runroot $PRUN --runtime runc --storage-driver overlay --cgroup-manager cgroupfs --events-backend none --tmpdir $PRUN/tmp"
cleanup() {
    $B rm -f bench-mem >/dev/null 2>&1 || true
    $P rm -f -a >/dev/null 2>&1 || true
    grep -o " $WORK[^ ]*" /proc/self/mountinfo | sort -r | while read -r m; do umount -l "$m" 2>/dev/null || true; done
    umount -l "$STATE" 2>/dev/null || true
    grep -o " $PRUN[^ ]*" /proc/self/mountinfo | sort -r | while read -r m; do umount -l "$m" 2>/dev/null || true; done
    rm -rf "$WORK" "$PRUN"
}
trap cleanup EXIT

# The image: the host's busybox, imported into berth, saved as an OCI
# archive and loaded into podman from that archive.
ROOTFS=$WORK/rootfs
mkdir -p "$ROOTFS/bin" "$ROOTFS/etc" "$ROOTFS/proc" "$ROOTFS/sys" "$ROOTFS/dev" "$ROOTFS/tmp"
cp "$(command -v busybox)" "$ROOTFS/bin/busybox"
for applet in sh sleep true echo touch; do ln -s busybox "$ROOTFS/bin/$applet"; done
printf 'root:x:0:0:root:/root:/bin/sh\n' > "$ROOTFS/etc/passwd"
printf 'root:x:0:\n' > "$ROOTFS/etc/group"
tar -C "$ROOTFS" -cf "$WORK/busybox.tar" .
$B import "$WORK/busybox.tar" bench/busybox:latest >/dev/null
$B save -o "$WORK/busybox-oci.tar" bench/busybox:latest
$P load -q -i "$WORK/busybox-oci.tar" >/dev/null
IMG=docker.io/bench/busybox:latest
# A service that exits on SIGTERM at once (the trap interrupts `wait`).
CMD=(sh -c 'trap "exit 0" TERM; sleep 1000 & wait')
# Explicit rlimits: podman's defaults (nofile/nproc 1048576/4194304) are
# above what this sandbox (no CAP_SYS_RESOURCE) may set.
PN="--network none --ulimit nofile=1024:1024 --ulimit nproc=1024:1024"

# Sanity (and warm: layers unpacked in both).
[ "$($B run --rm $IMG echo berth-ok)" = berth-ok ]
[ "$($P run --rm $PN $IMG echo podman-ok)" = podman-ok ]

# Each cycle waits until the container's shell has set its trap (it
# touches a file in a bind-mounted directory; the script spins on the
# shell's builtin test): a stop that came before would find pid 1 without
# a SIGTERM handler, the kernel would drop the signal, and stop would wait
# its full 10 s timeout.
SYNC=$WORK/sync
mkdir -p "$SYNC"
READY='trap "exit 0" TERM; touch /sync/ready; sleep 1000 & wait'
for side in berth podman; do
    if [ $side = berth ]; then RUN="$B run -d"; STOP="$B stop"; RM="$B rm"
    else RUN="$P run -d $PN"; STOP="$P stop"; RM="$P rm"; fi
    cat > "$WORK/$side-cycle" <<EOF
#!/bin/sh
set -e
rm -f $SYNC/ready
$RUN -v $SYNC:/sync --name c $IMG sh -c '$READY' >/dev/null
while [ ! -e $SYNC/ready ]; do :; done
$STOP c >/dev/null
$RM c >/dev/null
EOF
done
chmod +x "$WORK/berth-cycle" "$WORK/podman-cycle"
hyperfine -N --warmup "$WARMUP" --runs "$RUNS" --export-json "$WORK/result.json" \
    -n "berth run -d + stop + rm" "$WORK/berth-cycle" \
    -n "podman run -d + stop + rm" "$WORK/podman-cycle"

python3 - "$WORK/result.json" <<'PY'
import json, sys
r = {x["command"]: x for x in json.load(open(sys.argv[1]))["results"]}
b, p = r["berth run -d + stop + rm"], r["podman run -d + stop + rm"]
print(f"berth:  {b['mean']*1000:.1f} ms ± {b['stddev']*1000:.1f} (median {b['median']*1000:.1f})")
print(f"podman: {p['mean']*1000:.1f} ms ± {p['stddev']*1000:.1f} (median {p['median']*1000:.1f})")
print(f"ratio berth/podman: {b['mean']/p['mean']:.3f} of means, {b['median']/p['median']:.3f} of medians  (target <= 0.2)")
PY

# Memory: one running container each, its monitor's resident set.
$B run -d --name bench-mem $IMG "${CMD[@]}" >/dev/null
$P run -d $PN --name bench-mem $IMG "${CMD[@]}" >/dev/null
sleep 1
BMON=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['owner'][0])" \
    "$(ls "$WORK"/berth/containers/*/container.json | head -1)")
CMON=$($P inspect --format '{{.State.ConmonPid}}' bench-mem)
mem() { awk -v k="$2" '$1==k":" {print $2}' "/proc/$1/$3"; }
BR=$(mem "$BMON" VmRSS status); CR=$(mem "$CMON" VmRSS status)
BP=$(mem "$BMON" Pss smaps_rollup); CP=$(mem "$CMON" Pss smaps_rollup)
echo "berth-monitor (pid $BMON): VmRSS $BR kB, Pss $BP kB"
echo "conmon        (pid $CMON): VmRSS $CR kB, Pss $CP kB"
python3 -c "print(f'ratio berth-monitor/conmon: VmRSS {$BR/$CR:.2f}, Pss {$BP/$CP:.2f}  (target <= 1)')"
