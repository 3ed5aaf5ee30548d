# Helpers shared by the bench/*.sh scripts; sourced by them, not run.

# need_tools TOOL...: exits with a message naming the calling script and
# scripts/install-test-deps unless every TOOL is on PATH.
need_tools() {
    local tool
    for tool in "$@"; do
        command -v "$tool" >/dev/null || {
            echo "bench/$(basename "$0") needs $tool: run scripts/install-test-deps" >&2
            exit 1
        }
    done
}

# fresh_memory_probe WORK: prints the seconds this machine takes to write
# 166 MiB into memory (a file on a private tmpfs), the size of the page cache
# bench/unpack.sh's layer fills. On a VM whose host backs guest memory lazily
# and takes back what the guest frees (virtio-balloon free page reporting),
# the first touch of such a page costs a host page fault: 0.8 s here when
# the free memory had been handed back, 0.1 s when it had been used moments
# before. Every page-cache page an unpack writes pays the same, so the
# figure tells which of the two machines a benchmark ran on.
fresh_memory_probe() {
    local dir=$1/memory-probe start end
    mkdir -p "$dir"
    mount -t tmpfs -o size=200m berth-bench-probe "$dir"
    start=$(date +%s%N)
    dd if=/dev/zero of="$dir/fill" bs=1M count=166 status=none
    end=$(date +%s%N)
    umount "$dir"
    rmdir "$dir"
    awk -v ns=$((end - start)) 'BEGIN { printf "%.2f\n", ns / 1e9 }'
}

# minbase_tar WORK: prints the path of a Debian minbase rootfs tarball.
# MINBASE_TAR=/path/rootfs.tar names one; MINBASE_TAR=host makes a stand-in
# without network in WORK (the files of this Debian host's Priority required
# + important packages, apt, and their dependencies); unset, debootstrap
# builds bookworm minbase in WORK (needs deb.debian.org).
minbase_tar() {
    local work=$1 out=${MINBASE_TAR:-}
    if [ "$out" = host ]; then
        out=$work/minbase.tar
        python3 - >"$work/packages" <<'EOP'
import re, subprocess
fmt = "${db:Status-Abbrev}\t${Package}\t${Priority}\t${Depends},${Pre-Depends}\t${Provides}\n"
rows = subprocess.run(["dpkg-query", "-W", "-f=" + fmt], capture_output=True, text=True, check=True).stdout
deps, priority, provider = {}, {}, {}
for row in rows.splitlines():
    status, name, prio, dep, prov = row.split("\t")
    if not status.startswith("ii"):
        continue
    priority[name] = prio
    deps[name] = [re.split(r"[ :(]", g.split("|")[0].strip())[0] for g in dep.split(",") if g.strip()]
    for p in prov.split(","):
        if p.strip():
            provider.setdefault(p.strip().split(" ")[0], name)
todo = [p for p, pr in priority.items() if pr in ("required", "important")] + ["apt"]
seen = set()
while todo:
    p = todo.pop()
    if p in seen:
        continue
    if p not in deps:
        todo.extend([provider[p]] if p in provider else [])
        continue
    seen.add(p)
    todo.extend(deps[p])
print("\n".join(sorted(seen)))
EOP
        # Paths under /bin, /lib… are usr-merged: list them under /usr once.
        { xargs dpkg -L <"$work/packages" 2>/dev/null || true; } | grep '^/' |
            sed -E 's#^/(bin|sbin|lib|lib32|lib64|libx32)/#/usr/\1/#' >"$work/files"
        for l in bin sbin lib lib64; do [ -L "/$l" ] && echo "/$l" >>"$work/files"; done
        sort -u -o "$work/files" "$work/files"
        tar -C / --no-recursion -cf "$out" -T "$work/files" 2>/dev/null || true
    elif [ -z "$out" ]; then
        debootstrap --variant=minbase bookworm "$work/minbase" http://deb.debian.org/debian >/dev/null
        out=$work/minbase.tar
        tar -C "$work/minbase" -cf "$out" .
        rm -rf "$work/minbase"
    fi
    echo "$out"
}

# start_docker_registry WORK PORT: starts Debian's docker-registry on
# 127.0.0.1:PORT (storage and log in WORK, access log off), waits until it
# answers and appends its pid to the caller's PIDS array.
start_docker_registry() {
    local work=$1 port=$2
    cat >"$work/dist.yml" <<EOC
version: 0.1
log:
  level: error
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $work/dist-storage
http:
  addr: 127.0.0.1:$port
EOC
    docker-registry serve "$work/dist.yml" >"$work/dist.log" 2>&1 &
    PIDS+=($!)
    for _ in $(seq 1 100); do
        (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && return 0
        sleep 0.1
    done
    echo "bench/$(basename "$0"): docker-registry did not answer on 127.0.0.1:$port (see $work/dist.log)" >&2
    exit 1
}

# umount_under DIR: lazily unmounts every mount at or below DIR, deepest first.
umount_under() {
    { grep -o " $1[^ ]*" /proc/self/mountinfo || true; } | sort -r | while read -r m; do umount -l "$m" 2>/dev/null || true; done
}

# serve_minbase WORK PORT: the Debian minbase image (see minbase_tar) in
# Debian's docker-registry on 127.0.0.1:PORT, pushed by $BERTH from a seed
# store in WORK; sets TAR (the rootfs tarball) and REF (the image's name).
serve_minbase() {
    TAR=$(minbase_tar "$1")
    start_docker_registry "$1" "$2"
    REF=127.0.0.1:$2/bench/minbase:latest
    "$BERTH" --root "$1/seed" import "$TAR" minbase >/dev/null
    "$BERTH" --root "$1/seed" push -q minbase "$REF" >/dev/null
}
