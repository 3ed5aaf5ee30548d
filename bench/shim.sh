#!/usr/bin/env bash
# containerd's shims side by side: `ctr run --rm` of busybox `true` through
# containerd-shim-berth-v2 (berth's runtime linked in) against
# containerd-shim-runc-v2 (exec'ing runc per step), on one private
# containerd started by this script (CRI off, overlayfs snapshotter, state
# under /var/tmp). hyperfine measures both in one run and prints the ratio
# (target <= 0.5). A third command, `ctr container create` + `ctr container
# rm` of the same image (no task, so no shim and no runtime), is the floor
# ctr and containerd cost in both: run minus floor is what the shim and the
# runtime take. The two are then measured again as interleaved A/B pairs
# (less sensitive to the host's load drifting). Then the resident memory (VmRSS, and Pss) of one detached
# container's shim, berth's against runc's (target <= 0.5). Last, containerd
# restarted at debug level, where berth's shim logs how long each runtime
# step (create, start, delete) took: the runtime's share of berth's time,
# the rest being the shim's own.
#
#   bench/shim.sh                  # RUNS=20 WARMUP=3
#   RUNS=40 bench/shim.sh
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
. "$ROOT/bench/lib.sh"
RUNS=${RUNS:-20}
WARMUP=${WARMUP:-3}
SHIM=${SHIM:-$ROOT/target/x86_64-unknown-linux-gnu/release/containerd-shim-berth-v2}
need_tools hyperfine containerd ctr containerd-shim-runc-v2 runc umoci busybox python3 tar
if [ ! -x "$SHIM" ]; then
    (cd "$ROOT" && cargo build --release -p berth-shim)
fi
[ "$(id -u)" = 0 ] || { echo "bench/shim.sh needs root (namespaces, mounts, cgroups)" >&2; exit 1; }

WORK=$(mktemp -d /var/tmp/berth-bench-shim.XXXXXX)
SOCK=$WORK/c.sock
NS=berth-bench-shim-$$
cat > "$WORK/containerd.toml" <<EOF
version = 2
root = "$WORK/root"
state = "$WORK/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "$SOCK"
[ttrpc]
  address = "$SOCK.ttrpc"
[debug]
  address = ""
[metrics]
  address = ""
