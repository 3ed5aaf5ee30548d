#!/usr/bin/env bash
# Image store benchmark: `berth import`, `berth save` and `berth load`
# against their nearest peers on one rootfs tarball (the host's /usr/bin by
# default, ~450 MB), fresh destinations before every run. Prints the
# berth/peer time ratios (below 1: berth is faster).
#
#   bench/images.sh                       # WORK=/var/tmp/berth-bench-images RUNS=5
#   ROOTFS_TAR=/path/to/rootfs.tar bench/images.sh
#   BERTH=target/x86_64-unknown-linux-gnu/release/berth bench/images.sh   # skip the build
#
# What each pair does (they are close, not identical):
#   import: berth gzips the tarball into its store, hashing diff_id and blob
#           in one pass; podman (vfs) imports it and extracts it.
#   save:   berth writes an OCI archive from its store; skopeo copies an OCI
#           layout of the same image to an OCI archive.
#   load:   berth streams an OCI archive into its store, verifying digests and
#           decompressing every layer to check its diff_id; skopeo copies the
#           archive into an OCI layout (digest checks, no decompression).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
. "$ROOT/bench/lib.sh"
WORK=${WORK:-/var/tmp/berth-bench-images}
RUNS=${RUNS:-5}
mkdir -p "$WORK"
need_tools hyperfine skopeo podman python3

TARBALL=${ROOTFS_TAR:-$WORK/rootfs.tar}
if [ ! -f "$TARBALL" ]; then
    tar -C / -cf "$TARBALL.tmp" usr/bin 2>/dev/null && mv "$TARBALL.tmp" "$TARBALL"
fi

if [ -z "${BERTH:-}" ]; then
    (cd "$ROOT" && cargo build --release -q -p berth-cli)
    BERTH=$ROOT/target/x86_64-unknown-linux-gnu/release/berth
fi
PODMAN="podman --root $WORK/podman --runroot $WORK/podman-run --storage-driver vfs --events-backend none"

# The image every save/load run uses.
rm -rf "$WORK/store" "$WORK/layout" "$WORK/image.tar"
$BERTH --root "$WORK/store" import "$TARBALL" bench/image >/dev/null 2>&1
$BERTH --root "$WORK/store" save bench/image -o "$WORK/image.tar"
skopeo copy -q "oci-archive:$WORK/image.tar" "oci:$WORK/layout:latest"
echo "tarball: $(stat -c %s "$TARBALL") bytes; image archive: $(stat -c %s "$WORK/image.tar") bytes"

hyperfine --warmup 1 --runs "$RUNS" --export-json "$WORK/import.json" \
    --prepare "rm -rf $WORK/i1 $WORK/podman $WORK/podman-run; sync" \
    "$BERTH --root $WORK/i1 import $TARBALL bench/import" \
    "$PODMAN import $TARBALL localhost/bench-import"
hyperfine --warmup 1 --runs "$RUNS" --export-json "$WORK/save.json" \
    --prepare "rm -f $WORK/s1.tar $WORK/s2.tar; sync" \
    "$BERTH --root $WORK/store save bench/image -o $WORK/s1.tar" \
    "skopeo copy -q oci:$WORK/layout:latest oci-archive:$WORK/s2.tar"
hyperfine --warmup 1 --runs "$RUNS" --export-json "$WORK/load.json" \
    --prepare "rm -rf $WORK/l1 $WORK/l2; sync" \
    "$BERTH --root $WORK/l1 load $WORK/image.tar" \
    "skopeo copy -q oci-archive:$WORK/image.tar oci:$WORK/l2:latest"

python3 - "$WORK" <<'EOF'
import json, sys
work = sys.argv[1]
for name, peer in [("import", "podman import (vfs)"), ("save", "skopeo oci: -> oci-archive:"), ("load", "skopeo oci-archive: -> oci:")]:
    r = json.load(open(f"{work}/{name}.json"))["results"]
    b, p = r[0]["mean"], r[1]["mean"]
    print(f"{name:6s} berth {b*1000:8.0f} ms   {peer:28s} {p*1000:8.0f} ms   ratio {b/p:.2f}")
EOF
