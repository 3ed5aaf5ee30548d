#!/usr/bin/env bash
# Runtime benchmark: `berth-runtime run` against `runc run` of /bin/true in
# the same busybox bundle (pid, net, ipc, uts, mount namespaces, cgroups,
# read-only root: what `runc spec` writes), measured by hyperfine in one
# run. Both get berth's default seccomp profile (containerd's), resolved
# for the bundle's bounding set (SECCOMP=none: no filter on either side).
# Prints the ratio berth/runc (target: <= 0.25).
#
#   bench/runtime.sh                     # RUNS=50 WARMUP=5 SECCOMP=default
#   BERTH=target/x86_64-unknown-linux-gnu/release/berth-runtime RUNS=100 bench/runtime.sh
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
. "$ROOT/bench/lib.sh"
RUNS=${RUNS:-50}
WARMUP=${WARMUP:-5}
SECCOMP=${SECCOMP:-default}
BERTH=${BERTH:-$ROOT/target/x86_64-unknown-linux-gnu/release/berth-runtime}
need_tools hyperfine runc busybox python3
if [ ! -x "$BERTH" ]; then
    (cd "$ROOT" && cargo build --release -p berth-runtime-cli)
fi
[ "$(id -u)" = 0 ] || { echo "bench/runtime.sh needs root (namespaces, cgroups)" >&2; exit 1; }

WORK=$(mktemp -d /tmp/berth-bench-runtime.XXXXXX)
# Both state roots on a tmpfs, as /run (the default --root of both) is on a
# normal Debian machine: state.json writes then cost no disk flush.
STATE=$WORK/state
mkdir -p "$STATE"
mount -t tmpfs -o size=16m tmpfs "$STATE"
# A sealed install: the binary on a read-only bind mount needs no re-exec.
SEALED=$WORK/sealed/berth-runtime
mkdir -p "$WORK/sealed" && touch "$SEALED"
mount --bind "$BERTH" "$SEALED" && mount -o remount,bind,ro "$SEALED"
cleanup() {
    umount "$SEALED" 2>/dev/null || true
    "$BERTH" --root "$STATE/berth-root" delete --force bench-berth >/dev/null 2>&1 || true
    runc --root "$STATE/runc-root" delete --force bench-runc >/dev/null 2>&1 || true
    umount "$STATE" 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

BUNDLE=$WORK/bundle
mkdir -p "$BUNDLE/rootfs/bin" "$BUNDLE/rootfs/proc" "$BUNDLE/rootfs/sys" "$BUNDLE/rootfs/dev"
cp "$(command -v busybox)" "$BUNDLE/rootfs/bin/busybox"
ln -s busybox "$BUNDLE/rootfs/bin/true"
ln -s busybox "$BUNDLE/rootfs/bin/sh"
(cd "$BUNDLE" && runc spec)
PROFILE=$WORK/seccomp.json
case $SECCOMP in
default)
    CAPS=$(python3 -c 'import json,sys; print(" ".join(json.load(open(sys.argv[1]))["process"]["capabilities"]["bounding"]))' "$BUNDLE/config.json")
    # shellcheck disable=SC2086
    (cd "$ROOT" && cargo run -q --release -p berth-engine --example default-seccomp -- $CAPS) > "$PROFILE" ;;
none) echo null > "$PROFILE" ;;
*) echo "SECCOMP must be default or none, not $SECCOMP" >&2; exit 1 ;;
esac
python3 - "$BUNDLE/config.json" "$PROFILE" <<'PY'
import json, sys
path = sys.argv[1]
spec = json.load(open(path))
spec["process"]["terminal"] = False
spec["process"]["args"] = ["/bin/true"]
profile = json.load(open(sys.argv[2]))
if profile is not None:
    spec["linux"]["seccomp"] = profile
json.dump(spec, open(path, "w"), indent=2)
PY

# Sanity: both run the container successfully.
"$BERTH" --root "$STATE/berth-root" run -b "$BUNDLE" bench-berth
runc --root "$STATE/runc-root" run -b "$BUNDLE" bench-runc

hyperfine -N --warmup "$WARMUP" --runs "$RUNS" --export-json "$WORK/result.json" \
    -n berth-runtime "$BERTH --root $STATE/berth-root run -b $BUNDLE bench-berth" \
    -n runc "runc --root $STATE/runc-root run -b $BUNDLE bench-runc" \
    -n berth-runtime-sealed "$SEALED --root $STATE/berth-root run -b $BUNDLE bench-berth"

python3 - "$WORK/result.json" <<'PY'
import json, sys
r = {x["command"]: x for x in json.load(open(sys.argv[1]))["results"]}
b, c, s = r["berth-runtime"], r["runc"], r["berth-runtime-sealed"]
print(f"berth-runtime run: {b['mean']*1000:.2f} ms ± {b['stddev']*1000:.2f} (user {b['user']*1000:.2f} ms, system {b['system']*1000:.2f} ms)")
print(f"runc run:          {c['mean']*1000:.2f} ms ± {c['stddev']*1000:.2f} (user {c['user']*1000:.2f} ms, system {c['system']*1000:.2f} ms)")
print(f"sealed install:    {s['mean']*1000:.2f} ms ± {s['stddev']*1000:.2f} (binary on a read-only mount: no re-exec)")
print(f"ratio berth/runc:  {b['mean']/c['mean']:.3f}  (target <= 0.25)")
print(f"ratio sealed/runc: {s['mean']/c['mean']:.3f}")
PY
