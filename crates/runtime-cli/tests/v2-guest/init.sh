#!/bin/sh
# The init of the pure cgroup v2 guest (see ../cgroup_v2_guest.rs, which
# builds the initramfs and boots it). Mounts only cgroup2, then checks each
# resource twice through berth-runtime: the value in the kernel's file and
# the behaviour. Every check prints one line on the serial console,
# `BERTH-V2 ok NAME` or `BERTH-V2 fail NAME: REASON`; `BERTH-V2 done` ends
# the run and the guest powers off. The bundles in /bundles were written by
# the test; they share the busybox root filesystem /rootfs.
export PATH=/bin

if [ "${1:-}" != stage2 ]; then
    # pid 1 on the initramfs, started without a console: take one, then
    # move to a tmpfs root (pivot_root, which the runtime uses, refuses the
    # initramfs root).
    mount -t devtmpfs devtmpfs /dev
    exec </dev/console >/dev/console 2>&1
    mkdir -p /newroot
    mount -t tmpfs -o mode=755 newroot /newroot
    cp -a /bin /etc /lib /bundles /rootfs /init /newroot/
    mkdir -p /newroot/proc /newroot/sys /newroot/dev /newroot/run /newroot/tmp
    exec switch_root /newroot /init stage2
fi

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t cgroup2 cgroup2 /sys/fs/cgroup
mount -t tmpfs tmpfs /run
mount -t tmpfs tmpfs /tmp
# Lets an allowed /dev/kmsg read succeed without CAP_SYSLOG (Debian's
# kernel restricts it), so only the device rules decide the opens below.
echo 0 >/proc/sys/kernel/dmesg_restrict
echo "BERTH-V2 booted $(uname -r), $(nproc) cpus"

say() { echo "BERTH-V2 $*"; }
# check NAME COMMAND...: runs COMMAND and reports ok, or fail with its output.
check() {
    name=$1
    shift
    if out=$("$@" 2>&1); then
        say "ok $name"
    else
        say "fail $name: $(echo "$out" | tr '\n' ' ' | cut -c1-600)"
    fi
}
rt() { berth-runtime --root /run/berth "$@"; }
# The container's cgroup directory.
cg() { echo "/sys/fs/cgroup/berth/$1"; }
# want FILE VALUE: FILE holds exactly VALUE.
want() {
    got=$(cat "$1" 2>&1)
    [ "$got" = "$2" ] || { echo "$1 reads '$got', want '$2'"; return 1; }
}
# has FILE PATTERN: a line of FILE matches the extended regex PATTERN.
has() {
    grep -Eq "$2" "$1" 2>/dev/null || { echo "$1 has no line matching '$2': $(cat "$1" 2>&1)"; return 1; }
}
# until_true COMMAND...: waits (up to 120 s, generous for TCG) for COMMAND to succeed.
until_true() {
    i=0
    while ! "$@" >/dev/null 2>&1; do
        i=$((i + 1))
        [ $i -le 1200 ] || { echo "gave up waiting for: $*"; "$@"; return 1; }
        usleep 100000
    done
}
status_is() { rt state "$1" | grep -q "\"status\": *\"$2\""; }
# up ID: creates and starts the container of /bundles/ID (its output goes
# to /tmp/ID.out).
up() {
    rt create --bundle "/bundles/$1" "$1" >"/tmp/$1.out" 2>&1 && rt start "$1" && status_is "$1" running
}
# down ID: deletes the container; its cgroup must be gone.
down() {
    rt delete --force "$1" && [ ! -e "$(cg "$1")" ] || { echo "$(cg "$1") is left after delete"; return 1; }
}

# --- The machine: only cgroup2, with every controller. ---
all="cpuset cpu io memory hugetlb pids rdma misc"
only_cgroup2() {
    ! grep ' - cgroup ' /proc/self/mountinfo && grep -q ' - cgroup2 ' /proc/self/mountinfo
}
check only-cgroup2-mounted only_cgroup2
check controllers-available want /sys/fs/cgroup/cgroup.controllers "$all"
enable() {
    for c in $all; do echo "+$c" >/sys/fs/cgroup/cgroup.subtree_control || return 1; done
    want /sys/fs/cgroup/cgroup.subtree_control "$all"
}
check controllers-enabled enable

