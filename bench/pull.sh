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
    [ ! -e "$WORK/containerd.pid" ] || kill "$(cat "$WORK/containerd.pid")" 2>/dev/null || true
    wait 2>/dev/null || true
    umount_under "$WORK"
    rm -rf "$WORK"
}
trap cleanup EXIT

# The image: a Debian minbase rootfs, imported into berth and pushed.
serve_minbase "$WORK" "$PORT"

# No timed run may follow a mass deletion: this ext4 has no journal, and ext4
# then skips every inode deleted in the last 60 s when it allocates one
# (`recently_deleted` in fs/ext4/ialloc.c). Removing the previous run's 8.5k
# entries right before a run (`rm -rf`, `ctr images rm --sync`) made berth's
# pull 1.1 s -> 8 s (system time 0.5 -> 7.5 s) and ctr's 3.5 s -> 9 s. So every
# run starts from a fresh, empty store: berth's root is moved aside, and
# containerd is restarted on a fresh root; the old ones are deleted at the end.
TRASH=$WORK/trash
mkdir -p "$TRASH"
cat > "$WORK/fresh-containerd.sh" <<EOS
#!/bin/sh
# Stops the running containerd, moves its root aside and starts a new one.
set -e
if [ -e $WORK/containerd.pid ]; then
    kill \$(cat $WORK/containerd.pid) 2>/dev/null || true
    while kill -0 \$(cat $WORK/containerd.pid) 2>/dev/null; do sleep 0.05; done
fi
[ ! -e $WORK/containerd ] || mv $WORK/containerd $TRASH/containerd.\$(date +%s%N)
mkdir -p $WORK/containerd
cat > $WORK/containerd/config.toml <<EOC
version = 2
root = "$WORK/containerd/root"
state = "$WORK/containerd/state"
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
setsid containerd --config $WORK/containerd/config.toml >$WORK/containerd/log 2>&1 </dev/null &
echo \$! >$WORK/containerd.pid
for _ in \$(seq 1 600); do ctr --address $WORK/c.sock version >/dev/null 2>&1 && exit 0; sleep 0.05; done
echo "containerd did not start: see $WORK/containerd/log" >&2
exit 1
EOS
chmod +x "$WORK/fresh-containerd.sh"
CTR="ctr --address $WORK/c.sock --namespace bench"
FRESH_BERTH="sh -c 'if [ -e $WORK/berth ]; then mv $WORK/berth $TRASH/berth.\$(date +%s%N); fi; sync'"

echo "== pull + unpack of $REF ($(du -h "$TAR" | cut -f1) rootfs), hyperfine --runs $RUNS"
hyperfine -N --runs "$RUNS" --export-json "$WORK/unpack.json" \
    --prepare "$FRESH_BERTH" -n "berth pull" "$BERTH --root $WORK/berth pull -q $REF" \
    --prepare "sh -c '$WORK/fresh-containerd.sh; sync'" -n "ctr images pull" "$CTR images pull --plain-http $REF"
[ ! -e "$WORK/containerd.pid" ] || kill "$(cat "$WORK/containerd.pid")" 2>/dev/null || true
echo "== download only, hyperfine --runs $RUNS"
hyperfine -N --runs "$RUNS" --export-json "$WORK/download.json" \
    --prepare "$FRESH_BERTH" -n "berth pull --download-only" "$BERTH --root $WORK/berth pull -q --download-only $REF" \
    --prepare "rm -rf $WORK/skopeo" -n "skopeo copy" "skopeo copy -q --src-tls-verify=false docker://$REF oci:$WORK/skopeo:latest"
for f in unpack download; do
    python3 - "$WORK/$f.json" <<'EOP'
import json, sys
r = json.load(open(sys.argv[1]))["results"]
print(f"{r[0]['command']}: {r[0]['median']:.3f} s, {r[1]['command']}: {r[1]['median']:.3f} s, ratio {r[0]['median'] / r[1]['median']:.2f}x")
EOP
done
