#!/usr/bin/env bash
# Pull benchmark: a Debian minbase image served by Debian's docker-registry
# on 127.0.0.1, every tool starting from an empty store before each run
# (hyperfine --prepare).
#
#   1. pull + unpack: `berth pull` against `ctr images pull` (containerd
#      also pulls and unpacks)                     target: berth <= 0.35x
#   2. download only: `berth pull --download-only` against
#      `skopeo copy docker://… oci:…`              target: berth <= 0.7x
#
#   bench/pull.sh                        # RUNS=5
#   MINBASE_TAR=/path/rootfs.tar bench/pull.sh   # a Debian rootfs tarball
#   MINBASE_TAR=host bench/pull.sh       # no network: minbase's packages
#                                        # (required + important + apt and their
#                                        # dependencies) copied from this Debian host
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
. "$ROOT/bench/lib.sh"
RUNS=${RUNS:-5}
PORT=${PORT:-15711}
BERTH=${BERTH:-$ROOT/target/x86_64-unknown-linux-gnu/release/berth}
need_tools hyperfine skopeo docker-registry containerd ctr debootstrap
[ -x "$BERTH" ] || (cd "$ROOT" && cargo build --release -p berth-cli)
[ "$(id -u)" = 0 ] || { echo "bench/pull.sh needs root (mounts, containerd)" >&2; exit 1; }

WORK=$(mktemp -d /var/tmp/berth-bench-pull.XXXXXX)
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    umount_under "$WORK"
    rm -rf "$WORK"
}
trap cleanup EXIT

# The image: a Debian minbase rootfs, imported into berth and pushed.
TAR=$(minbase_tar "$WORK")
start_docker_registry "$WORK" "$PORT"
REF=127.0.0.1:$PORT/bench/minbase:latest
$BERTH --root "$WORK/seed" import "$TAR" minbase >/dev/null
$BERTH --root "$WORK/seed" push -q minbase "$REF" >/dev/null

cat > "$WORK/containerd.toml" <<EOC
version = 2
root = "$WORK/containerd-root"
state = "$WORK/containerd-state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "$WORK/c.sock"
[ttrpc]
  address = "$WORK/c.sock.ttrpc"
[debug]
  address = ""
[metrics]
  address = ""
EOC
containerd --config "$WORK/containerd.toml" >"$WORK/containerd.log" 2>&1 &
PIDS+=($!)
CTR="ctr --address $WORK/c.sock --namespace bench"
for _ in $(seq 1 600); do $CTR version >/dev/null 2>&1 && break; sleep 0.1; done

echo "== pull + unpack of $REF ($(du -h "$TAR" | cut -f1) rootfs), hyperfine --runs $RUNS"
hyperfine -N --runs "$RUNS" --export-json "$WORK/unpack.json" \
    --prepare "rm -rf $WORK/berth" -n "berth pull" "$BERTH --root $WORK/berth pull -q $REF" \
    --prepare "sh -c '$CTR images rm --sync $REF >/dev/null 2>&1 || true'" -n "ctr images pull" "$CTR images pull --plain-http $REF"
echo "== download only, hyperfine --runs $RUNS"
hyperfine -N --runs "$RUNS" --export-json "$WORK/download.json" \
    --prepare "rm -rf $WORK/berth" -n "berth pull --download-only" "$BERTH --root $WORK/berth pull -q --download-only $REF" \
    --prepare "rm -rf $WORK/skopeo" -n "skopeo copy" "skopeo copy -q --src-tls-verify=false docker://$REF oci:$WORK/skopeo:latest"
for f in unpack download; do
    python3 - "$WORK/$f.json" <<'EOP'
import json, sys
r = json.load(open(sys.argv[1]))["results"]
print(f"{r[0]['command']}: {r[0]['median']:.3f} s, {r[1]['command']}: {r[1]['median']:.3f} s, ratio {r[0]['median'] / r[1]['median']:.2f}x")
EOP
done