# --- memory: memory.max, then a process over it is OOM-killed. ---
check memory-up up memory
check memory-max-file want "$(cg memory)/memory.max" 33554432
check memory-max-inside sh -c 'v=$(berth-runtime --root /run/berth exec memory cat /sys/fs/cgroup/memory.max) && [ "$v" = 33554432 ] || { echo "inside: $v"; exit 1; }'
check exec-cgroup-namespace sh -c 'v=$(berth-runtime --root /run/berth exec memory cat /proc/self/cgroup) && [ "$v" = "0::/" ] || { echo "/proc/self/cgroup in the container: $v"; exit 1; }'
oom() {
    rt events --interval 10m memory >/tmp/memory.events 2>&1 &
    events=$!
    # dd's 64 MiB buffer cannot fit in 32 MiB without swap.
    out=$(rt exec memory dd if=/dev/zero of=/dev/null bs=64M count=1 2>&1)
    code=$?
    [ $code = 137 ] || { echo "dd exited $code, want 137 (SIGKILL): $out"; return 1; }
    has "$(cg memory)/memory.events" '^oom_kill [1-9]' || return 1
    status_is memory running || { echo "the container died with the OOM-killed exec"; return 1; }
    until_true grep -q '^{"id":"memory","type":"oom"}$' /tmp/memory.events || return 1
    kill $events
}
check memory-oom-kill oom
oom_stats() {
    rt events --stats memory >/tmp/memory.stats || return 1
    grep -Eq '"usage":\{"failcnt":[1-9]' /tmp/memory.stats || { echo "no failcnt in: $(cat /tmp/memory.stats)"; return 1; }
}
check memory-oom-in-stats oom_stats
check memory-down down memory

# --- pids: pids.max, then fork is refused; update raises the limit. ---
check pids-up up pids
check pids-max-file want "$(cg pids)/pids.max" 8
fork_refused() {
    out=$(rt exec pids sh -c 'for i in 1 2 3 4 5 6 7 8 9 10; do sleep 300 >/dev/null 2>&1 & done; echo forked all' 2>&1)
    case "$out" in
    *"can't fork"*) ;;
    *) echo "ten forks under pids.max 8 gave: $out"; return 1 ;;
    esac
    has "$(cg pids)/pids.events" '^max [1-9]'
}
check pids-fork-refused fork_refused
raise() {
    rt update --pids-limit 40 pids || return 1
    want "$(cg pids)/pids.max" 40 || return 1
    out=$(rt exec pids sh -c 'for i in 1 2 3 4 5 6 7 8 9 10; do sleep 300 >/dev/null 2>&1 & done; echo forked all' 2>&1)
    [ "$out" = "forked all" ] || { echo "after update: $out"; return 1; }
}
check pids-update-allows-fork raise
kill_all() {
    rt kill --all pids KILL || return 1
    until_true status_is pids stopped || return 1
    want "$(cg pids)/cgroup.procs" ""
}
check kill-all kill_all
check pids-down down pids

# --- cpu: cpu.max and cpu.weight, then a busy loop is throttled; cpuset. ---
check cpu-up up cpu
check cpu-max-file want "$(cg cpu)/cpu.max" "20000 100000"
check cpu-weight-file want "$(cg cpu)/cpu.weight" 20
throttled() { grep -Eq '^nr_throttled [1-9]' "$(cg cpu)/cpu.stat"; }
check cpu-quota-throttles until_true throttled
check cpuset-file want "$(cg cpu)/cpuset.cpus.effective" 0
affinity() {
    out=$(rt exec cpu taskset -p 1 2>&1)
    case "$out" in
    *"mask: 1") ;;
    *) echo "taskset -p 1 in the container: $out"; return 1 ;;
    esac
}
check cpuset-affinity affinity
stats() {
    rt events --stats cpu >/tmp/cpu.stats || return 1
    s=$(cat /tmp/cpu.stats)
    echo "$s" | grep -q '"type":"stats"' &&
        echo "$s" | grep -Eq '"throttledPeriods":[1-9]' &&
        echo "$s" | grep -Eq '"pids":\{"current":[1-9]' &&
        echo "$s" | grep -Eq '"total":[1-9]' || { echo "events --stats: $s"; return 1; }
}
check events-stats stats
update() {
    rt update --memory 100m --memory-swap 200m --cpu-quota 30000 --cpu-period 100000 \
        --cpu-shares 1024 --cpuset-cpus 1 cpu || return 1
    want "$(cg cpu)/memory.max" 104857600 &&
        want "$(cg cpu)/memory.swap.max" 104857600 &&
        want "$(cg cpu)/cpu.max" "30000 100000" &&
        want "$(cg cpu)/cpu.weight" 39 &&
        want "$(cg cpu)/cpuset.cpus.effective" 1
}
check update-files update
check update-affinity sh -c 'out=$(berth-runtime --root /run/berth exec cpu taskset -p 1) && case "$out" in *"mask: 2") ;; *) echo "$out"; exit 1;; esac'
check cpu-down down cpu

