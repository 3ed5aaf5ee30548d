#!/usr/bin/env bash
# Unpack benchmark: berth's layer apply against GNU `tar -xzf` and
# `umoci unpack` on one Debian bookworm minbase layer (gzip), with `sync`
# and a fresh target before every run. Prints the ratios to GNU tar.
#
#   bench/unpack.sh              # WORK=/var/tmp/berth-bench-unpack RUNS=5
#   MINBASE=/path/to/rootfs bench/unpack.sh   # reuse an existing rootfs
#   MINBASE_TAR=/path/rootfs.tar bench/unpack.sh   # or a rootfs tarball
#   MINBASE_TAR=host bench/unpack.sh   # no network: minbase's packages
#                                      # copied from this Debian host
#                                      # (as bench/pull.sh does)
# The layer is made once and kept in WORK; delete WORK/layer.tar.gz to
# change it.
#
# Leave ~2 minutes between two runs: see "recently deleted" below.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
. "$ROOT/bench/lib.sh"
WORK=${WORK:-/var/tmp/berth-bench-unpack}
RUNS=${RUNS:-5}
mkdir -p "$WORK"
need_tools hyperfine umoci tar python3

LAYER=$WORK/layer.tar.gz
if [ ! -f "$LAYER" ]; then
    TAR=
    if [ -n "${MINBASE_TAR:-}" ]; then
        TAR=$(minbase_tar "$WORK")
    fi
    if [ -n "$TAR" ]; then
        gzip -c "$TAR" >"$LAYER.tmp"
    else
        SRC=${MINBASE:-$WORK/minbase}
        if [ ! -d "$SRC/usr" ]; then
            debootstrap --variant=minbase bookworm "$SRC" http://deb.debian.org/debian ||
                { echo "debootstrap failed: without a mirror use MINBASE_TAR=host" >&2; exit 1; }
        fi
        # Like the official images: no downloaded .debs or apt lists in the layer.
        rm -rf "$SRC"/var/cache/apt/archives/*.deb "$SRC"/var/lib/apt/lists/*
        tar --numeric-owner --xattrs -C "$SRC" -czf "$LAYER.tmp" .
    fi
    mv "$LAYER.tmp" "$LAYER"
fi

# An OCI layout holding that layer, for umoci.
LAYOUT=$WORK/layout
if [ ! -f "$LAYOUT/index.json" ]; then
    rm -rf "$LAYOUT" && mkdir -p "$LAYOUT/blobs/sha256"
    put() { local d; d=$(sha256sum "$1" | cut -d' ' -f1); cp "$1" "$LAYOUT/blobs/sha256/$d"; echo "$d"; }
    layer_digest=$(put "$LAYER")
    layer_size=$(stat -c %s "$LAYER")
    diff_id=$(zcat "$LAYER" | sha256sum | cut -d' ' -f1)
    printf '{"architecture":"amd64","os":"linux","config":{},"rootfs":{"type":"layers","diff_ids":["sha256:%s"]}}' \
        "$diff_id" >"$WORK/config.json"
    config_digest=$(put "$WORK/config.json")
    printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:%s","size":%s},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"sha256:%s","size":%s}]}' \
        "$config_digest" "$(stat -c %s "$WORK/config.json")" "$layer_digest" "$layer_size" >"$WORK/manifest.json"
    manifest_digest=$(put "$WORK/manifest.json")
    printf '{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:%s","size":%s,"annotations":{"org.opencontainers.image.ref.name":"bench"}}]}' \
        "$manifest_digest" "$(stat -c %s "$WORK/manifest.json")" >"$LAYOUT/index.json"
    echo '{"imageLayoutVersion":"1.0.0"}' >"$LAYOUT/oci-layout"
fi

(cd "$ROOT" && cargo build --release -q -p berth-archive --example unpack)
BERTH=$ROOT/target/x86_64-unknown-linux-gnu/release/examples/unpack
OUT=$WORK/out
# Each run's tree is moved aside, not deleted, before the next run: this ext4
# has no journal, and ext4 then skips every inode deleted in the last 60 s
# (300 s more while its inode-table block is dirty) when it allocates one
# (`recently_deleted` in fs/ext4/ialloc.c). A `rm -rf` of the previous 6.7k
# entries right before a run made each create scan past them: system time
# 0.1 s -> 1.3-2 s for the same unpack, whichever tool ran. The trash is
# deleted at the end; a leftover from an aborted run is deleted now, and the
# script waits out the window.
TRASH=$WORK/trash
if [ -e "$TRASH" ] || [ -e "$OUT" ]; then
    rm -rf "$TRASH" "$OUT"
    echo "waiting 61 s: ext4 (no journal) avoids reusing inodes deleted within 60 s" >&2
    sync
    sleep 61
fi
# Every run's tree stays until the end: hyperfine's 5 x (warm-up + RUNS)
# and the interleaved loop's 3 x ROUNDS, each about the uncompressed layer
# (+10 % for blocks and inodes).
trees=$(( 5 * (RUNS + 1) + 3 * ${ROUNDS:-7} ))
need_kib=$(( $(zcat "$LAYER" | wc -c) / 1024 * trees * 11 / 10 ))
free_kib=$(df -k --output=avail "$WORK" | tail -1)
if [ "$free_kib" -lt "$need_kib" ]; then
    echo "bench/unpack.sh keeps every run's tree until it ends and needs $((need_kib >> 20)) GiB free in $WORK; $((free_kib >> 20)) GiB are: free some or set WORK" >&2
    exit 1
fi
mkdir -p "$TRASH"
trap 'rm -rf "$TRASH" "$OUT"' EXIT
PREPARE="if [ -e $OUT ]; then mv $OUT $TRASH/\$(date +%s%N); fi; sync"
echo "layer: $(stat -c %s "$LAYER") bytes gzip, $(zcat "$LAYER" | tar -tf - | wc -l) entries"
# How dear fresh memory is right now (see fresh_memory_probe in lib.sh): both
# tools write ~166 MB of page cache, and on a machine where first touches
# fault in the host that alone adds ~0.7 s to either of them.
echo "fresh memory before: $(fresh_memory_probe "$WORK") s to fill 166 MiB"

hyperfine --warmup 1 --runs "$RUNS" --export-json "$WORK/unpack.json" \
    --prepare "$PREPARE" \
    -n "tar -xzf" "mkdir $OUT && tar -xzf $LAYER -C $OUT" \
    -n "umoci unpack" "umoci unpack --image $LAYOUT:bench $OUT" \
    -n "berth apply" "$BERTH $LAYER $OUT" \
    -n "berth apply, one writer" "$BERTH $LAYER $OUT --threads 0" \
    -n "berth apply, writer pool always" "$BERTH $LAYER $OUT --pool-above-ns 0"

python3 - "$WORK/unpack.json" <<'PY'
import json, sys
r = {x["command"]: x for x in json.load(open(sys.argv[1]))["results"]}
base = r["tar -xzf"]["mean"]
for name, x in r.items():
    print(f"{name:46s} mean {x['mean']:.3f} s  ±{x['stddev']:.3f}  ratio to tar {x['mean'] / base:.2f}x")
PY

echo "fresh memory after hyperfine: $(fresh_memory_probe "$WORK") s to fill 166 MiB"

# On a shared, noisy machine one command's runs can land in a quiet minute and
# another's in a busy one: also run tar and berth interleaved, same prepare,
# and compare medians.
python3 - "$LAYER" "$OUT" "$BERTH" "${ROUNDS:-7}" "$PREPARE" <<'PY'
import statistics, subprocess, sys, time
layer, out, berth, rounds, prepare = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5]
cmds = {
    "tar -xzf": f"mkdir {out} && tar -xzf {layer} -C {out}",
    "berth apply": f"{berth} {layer} {out} >/dev/null",
    "berth apply, one writer": f"{berth} {layer} {out} --threads 0 >/dev/null",
}
times = {k: [] for k in cmds}
for _ in range(rounds):
    for name, cmd in cmds.items():
        subprocess.run(prepare, shell=True, check=True)
        t = time.monotonic()
        subprocess.run(cmd, shell=True, check=True)
        times[name].append(time.monotonic() - t)
med = {k: statistics.median(v) for k, v in times.items()}
print(f"interleaved, {rounds} rounds, medians:")
for name, m in med.items():
    print(f"  {name:30s} {m:.3f} s  ratio to tar {m / med['tar -xzf']:.2f}x")
PY
echo "fresh memory at the end: $(fresh_memory_probe "$WORK") s to fill 166 MiB"
echo "(about 0.1 s: hot memory; 0.4 s or more: every page-cache page cost a host page fault," \
    "which tar hides behind gzip and berth, using both vCPUs, cannot; see bench/README.md)"