EOF
PATH="$(dirname "$SHIM"):$PATH" containerd --config "$WORK/containerd.toml" >"$WORK/containerd.log" 2>&1 &
CONTAINERD=$!
CTR="ctr --address $SOCK --namespace $NS"
cleanup() {
    for id in mem-berth mem-runc; do
        $CTR task kill -s SIGKILL "$id" >/dev/null 2>&1 || true
    done
    sleep 0.5
    for id in mem-berth mem-runc; do
        $CTR task delete "$id" >/dev/null 2>&1 || true
        $CTR container rm "$id" >/dev/null 2>&1 || true
    done
    kill "$CONTAINERD" 2>/dev/null || true
    wait "$CONTAINERD" 2>/dev/null || true
    grep -o " $WORK[^ ]*" /proc/self/mountinfo | sort -r | while read -r m; do umount -l "$m" 2>/dev/null || true; done || true
    rm -rf "$WORK"
    # containerd's cgroupsPath is /NAMESPACE/ID: the namespace's cgroups stay.
    for h in /sys/fs/cgroup/*/; do rmdir "$h$NS" 2>/dev/null || true; done
}
trap cleanup EXIT
for _ in $(seq 600); do $CTR version >/dev/null 2>&1 && break; sleep 0.1; done

# The image: the host's busybox in an OCI layout made with umoci.
ROOTFS=$WORK/rootfs
mkdir -p "$ROOTFS/bin" "$ROOTFS/etc" "$ROOTFS/proc" "$ROOTFS/sys" "$ROOTFS/dev" "$ROOTFS/tmp"
cp "$(command -v busybox)" "$ROOTFS/bin/busybox"
for applet in sh sleep true echo; do ln -s busybox "$ROOTFS/bin/$applet"; done
printf 'root:x:0:0:root:/root:/bin/sh\n' > "$ROOTFS/etc/passwd"
printf 'root:x:0:\n' > "$ROOTFS/etc/group"
umoci init --layout "$WORK/oci" >/dev/null
umoci new --image "$WORK/oci:latest" >/dev/null
umoci insert --image "$WORK/oci:latest" "$ROOTFS" / >/dev/null
umoci config --image "$WORK/oci:latest" --config.env PATH=/bin >/dev/null
tar -C "$WORK/oci" -cf "$WORK/busybox-oci.tar" .
$CTR images import --base-name bench/busybox "$WORK/busybox-oci.tar" >/dev/null
IMG=bench/busybox:latest

# Sanity (and warm: the snapshot unpacked once).
[ "$($CTR run --rm --runtime io.containerd.berth.v2 $IMG ok-berth echo berth-ok)" = berth-ok ]
[ "$($CTR run --rm --runtime io.containerd.runc.v2 $IMG ok-runc echo runc-ok)" = runc-ok ]

hyperfine --warmup "$WARMUP" --runs "$RUNS" -N --export-json "$WORK/run.json" \
    -n "berth shim" "$CTR run --rm --runtime io.containerd.berth.v2 $IMG b1 true" \
    -n "runc shim" "$CTR run --rm --runtime io.containerd.runc.v2 $IMG r1 true" \
    -n "floor (no task)" "sh -c '$CTR container create $IMG f1 true && $CTR container rm f1'" \
    -n "ctr version" "$CTR version"
python3 - "$WORK/run.json" <<'EOF'
import json, sys
r = {x["command"]: x for x in json.load(open(sys.argv[1]))["results"]}
b, c, f, v = (r[k]["median"] * 1000 for k in ("berth shim", "runc shim", "floor (no task)", "ctr version"))
print(f"ctr run --rm, medians: berth {b:.1f} ms, runc {c:.1f} ms: ratio {b / c:.3f}")
# The floor runs ctr twice where `ctr run` runs it once: one ctr start-up
# (measured by `ctr version`) comes off.
f1 = f - v
print(f"floor (ctr + containerd, no task, one ctr start-up) {f1:.1f} ms; shim + runtime: berth {b - f1:.1f} ms, runc {c - f1:.1f} ms: ratio {(b - f1) / (c - f1):.3f}")
EOF

# The same two commands as interleaved A/B pairs of whole processes (order
# alternating), so that the host's load drifting during the run (hyperfine
# measures one command's runs, then the other's) weighs on both alike.
python3 - "$RUNS" "$CTR" "$IMG" <<'EOF'
import statistics, subprocess, sys, time
runs, ctr, img = int(sys.argv[1]), sys.argv[2].split(), sys.argv[3]
def once(runtime, id):
    t = time.perf_counter()
    subprocess.run(ctr + ["run", "--rm", "--runtime", runtime, img, id, "true"], check=True)
    return (time.perf_counter() - t) * 1000
times = {"berth": [], "runc": []}
for i in range(runs):
    order = [("berth", "io.containerd.berth.v2"), ("runc", "io.containerd.runc.v2")]
    for name, rt in order if i % 2 == 0 else reversed(order):
        times[name].append(once(rt, f"p{name}"))
b, c = statistics.median(times["berth"]), statistics.median(times["runc"])
print(f"interleaved pairs ({runs}), medians: berth {b:.1f} ms, runc {c:.1f} ms: ratio {b / c:.3f}")
EOF

# Resident memory of one detached container's shim.
$CTR run -d --runtime io.containerd.berth.v2 $IMG mem-berth sleep 1000
$CTR run -d --runtime io.containerd.runc.v2 $IMG mem-runc sleep 1000
sleep 1
shim_pid() {
    for p in /proc/[0-9]*; do
        if tr '\0' ' ' 2>/dev/null < "$p/cmdline" | grep -q "containerd-shim-$1-v2 .*$SOCK"; then
            basename "$p"
            return
        fi
    done
}
kb() { awk -v k="$2:" '$1 == k { print $2 }' "/proc/$1/$3"; }
BP=$(shim_pid berth)
RP=$(shim_pid runc)
BR=$(kb "$BP" VmRSS status); RR=$(kb "$RP" VmRSS status)
BS=$(kb "$BP" Pss smaps_rollup); RS=$(kb "$RP" Pss smaps_rollup)
python3 -c "print(f'shim RSS: berth {$BR} kB, runc {$RR} kB: ratio {$BR / $RR:.3f}; Pss: berth {$BS} kB, runc {$RS} kB: ratio {$BS / $RS:.3f}')"
echo "berth shim: $(grep -E 'RssAnon|RssFile|Threads' /proc/$BP/status | tr -s ' \t' ' ' | tr '\n' ' ')"
echo "runc shim:  $(grep -E 'RssAnon|RssFile|Threads' /proc/$RP/status | tr -s ' \t' ' ' | tr '\n' ' ')"

# The runtime's share: containerd at debug level passes -debug to the shim,
# which then logs each runtime step's time.
for id in mem-berth mem-runc; do $CTR task kill -s SIGKILL "$id" >/dev/null 2>&1 || true; done
sleep 0.5
for id in mem-berth mem-runc; do $CTR task delete "$id" >/dev/null 2>&1 || true; $CTR container rm "$id" >/dev/null 2>&1 || true; done
kill "$CONTAINERD"; wait "$CONTAINERD" 2>/dev/null || true
sed -i '/^\[debug\]$/a\  level = "debug"' "$WORK/containerd.toml"
PATH="$(dirname "$SHIM"):$PATH" containerd --config "$WORK/containerd.toml" >"$WORK/containerd-debug.log" 2>&1 &
CONTAINERD=$!
for _ in $(seq 600); do $CTR version >/dev/null 2>&1 && break; sleep 0.1; done
for i in $(seq "$RUNS"); do $CTR run --rm --runtime io.containerd.berth.v2 $IMG "s$i" true; done
python3 - "$WORK/containerd-debug.log" <<'EOF2'
import re, statistics, sys
steps = {}
for line in open(sys.argv[1], errors="replace"):
    m = re.search(r"runtime step (\w+) (\S+): ([0-9.]+) ms", line)
    if m and m.group(2).startswith("s"):
        steps.setdefault(m.group(1), []).append(float(m.group(3)))
med = {k: statistics.median(v) for k, v in steps.items()}
total = sum(med.values())
print("berth runtime steps, medians: " + ", ".join(f"{k} {v:.1f} ms" for k, v in med.items()) + f"; sum {total:.1f} ms")
EOF2