# --- freezer: pause stops progress, resume restarts it. ---
check freeze-up up freeze
count() { cat /rootfs/tmp/freeze.count 2>/dev/null; }
check freeze-counting until_true test -s /rootfs/tmp/freeze.count
pause() {
    rt pause freeze || return 1
    want "$(cg freeze)/cgroup.freeze" 1 || return 1
    has "$(cg freeze)/cgroup.events" '^frozen 1$' || return 1
    status_is freeze paused || { rt state freeze; return 1; }
    a=$(count)
    sleep 2
    b=$(count)
    [ "$a" = "$b" ] || { echo "the counter moved from $a to $b while paused"; return 1; }
}
check pause-stops-progress pause
exec_paused() {
    out=$(timeout 60 berth-runtime --root /run/berth exec freeze true 2>&1) &&
        { echo "exec in a paused container succeeded"; return 1; }
    case "$out" in *"paused container"*) ;; *) echo "exec in a paused container: $out"; return 1 ;; esac
}
check exec-paused-refused exec_paused
resume() {
    a=$(count)
    rt resume freeze || return 1
    want "$(cg freeze)/cgroup.freeze" 0 || return 1
    status_is freeze running || { rt state freeze; return 1; }
    until_true sh -c "[ \"\$(cat /rootfs/tmp/freeze.count)\" != '$a' ]"
}
check resume-restarts-progress resume
ps_lists() {
    pid=$(rt state freeze | sed -n 's/.*"pid": *\([0-9]*\).*/\1/p')
    out=$(rt ps freeze) || return 1
    echo "$out" | grep -Eq "^ *(root +)?$pid " || { echo "pid $pid not in: $out"; return 1; }
}
check ps-lists-the-container ps_lists
unlimited() {
    s=$(rt events --stats freeze) || return 1
    echo "$s" | grep -q '"usage":{"failcnt":0,"limit":18446744073709551615,' &&
        echo "$s" | grep -Eq '"pids":\{"current":[1-9][0-9]*,"limit":0\}' ||
        { echo "no limits should read as runc's: $s"; return 1; }
}
check stats-unlimited unlimited
delete_paused() {
    rt pause freeze && down freeze
}
check delete-paused delete_paused

# --- devices: the BPF program allows what the rules allow, denies the rest. ---
check devices-up up devices
devices() {
    rt exec --cap CAP_MKNOD devices mknod /dev/k c 1 11 || { echo "mknod (allowed by the default rules) failed"; return 1; }
    out=$(rt exec devices head -n 1 /dev/k 2>&1) || { echo "reading c 1:11 (rule r) failed: $out"; return 1; }
    out=$(rt exec devices sh -c 'echo hi >/dev/k' 2>&1) && { echo "writing c 1:11 (rule r) succeeded"; return 1; }
    case "$out" in *"not permitted"*) ;; *) echo "writing c 1:11: $out"; return 1 ;; esac
    rt exec --cap CAP_MKNOD devices mknod /dev/loop-denied b 7 0 || return 1
    out=$(rt exec devices head -c 1 /dev/loop-denied 2>&1) && { echo "opening b 7:0 (no rule) succeeded"; return 1; }
    case "$out" in *"not permitted"*) ;; *) echo "opening b 7:0: $out"; return 1 ;; esac
    rt exec devices sh -c 'echo x >/dev/null && head -c 4 /dev/zero | wc -c | grep -qx 4' ||
        { echo "the default devices do not work"; return 1; }
}
check device-rules-enforced devices
check devices-down down devices

