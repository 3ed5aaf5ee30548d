#!/usr/bin/env bash
# Registry benchmark: `berth registry serve` against Debian's docker-registry
# (CNCF distribution) on the same machine, same loopback, same disk.
#
#   1. manifest GET req/s (wrk)               target: berth >= 5x
#   2. blob GET throughput, 64 MiB blob (wrk) target: berth >= 1x
#   3. peak resident memory under that load   target: berth <= 0.25x
#   4. `skopeo copy` push of a Debian minbase image (hyperfine, fresh
#      storage before every run)              target: berth <= 0.7x the time
#   5. the same push in ROUNDS interleaved rounds (berth, docker-registry
#      and bench/null-registry.py, a server that stores nothing: the floor
#      set by skopeo itself), order rotated each round; medians
#
# Access logs are off in both servers. Prints each number and the ratio.
#
#   bench/registry.sh                      # WORK=/var/tmp/berth-bench-registry
#   DURATION=10 CONNS=32 RUNS=5 bench/registry.sh
#   MINBASE=/path/to/rootfs bench/registry.sh   # reuse an existing rootfs
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
. "$ROOT/bench/lib.sh"
WORK=${WORK:-/var/tmp/berth-bench-registry}
DURATION=${DURATION:-10}
CONNS=${CONNS:-32}
RUNS=${RUNS:-5}
ROUNDS=${ROUNDS:-15}
BERTH=${BERTH:-$ROOT/target/x86_64-unknown-linux-gnu/release/berth}
PORT_B=${PORT_B:-15701}
PORT_D=${PORT_D:-15702}
PORT_N=${PORT_N:-15703}
need_tools wrk hyperfine skopeo umoci docker-registry python3
[ -x "$BERTH" ] || (cd "$ROOT" && cargo build --release -p berth-cli)
mkdir -p "$WORK"

PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

start_servers() {
    rm -rf "$WORK/berth-storage" "$WORK/dist-storage"
    mkdir -p "$WORK/berth-storage" "$WORK/dist-storage"
    cat > "$WORK/berth.yml" <<EOF
addr: 127.0.0.1:$PORT_B
storage:
  root: $WORK/berth-storage
log:
  access: false
gc:
  enabled: false
EOF
    cat > "$WORK/dist.yml" <<EOF
version: 0.1
log:
  level: error
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $WORK/dist-storage
  delete:
    enabled: true
http:
  addr: 127.0.0.1:$PORT_D
EOF
    "$BERTH" registry serve --config "$WORK/berth.yml" 2>"$WORK/berth.log" &
    BERTH_PID=$!
    /usr/bin/docker-registry serve "$WORK/dist.yml" >"$WORK/dist.log" 2>&1 &
    DIST_PID=$!
    python3 "$ROOT/bench/null-registry.py" "$PORT_N" &
    PIDS+=("$BERTH_PID" "$DIST_PID" $!)
    for port in $PORT_B $PORT_D $PORT_N; do
        for _ in $(seq 100); do
            python3 -c "import socket,sys; socket.create_connection(('127.0.0.1',$port),1)" 2>/dev/null && break
            sleep 0.1
        done
    done
}

# --- images --------------------------------------------------------------
SMALL=$WORK/busybox-layout
if [ ! -f "$SMALL/index.json" ]; then
    rm -rf "$SMALL" "$WORK/busybox-rootfs"
    mkdir -p "$WORK/busybox-rootfs/bin"
    cp /bin/busybox "$WORK/busybox-rootfs/bin/busybox"
    umoci init --layout "$SMALL" && umoci new --image "$SMALL:latest"
    umoci insert --image "$SMALL:latest" "$WORK/busybox-rootfs" /
