#!/usr/bin/env bash
# Registry replicas benchmark: push and pull throughput through nginx
# (round robin, request by request) in front of three `berth registry serve`
# replicas against the same nginx in front of one replica, all on one
# SeaweedFS bucket (started here on loopback).
#
#   push: JOBS concurrent `skopeo copy` pushes of JOBS different images
#         (one incompressible SIZE_MB layer each), fresh bucket prefix and
#         freshly started replicas before every run (hyperfine --prepare)
#   pull: JOBS concurrent `skopeo copy` pulls of those images into fresh
#         OCI layouts
#
# Prints MB/s for each and the ratio three replicas / one.
#
#   bench/replicas.sh                   # WORK=/var/tmp/berth-bench-replicas
#   JOBS=6 SIZE_MB=32 RUNS=5 bench/replicas.sh
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
. "$ROOT/bench/lib.sh"
WORK=${WORK:-/var/tmp/berth-bench-replicas}
JOBS=${JOBS:-4}
SIZE_MB=${SIZE_MB:-32}
RUNS=${RUNS:-5}
BERTH=${BERTH:-$ROOT/target/x86_64-unknown-linux-gnu/release/berth}
WEED=${BERTH_WEED:-/opt/berth-seaweedfs/bin/weed}
BASE_PORT=${BASE_PORT:-15800}

# Ports: weed uses BASE_PORT..+7, replicas +10..+12, nginx +20 (one) and +21 (three).
P=$BASE_PORT
S3=$((P + 6))

# start_replicas N: N replicas on a fresh bucket prefix (stopping earlier ones).
start_replicas() {
    [ -f "$WORK/replicas.pids" ] && { kill $(cat "$WORK/replicas.pids") 2>/dev/null || true; sleep 0.2; }
    local prefix="bench-$RANDOM$RANDOM" pids="" i
    for i in $(seq 0 $(($1 - 1))); do
        cat >"$WORK/replica$i.yml" <<EOF
addr: 127.0.0.1:$((P + 10 + i))
storage: { s3: { endpoint: "http://127.0.0.1:$S3", bucket: registry, access_key_id: bench, secret_access_key: bench, prefix: $prefix } }
log: { access: false }
EOF
        "$BERTH" registry serve --config "$WORK/replica$i.yml" >"$WORK/replica$i.log" 2>&1 &
        pids="$pids $!"
    done
    echo "$pids" >"$WORK/replicas.pids"
    for i in $(seq 0 $(($1 - 1))); do
        for _ in $(seq 100); do
            curl -sf "http://127.0.0.1:$((P + 10 + i))/readyz" >/dev/null && break
            sleep 0.1
        done
    done
}

# hyperfine --prepare runs `bench/replicas.sh --start-replicas N`.
if [ "${1:-}" = --start-replicas ]; then
    start_replicas "$2"
    exit 0
fi

export WORK BASE_PORT BERTH
need_tools hyperfine skopeo umoci nginx curl
[ -x "$WEED" ] || { echo "bench/replicas.sh needs $WEED: run scripts/install-test-deps" >&2; exit 1; }
[ -x "$BERTH" ] || (cd "$ROOT" && cargo build --release -p berth-cli)
rm -rf "$WORK"
mkdir -p "$WORK"

PIDS=()
cleanup() {
    local all="${PIDS[*]} $(cat "$WORK/replicas.pids" 2>/dev/null)" p
    for p in $all; do kill "$p" 2>/dev/null || true; done
    sleep 2 # SeaweedFS may not stop on SIGTERM
    for p in $all; do kill -9 "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
}
trap cleanup EXIT

"$WEED" server -dir="$WORK/weed" -ip=127.0.0.1 -ip.bind=127.0.0.1 -master.telemetry=false \
    -master.port=$P -master.port.grpc=$((P + 1)) -volume.port=$((P + 2)) \
    -volume.port.grpc=$((P + 3)) -volume.max=50 -master.volumeSizeLimitMB=256 -filer \
    -filer.port=$((P + 4)) -filer.port.grpc=$((P + 5)) -s3 -s3.port=$S3 \
    -s3.port.grpc=$((P + 7)) -s3.port.iceberg=0 -s3.port.lance=0 -iam=false \
    >"$WORK/weed.log" 2>&1 &
PIDS+=($!)
mkdir -p "$WORK/weed"
for _ in $(seq 300); do
    curl -sf -X POST -H 'Content-Length: 0' "http://127.0.0.1:$((P + 4))/buckets/registry/?op=mkdir" \
        >/dev/null 2>&1 && curl -s -o /dev/null "http://127.0.0.1:$S3/" && break
    sleep 0.2