# --- podman run --memory 64m --pids-limit 20 --cpus 0.5, as its spec. ---
check podman-up up podman
check podman-memory-max want "$(cg podman)/memory.max" 67108864
check podman-memory-swap-max want "$(cg podman)/memory.swap.max" 67108864
check podman-pids-max want "$(cg podman)/pids.max" 20
check podman-cpu-max want "$(cg podman)/cpu.max" "50000 100000"
inside() {
    out=$(rt exec podman cat /sys/fs/cgroup/memory.max /sys/fs/cgroup/pids.max /sys/fs/cgroup/cpu.max | tr '\n' ' ')
    [ "$out" = "67108864 20 50000 100000 " ] || { echo "inside: $out"; return 1; }
}
check podman-limits-inside inside
# update completes a pair from the saved config, as runc's does: cgroup v2
# writes quota and period into one file (cpu.max) and derives swap alone
# (memory.swap.max) from memory+swap minus the memory limit.
check update-period-keeps-quota sh -c 'berth-runtime --root /run/berth update --cpu-period 200000 podman &&
    v=$(cat /sys/fs/cgroup/berth/podman/cpu.max) && [ "$v" = "50000 200000" ] || { echo "cpu.max: $v"; exit 1; }'
check update-swap-alone sh -c 'berth-runtime --root /run/berth update --memory-swap 256m podman &&
    v=$(cat /sys/fs/cgroup/berth/podman/memory.swap.max) && [ "$v" = 201326592 ] || { echo "memory.swap.max: $v"; exit 1; }'
check update-memory-keeps-swap sh -c 'berth-runtime --root /run/berth update --memory 32m podman &&
    v=$(cat /sys/fs/cgroup/berth/podman/memory.max /sys/fs/cgroup/berth/podman/memory.swap.max | tr "\n" " ") &&
    [ "$v" = "33554432 234881024 " ] || { echo "memory.max memory.swap.max: $v"; exit 1; }'
check podman-down down podman

# --- the other files: hugetlb, io, unified, every controller delegated. ---
insmod /lib/brd.ko rd_nr=1 rd_size=4096
echo 4 >/proc/sys/vm/nr_hugepages
check files-up up files
check hugetlb-max-file want "$(cg files)/hugetlb.2MB.max" 4194304
check io-weight-file has "$(cg files)/io.weight" '^default 4950$'
check io-max-file want "$(cg files)/io.max" "1:0 rbps=10485760 wbps=max riops=max wiops=max"
check block-device-rule rt exec files dd if=/dev/ram0 of=/dev/null bs=4096 count=64 iflag=direct
check io-accounted has "$(cg files)/io.stat" '^1:0 rbytes=[1-9]'
check memory-low-file want "$(cg files)/memory.low" 16777216
check memory-swap-max-file want "$(cg files)/memory.swap.max" max
check cpu-idle-file want "$(cg files)/cpu.idle" 1
check cpu-burst-file want "$(cg files)/cpu.max.burst" 1000
check unified-file want "$(cg files)/memory.high" 52428800
stats_files() {
    rt events --stats files >/tmp/files.stats || return 1
    grep -Eq "$1" /tmp/files.stats || { echo "no $1 in: $(cat /tmp/files.stats)"; return 1; }
}
check io-stats stats_files '"major":1,"minor":0,"op":"Read","value":[1-9]'
hugetlb() {
    rt exec files fallocate -l 4194304 /huge/fits || { echo "4 MiB of huge pages under a 4 MiB limit failed"; return 1; }
    rt exec files fallocate -l 2097152 /huge/over && { echo "2 MiB more huge pages were allowed"; return 1; }
    want "$(cg files)/hugetlb.2MB.current" 4194304 && has "$(cg files)/hugetlb.2MB.events" '^max [1-9]'
}
check hugetlb-limit-enforced hugetlb
check hugetlb-stats stats_files '"hugetlb":\{"2MB":\{"failcnt":[1-9][0-9]*,"max":0,"usage":4194304\}'

check controllers-delegated want "$(cg files)/cgroup.controllers" "$all"
check files-down down files

# --- run in the foreground: the limit inside, the cgroup removed after. ---
run_fg() {
    out=$(rt run --bundle /bundles/run run 2>&1) || { echo "run: $out"; return 1; }
    [ "$out" = 7 ] || { echo "run printed: $out"; return 1; }
    [ ! -e "$(cg run)" ] || { echo "$(cg run) is left after run"; return 1; }
}
check run-foreground run_fg

