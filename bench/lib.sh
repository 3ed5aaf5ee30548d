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

# host_minbase_tar TAR DIR: writes to TAR a stand-in for a Debian minbase
# rootfs when no mirror is reachable: the files of this Debian host's
# required and important packages, apt, and their dependencies (DIR holds
# the lists it makes).
host_minbase_tar() {
    python3 - >"$2/packages" <<'EOP'
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
    { xargs dpkg -L <"$2/packages" 2>/dev/null || true; } | grep '^/' |
        sed -E 's#^/(bin|sbin|lib|lib32|lib64|libx32)/#/usr/\1/#' >"$2/files"
    for l in bin sbin lib lib64; do [ -L "/$l" ] && echo "/$l" >>"$2/files"; done
    sort -u -o "$2/files" "$2/files"
    tar -C / --no-recursion -cf "$1" -T "$2/files" 2>/dev/null || true
}