fi
BIG=$WORK/minbase-layout
if [ ! -f "$BIG/index.json" ]; then
    SRC=${MINBASE:-$WORK/minbase}
    if [ ! -d "$SRC/usr" ]; then
        if ! debootstrap --variant=minbase bookworm "$SRC" http://deb.debian.org/debian; then
            echo "debootstrap failed; using a subset of the host's /usr instead" >&2
            rm -rf "$SRC" && mkdir -p "$SRC"
            tar -C / -cf - usr/lib/x86_64-linux-gnu usr/share/perl usr/bin 2>/dev/null | tar -C "$SRC" -xf -
        fi
        rm -rf "$SRC"/var/cache/apt/archives/*.deb "$SRC"/var/lib/apt/lists/*
    fi
    rm -rf "$BIG"
    umoci init --layout "$BIG" && umoci new --image "$BIG:latest"
    umoci insert --image "$BIG:latest" "$SRC" /
fi
head -c $((64 * 1024 * 1024)) /dev/urandom > "$WORK/blob.bin"
BLOB_DIGEST=sha256:$(sha256sum "$WORK/blob.bin" | cut -d' ' -f1)

start_servers
for port in $PORT_B $PORT_D; do
    skopeo copy -q --dest-tls-verify=false "oci:$SMALL:latest" "docker://127.0.0.1:$port/bench/busybox:latest" >/dev/null
    python3 - "$port" "$WORK/blob.bin" "$BLOB_DIGEST" <<'EOF'
import http.client, sys
port, path, digest = int(sys.argv[1]), sys.argv[2], sys.argv[3]
data = open(path, "rb").read()
c = http.client.HTTPConnection("127.0.0.1", port)
c.request("POST", "/v2/bench/busybox/blobs/uploads/")
r = c.getresponse(); r.read()
loc = r.getheader("Location")
if loc.startswith("http"):
    loc = "/" + loc.split("/", 3)[3]
sep = "&" if "?" in loc else "?"
c.request("PUT", f"{loc}{sep}digest={digest}", body=data, headers={"Content-Type": "application/octet-stream"})
r = c.getresponse(); r.read()
assert r.status == 201, r.status
EOF
done

ACCEPT='Accept: application/vnd.oci.image.manifest.v1+json'
rps() { wrk -t2 -c"$CONNS" -d"${DURATION}s" -H "$ACCEPT" "$1" | awk '/Requests\/sec/ {print $2}'; }
mbps() {
    wrk -t2 -c4 -d"${DURATION}s" "$1" | awk '/Transfer\/sec/ {v=$2; u=substr(v, length(v)-1); n=substr(v, 1, length(v)-2);
        if (u=="GB") n*=1024; else if (u=="KB") n/=1024; print n}'
}
hwm() { awk '/VmHWM/ {print $2}' "/proc/$1/status"; }

# report TITLE UNIT TARGET BERTH DIST: both numbers and berth/dist.
report() {
    echo "== $1"
    echo "berth           $4 $2"
    echo "docker-registry $5 $2"
    echo "ratio           $(python3 -c "print(round($4/$5, 3))")x (target $3)"
}

M=v2/bench/busybox/manifests/latest
report "manifest GET, wrk -t2 -c$CONNS -d${DURATION}s" req/s ">= 5x" \
    "$(rps "http://127.0.0.1:$PORT_B/$M")" "$(rps "http://127.0.0.1:$PORT_D/$M")"
B=v2/bench/busybox/blobs/$BLOB_DIGEST
report "blob GET (64 MiB), wrk -t2 -c4 -d${DURATION}s" MB/s ">= 1x" \
    "$(mbps "http://127.0.0.1:$PORT_B/$B")" "$(mbps "http://127.0.0.1:$PORT_D/$B")"
report "peak resident memory (VmHWM) after both loads" kB "<= 0.25x" "$(hwm "$BERTH_PID")" "$(hwm "$DIST_PID")"

FRESH="rm -rf $WORK/berth-storage/* $WORK/dist-storage/docker/registry/v2/repositories/minbase $WORK/dist-storage/docker/registry/v2/blobs; sync"
echo "== skopeo copy push of Debian minbase ($(du -sh "$BIG" | cut -f1) layout), hyperfine --warmup 2 --runs $RUNS"
hyperfine --warmup 2 --runs "$RUNS" --export-json "$WORK/push.json" --prepare "$FRESH" \
    -n berth "skopeo copy -q --dest-tls-verify=false oci:$BIG:latest docker://127.0.0.1:$PORT_B/minbase:latest" \
    -n docker-registry "skopeo copy -q --dest-tls-verify=false oci:$BIG:latest docker://127.0.0.1:$PORT_D/minbase:latest"
python3 - "$WORK/push.json" <<'EOF'
import json, sys
r = {x["command"]: x for x in json.load(open(sys.argv[1]))["results"]}
b, d = r["berth"], r["docker-registry"]
print(f"medians         berth {b['median'] * 1000:.1f} ms, docker-registry {d['median'] * 1000:.1f} ms")
print(f"ratio           {b['mean'] / d['mean']:.2f}x the time by means, "
      f"{b['median'] / d['median']:.2f}x by medians (target <= 0.7x)")
EOF

echo "== the same push, $ROUNDS interleaved rounds (order rotated each round, fresh storage)"
push_ms() {
    local start end
    start=$(date +%s%N)
    skopeo copy -q --dest-tls-verify=false "oci:$BIG:latest" "docker://127.0.0.1:$1/minbase:latest"
    end=$(date +%s%N)
    echo $(((end - start) / 1000000))
}
PORTS=("$PORT_B" "$PORT_D" "$PORT_N")
for round in $(seq "$ROUNDS"); do
    sh -c "$FRESH"
    ms=()
    for k in 0 1 2; do
        i=$(((k + round) % 3))
        ms[i]=$(push_ms "${PORTS[$i]}")
    done
    echo "${ms[0]} ${ms[1]} ${ms[2]}"
done >"$WORK/rounds.txt"
python3 - "$WORK/rounds.txt" <<'EOF'
import statistics, sys
rows = [list(map(int, line.split())) for line in open(sys.argv[1])]
berth, dist, null = (statistics.median(c) for c in zip(*rows))
print(f"medians         berth {berth:.0f} ms, docker-registry {dist:.0f} ms, null registry {null:.0f} ms")
print(f"ratio           {berth / dist:.2f}x (target <= 0.7x); the null registry's, the floor: {null / dist:.2f}x")
EOF