# --- no cgroupsPath, called from a service's cgroup: the container's
# cgroup goes beside it, as runc's cgroupfs driver places it. ---
relative() {
    svc=/sys/fs/cgroup/system.slice/runner.service
    mkdir -p $svc || return 1
    sh -c "echo \$\$ >$svc/cgroup.procs && exec berth-runtime --root /run/berth create --bundle /bundles/relative relative" \
        >/tmp/relative.out 2>&1 || { cat /tmp/relative.out; return 1; }
    rt start relative || return 1
    want /sys/fs/cgroup/system.slice/relative/pids.max 9 &&
        has /sys/fs/cgroup/system.slice/relative/cgroup.procs '^[0-9]+$'
}
check relative-cgroups-path relative
relative_down() {
    rt delete --force relative && [ ! -e /sys/fs/cgroup/system.slice/relative ] ||
        { echo "/sys/fs/cgroup/system.slice/relative is left after delete"; return 1; }
}
check relative-down relative_down
# A cgroupsPath below a cgroup holding processes: a clear error naming
# cgroup v2's rule, and nothing left behind.
busy_parent() {
    svc=/sys/fs/cgroup/system.slice/busy.service
    mkdir -p $svc /tmp/busy || return 1
    sh -c "echo \$\$ >$svc/cgroup.procs && exec sleep 1000" >/dev/null 2>&1 &
    until_true has $svc/cgroup.procs '^[0-9]+$' || return 1
    sed 's|"cgroupsPath": ""|"cgroupsPath": "/system.slice/busy.service/ctr"|' \
        /bundles/relative/config.json >/tmp/busy/config.json || return 1
    rt create --bundle /tmp/busy busy >/tmp/busy.out 2>&1 && { echo "create succeeded"; return 1; }
    grep -q "no internal processes" /tmp/busy.out || { cat /tmp/busy.out; return 1; }
    [ ! -e $svc/ctr ] || { echo "$svc/ctr is left after the failed create"; return 1; }
}
check busy-parent-refused-clearly busy_parent

# --- Rootless: user 1000 runs a container in a user namespace; it gets a
# cgroup (and its limits) only in a subtree delegated to it the way
# systemd's Delegate=yes does (the directory and its cgroup.procs,
# cgroup.subtree_control and cgroup.threads are the user's), and a limit
# elsewhere is refused naming the missing delegation. ---
echo 'rl:x:1000:1000::/tmp:/bin/sh' >>/etc/passwd
echo 'rl:x:1000:' >>/etc/group
user=/sys/fs/cgroup/user1000
cat >/tmp/as-rl <<'EOF'
#!/bin/sh
# as-rl CMD...: CMD (words without spaces) as user rl, from its session
# cgroup; su keeps the environment but HOME, SHELL, USER and LOGNAME.
echo $$ >/sys/fs/cgroup/user1000/session/cgroup.procs || exit 1
export XDG_RUNTIME_DIR=/run/rl
exec su -s /bin/sh rl -c "exec $*"
EOF
chmod 755 /tmp/as-rl
delegate() {
    mkdir -p $user/session &&
        echo +pids >$user/cgroup.subtree_control &&
        chown 1000:1000 $user $user/cgroup.procs $user/cgroup.subtree_control $user/cgroup.threads &&
        chown -R 1000:1000 $user/session &&
        mkdir -p /run/rl && chown 1000:1000 /run/rl && chmod 700 /run/rl
}
check rootless-delegation delegate
rootless_run() {
    out=$(/tmp/as-rl berth-runtime --rootless run --bundle /bundles/rootless rl1 2>&1) ||
        { echo "run: $out"; return 1; }
    [ "$(echo $out)" = "8 0 1000 1" ] || { echo "run printed: $out"; return 1; }
    [ ! -e $user/c ] || { echo "$user/c is left after run"; return 1; }
}
check rootless-delegated-limits rootless_run
rootless_elsewhere() {
    out=$(/tmp/as-rl berth-runtime --rootless run --bundle /bundles/rootless-elsewhere rl2 2>&1) &&
        { echo "run succeeded: $out"; return 1; }
    # (The static binary finds no NSS module here: the user may show as 1000.)
    echo "$out" | grep -Eq "resource limits need a cgroup delegated to user (rl|1000) \(uid 1000\), and /sys/fs/cgroup is not writable: delegate a cgroup v2 subtree" ||
        { echo "run: $out"; return 1; }
    [ ! -e /sys/fs/cgroup/rl-elsewhere ] || { echo "/sys/fs/cgroup/rl-elsewhere was made"; return 1; }
}
check rootless-undelegated-refused rootless_elsewhere

say "done in $(cut -d" " -f1 /proc/uptime) s"
poweroff -f