done


# nginx on PORT in front of the first N replicas.
start_nginx() {
    local port=$1 n=$2 dir="$WORK/nginx$2" servers="" i
    mkdir -p "$dir"
    for i in $(seq 0 $((n - 1))); do servers="$servers server 127.0.0.1:$((P + 10 + i));"; done
    cat >"$dir/nginx.conf" <<EOF
daemon off; master_process off; pid $dir/nginx.pid; error_log $dir/error.log;
events { worker_connections 1024; }
http {
  access_log off; client_body_temp_path $dir/body; proxy_temp_path $dir/proxy;
  fastcgi_temp_path $dir/fcgi; uwsgi_temp_path $dir/uwsgi; scgi_temp_path $dir/scgi;
  upstream replicas { $servers }
  server {
    listen 127.0.0.1:$port; client_max_body_size 0;
    proxy_request_buffering off; proxy_buffering off; proxy_http_version 1.1;
    location / { proxy_pass http://replicas; proxy_set_header Host \$http_host; }
  }
}
EOF
    nginx -c "$dir/nginx.conf" -e "$dir/error.log" &
    PIDS+=($!)
}
ONE=$((P + 20))
THREE=$((P + 21))
start_nginx $ONE 1
start_nginx $THREE 3

echo "== building $JOBS images of one ${SIZE_MB} MiB incompressible layer"
for j in $(seq "$JOBS"); do
    img="$WORK/img$j"
    umoci init --layout "$img"
    umoci new --image "$img:latest"
    mkdir -p "$WORK/rootfs$j"
    head -c $((SIZE_MB * 1024 * 1024)) /dev/urandom >"$WORK/rootfs$j/data"
    umoci insert --image "$img:latest" "$WORK/rootfs$j" /
done
BYTES=$(du -cb "$WORK"/img*/blobs | tail -1 | cut -f1)

cat >"$WORK/push.sh" <<EOF
#!/bin/sh
# push.sh PORT: the JOBS images pushed at once through nginx on PORT.
for j in \$(seq $JOBS); do
    skopeo copy -q --dest-tls-verify=false oci:$WORK/img\$j:latest docker://127.0.0.1:\$1/bench/img\$j:latest &
done
wait
EOF
cat >"$WORK/pull.sh" <<EOF
#!/bin/sh
# pull.sh PORT: the JOBS images pulled at once through nginx on PORT.
rm -rf $WORK/pulled; mkdir -p $WORK/pulled
for j in \$(seq $JOBS); do
    skopeo copy -q --src-tls-verify=false docker://127.0.0.1:\$1/bench/img\$j:latest oci:$WORK/pulled/img\$j:latest &
done
wait
EOF
chmod +x "$WORK/push.sh" "$WORK/pull.sh"

mbps() { python3 -c "import json,sys; r=json.load(open('$1'))['results']; [print(f\"{x['command']}: {$BYTES/x['median']/1e6:.1f} MB/s (median {x['median']:.2f} s)\") for x in r]"; }

echo "== push: $JOBS concurrent skopeo pushes, $((BYTES / 1048576)) MiB in all, hyperfine --runs $RUNS"
hyperfine --runs "$RUNS" --export-json "$WORK/push1.json" --prepare "$ROOT/bench/replicas.sh --start-replicas 1" \
    -n "one replica" "$WORK/push.sh $ONE"
hyperfine --runs "$RUNS" --export-json "$WORK/push3.json" --prepare "$ROOT/bench/replicas.sh --start-replicas 3" \
    -n "three replicas" "$WORK/push.sh $THREE"
mbps "$WORK/push1.json"
mbps "$WORK/push3.json"

echo "== pull: $JOBS concurrent skopeo pulls of those images"
start_replicas 3
"$WORK/push.sh" $THREE
hyperfine --warmup 1 --runs "$RUNS" --export-json "$WORK/pull.json" \
    -n "one replica" "$WORK/pull.sh $ONE" -n "three replicas" "$WORK/pull.sh $THREE"
mbps "$WORK/pull.json"
python3 - "$WORK" <<'EOF'
import json, sys
w = sys.argv[1]
med = lambda f, i=0: json.load(open(f"{w}/{f}"))["results"][i]["median"]
print(f"push throughput, three replicas / one: {med('push1.json') / med('push3.json'):.2f}x")
print(f"pull throughput, three replicas / one: {med('pull.json', 0) / med('pull.json', 1):.2f}x")
EOF
