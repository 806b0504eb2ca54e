#!/bin/sh
# bake-and-boot.sh - bake sandbox-agent into a minimal Debian image, boot it
# under QEMU with user networking, and drive it from the host with sandboxctl
# over a forwarded TCP port with a token: the real path from image to control
# plane.
#
#   sudo packaging/image/bake-and-boot.sh [WORKDIR]
#
# Needs root (debootstrap, chroot), network access to the Debian archive, and
# debootstrap, qemu-system-x86, e2fsprogs, cmake and the agent's build
# dependencies (with their static archives: libev-dev, libprotobuf-c-dev,
# zlib1g-dev, libdeflate-dev). Uses KVM when /dev/kvm is usable, else TCG (much slower).
#
# Settings (environment):
#   SUITE=bookworm  MIRROR=URL (default: debootstrap's own configured mirror)
#   AGENT_BUILD=DIR   a build of the agent to install (default: a static
#                     Release build in WORKDIR/build-static)
#   GUEST_PORT=7000   the agent's TCP port inside the VM
#   HOST_PORT=17000   forwarded to it on 127.0.0.1
#   MEM=1024 SMP=2    the VM's memory (MiB) and CPUs
#   BOOT_TIMEOUT=     seconds to wait for the agent (default 180 KVM, 900 TCG)
#   ACCEL=tcg         never try KVM
#   KEEP_ROOTFS=1     reuse WORKDIR/rootfs from an earlier run (skips debootstrap)
#
# Prints one "ok"/"FAIL" line per check; exits 0 when all passed.
set -eu

SRC=$(cd "$(dirname "$0")/../.." && pwd)
WORK=${1:-/var/tmp/sandbox-agent-image}
SUITE=${SUITE:-bookworm}
MIRROR=${MIRROR:-}
GUEST_PORT=${GUEST_PORT:-7000}
HOST_PORT=${HOST_PORT:-17000}
MEM=${MEM:-1024}
SMP=${SMP:-2}
ROOT=$WORK/rootfs
IMG=$WORK/disk.img
CONSOLE=$WORK/console.log
TOKEN=$WORK/token
QEMU_PID=

T0=$(date +%s)
say() { printf '[%4ds] %s\n' $(($(date +%s) - T0)) "$*"; }
die() { say "error: $*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "needs root (debootstrap and chroot)"
for t in debootstrap qemu-system-x86_64 mkfs.ext4 cmake; do
    command -v "$t" >/dev/null 2>&1 ||
        die "$t not found (apt-get install debootstrap qemu-system-x86 e2fsprogs cmake)"
done
mkdir -p "$WORK"

# ------------------------------------------------------------------ build
# A fully static agent drops into any image whatever its libc.
if [ -z "${AGENT_BUILD:-}" ]; then
    AGENT_BUILD=$WORK/build-static
    say "building the static agent in $AGENT_BUILD"
    cmake -S "$SRC" -B "$AGENT_BUILD" -DCMAKE_BUILD_TYPE=Release -DSANDBOX_AGENT_STATIC=ON \
        -DSANDBOX_AGENT_TESTS=OFF -DSANDBOX_AGENT_INSTALL_OPENRC=OFF \
        -DCMAKE_INSTALL_PREFIX=/usr >"$WORK/build.log" 2>&1 ||
        die "cmake failed, see $WORK/build.log"
    make -C "$AGENT_BUILD" -j"$(nproc)" sandbox-agent sandboxctl sandbox-agent-docs \
        >>"$WORK/build.log" 2>&1 ||
        die "build failed, see $WORK/build.log"
fi
CTL=$AGENT_BUILD/sandboxctl
[ -x "$AGENT_BUILD/sandbox-agent" ] && [ -x "$CTL" ] || die "no binaries in $AGENT_BUILD"

# ------------------------------------------------------------------ rootfs
# minbase plus systemd (the unit is what we test), udev (loads the virtio
# modules), the kernel and its initramfs. Nothing else: no ssh, no network
# manager beyond systemd-networkd.
if [ "${KEEP_ROOTFS:-}" = 1 ] && [ -x "$ROOT/bin/sh" ]; then
    say "reusing $ROOT"
else
    rm -rf "$ROOT"
    say "debootstrap $SUITE${MIRROR:+ from $MIRROR} (a few minutes)"
    debootstrap --variant=minbase \
        --include=systemd-sysv,udev,kmod,linux-image-amd64,initramfs-tools,iproute2 \
        "$SUITE" "$ROOT" ${MIRROR:+"$MIRROR"} >"$WORK/debootstrap.log" 2>&1 ||
        die "debootstrap failed, see $WORK/debootstrap.log"
fi

say "installing the agent, its unit and a token"
# The install rules put the binaries, the unit (ExecStart= for /usr) and
# /etc/default/sandbox-agent in place, as they would in a package build.
DESTDIR=$ROOT cmake --install "$AGENT_BUILD" --prefix /usr >>"$WORK/build.log" 2>&1 ||
    die "cmake --install failed, see $WORK/build.log"
# A fresh token for this image, shared with the host side only.
umask 077
head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$TOKEN"
mkdir -p "$ROOT/etc/sandbox-agent"
cp "$TOKEN" "$ROOT/etc/sandbox-agent/token"
chmod 0600 "$ROOT/etc/sandbox-agent/token"
umask 022
# No vsock device in this VM: the control plane comes over TCP.
cat >"$ROOT/etc/default/sandbox-agent" <<EOF
SANDBOX_AGENT_OPTS="--listen unix:/run/sandbox-agent.sock --listen tcp:0.0.0.0:$GUEST_PORT --token-file /etc/sandbox-agent/token"
EOF
chroot "$ROOT" systemctl enable sandbox-agent.service >/dev/null 2>&1 ||
    die "systemctl enable sandbox-agent failed in the chroot"

# The rest of a bootable system: the root file system, a host name, the
# network (QEMU's user network is 10.0.2.0/24), and no root password prompt
# in the way of the serial console.
echo "/dev/vda / ext4 rw,errors=remount-ro 0 1" >"$ROOT/etc/fstab"
echo sandbox >"$ROOT/etc/hostname"
mkdir -p "$ROOT/etc/systemd/network"
cat >"$ROOT/etc/systemd/network/10-qemu.network" <<EOF
[Match]
Name=e*

[Network]
Address=10.0.2.15/24
Gateway=10.0.2.2
EOF
chroot "$ROOT" systemctl enable systemd-networkd.service >/dev/null 2>&1 ||
    die "systemctl enable systemd-networkd failed in the chroot"
chroot "$ROOT" passwd -d root >/dev/null

KERNEL=$(ls "$ROOT"/boot/vmlinuz-* | sort -V | tail -n 1)
INITRD=$(ls "$ROOT"/boot/initrd.img-* | sort -V | tail -n 1)
[ -f "$KERNEL" ] && [ -f "$INITRD" ] || die "no kernel or initrd in $ROOT/boot"
cp "$KERNEL" "$WORK/vmlinuz"
cp "$INITRD" "$WORK/initrd.img"

# ------------------------------------------------------------------ image
# mkfs.ext4 -d copies the tree into the new file system: no loop mount.
SIZE_MB=$(( $(du -sm "$ROOT" | cut -f1) * 3 / 2 + 256 ))
say "making a ${SIZE_MB} MiB ext4 image"
rm -f "$IMG"
mkfs.ext4 -q -F -L root -d "$ROOT" "$IMG" "${SIZE_MB}M" >"$WORK/mkfs.log" 2>&1 ||
    die "mkfs.ext4 failed, see $WORK/mkfs.log"

# ------------------------------------------------------------------ boot
boot() { # ACCEL...
    say "booting under qemu ($*), console in $CONSOLE"
    rm -f "$CONSOLE"
    qemu-system-x86_64 "$@" -m "$MEM" -smp "$SMP" -nographic -monitor none \
        -serial "file:$CONSOLE" \
        -kernel "$WORK/vmlinuz" -initrd "$WORK/initrd.img" \
        -append "root=/dev/vda rw console=ttyS0 panic=-1" -no-reboot \
        -drive "file=$IMG,format=raw,if=virtio" \
        -netdev "user,id=n0,hostfwd=tcp:127.0.0.1:$HOST_PORT-:$GUEST_PORT" \
        -device virtio-net-pci,netdev=n0 \
        </dev/null >"$WORK/qemu.log" 2>&1 &
    QEMU_PID=$!
}
cleanup() {
    if [ -n "$QEMU_PID" ] && kill -0 "$QEMU_PID" 2>/dev/null; then
        kill "$QEMU_PID" 2>/dev/null || true
    fi
}
trap cleanup EXIT INT TERM

# KVM when it works. Nested KVM (a VM inside a VM) can hang the guest before
# the kernel prints anything: without a kernel line within 30 s, use TCG.
TCG_TIMEOUT=${BOOT_TIMEOUT:-900}
if [ "${ACCEL:-}" != tcg ] && [ -r /dev/kvm ] && [ -w /dev/kvm ]; then
    BOOT_TIMEOUT=${BOOT_TIMEOUT:-180}
    boot -enable-kvm -cpu host
    i=0
    while ! grep -qa "Linux version" "$CONSOLE" 2>/dev/null && [ $i -lt 30 ]; do
        sleep 1
        i=$((i + 1))
    done
    if ! grep -qa "Linux version" "$CONSOLE" 2>/dev/null; then
        say "no kernel output under KVM after 30s (nested virtualization?); using TCG"
        kill "$QEMU_PID" 2>/dev/null || true
        wait "$QEMU_PID" 2>/dev/null || true
        BOOT_TIMEOUT=$TCG_TIMEOUT
        boot -accel tcg
    fi
else
    BOOT_TIMEOUT=$TCG_TIMEOUT
    boot -accel tcg
fi

ctl() { "$CTL" --connect "tcp:127.0.0.1:$HOST_PORT" --token-file "$TOKEN" "$@"; }

BOOT0=$(date +%s)
until ctl ping >/dev/null 2>&1; do
    kill -0 "$QEMU_PID" 2>/dev/null || die "qemu exited; see $WORK/qemu.log and $CONSOLE"
    [ $(($(date +%s) - BOOT0)) -lt "$BOOT_TIMEOUT" ] ||
        die "the agent did not answer within ${BOOT_TIMEOUT}s; see $CONSOLE"
    sleep 2
done
say "the agent answers, $(($(date +%s) - BOOT0))s after qemu started"

# ------------------------------------------------------------------ checks
FAILED=0
check() { # NAME OUTPUT-FILE COMMAND...
    name=$1 out=$2
    shift 2
    if "$@" >"$out" 2>&1; then
        say "ok   $name"
    else
        say "FAIL $name"
        sed 's/^/       /' "$out"
        FAILED=$((FAILED + 1))
    fi
}
O=$WORK/out
mkdir -p "$O"

check "ping" "$O/ping" ctl ping 3
sed 's/^/       /' "$O/ping"
check "info" "$O/info" ctl info
sed 's/^/       /' "$O/info"

uname_in_guest() { ctl run -- uname -a && ctl run -- uname -a | grep -q '^Linux sandbox '; }
check "run -- uname -a (host name 'sandbox')" "$O/uname" uname_in_guest
sed -n 1p "$O/uname" | sed 's/^/       /'

systemd_unit() { ctl run -- systemctl is-active sandbox-agent.service; }
check "the agent runs as the systemd unit" "$O/unit" systemd_unit

round_trip() {
    head -c 5000000 /dev/urandom >"$O/blob"
    ctl cp "$O/blob" :/root/blob &&
        ctl cp :/root/blob "$O/blob.back" &&
        host_crc=$(cksum <"$O/blob") &&
        back_crc=$(cksum <"$O/blob.back") &&
        guest_crc=$(ctl run -- sh -c 'cksum </root/blob') &&
        echo "host $host_crc, guest $guest_crc, back $back_crc" &&
        [ "$host_crc" = "$back_crc" ] && [ "$host_crc" = "$guest_crc" ]
}
check "cp 5 MB to the guest and back, cksum equal on host, guest and copy" "$O/cp" round_trip
sed 's/^/       /' "$O/cp"

wrong_token() {
    echo not-the-token >"$O/bad-token"
    if "$CTL" --connect "tcp:127.0.0.1:$HOST_PORT" --token-file "$O/bad-token" ping; then
        return 1
    fi
    return 0
}
check "a wrong token is refused" "$O/bad" wrong_token
sed 's/^/       /' "$O/bad"

# ------------------------------------------------------------------ containment
# The unit delegates its cgroup (Delegate=yes): every process gets a leaf
# under .../sandbox-agent.service/workload, with the cpu, memory and pids
# controllers that limits need.
in_leaf() {
    ctl run -- cat /proc/self/cgroup &&
        ctl run -- cat /proc/self/cgroup | grep -q '^0::/system.slice/sandbox-agent.service/workload/p-'
}
check "each process in a cgroup of its own, in the unit's delegated one" "$O/cg" in_leaf
sed 's/^/       /' "$O/cg"

# 256 MiB held by the shell against memory.max 64 MiB: the OOM killer ends
# it, and the exit says oom_killed (sandboxctl prints it).
oom() {
    err=$(ctl run --memory-max 67108864 -- \
        sh -c 'x=$(head -c 268435456 /dev/zero | tr "\000" a); echo ${#x}' 2>&1 >/dev/null)
    st=$?
    echo "exit status $st: $err"
    [ "$st" = 137 ] && echo "$err" | grep -q "OOM killer"
}
check "memory.max: the OOM kill is reported as such (oom_killed)" "$O/oom" oom
sed 's/^/       /' "$O/oom"

# A bounded fork bomb (a binary tree of depth 7: at most 255 shells and 255
# sleeps) against pids.max 20: it stays at 20, forks past it fail, and the
# agent keeps answering; the timeout ends it all.
pids() {
    pid=$(ctl start --pids-max 20 --timeout 6 -- \
        sh -c 'b() { if [ $1 -gt 0 ]; then b $(($1 - 1)) & b $(($1 - 1)) & fi; sleep 4; }; b 7') ||
        return 1
    sleep 2
    line=$(ctl --json ps | grep "\"pid\":$pid,") || return 1
    cur=$(echo "$line" | sed 's/.*"pids_current":\([0-9]*\).*/\1/')
    cg=$(echo "$line" | sed 's/.*"cgroup":"\([^"]*\)".*/\1/')
    refused=$(ctl run -- sed -n 's/^max //p' "/sys/fs/cgroup$cg/pids.events") || return 1
    ctl ping 3 || return 1
    echo "pids.current $cur (limit 20), forks refused $refused, cgroup $cg"
    ctl wait "$pid" >/dev/null 2>&1
    [ "$cur" -ge 1 ] && [ "$cur" -le 20 ] && [ "$refused" -gt 0 ]
}
check "pids.max: a fork bomb stops at the limit, the agent answers" "$O/pids" pids
sed 's/^/       /' "$O/pids"

# A busy loop for 3 s at cpu_max_millicores 100 (10% of a CPU): its CPU
# time over the scheduler's periods that passed meanwhile (cpu.stat's
# nr_periods of 100 ms; under TCG the guest's clocks drift apart, so the
# periods are the measure, not the 3 s) must be near 10%.
cpu() {
    res=$(ctl run --cpu-max 100 -- sh -c 'cg=/sys/fs/cgroup$(cut -d: -f3 /proc/self/cgroup);
        timeout 3 sh -c "while :; do :; done"; echo "cpu.max $(cat $cg/cpu.max)";
        cat $cg/cpu.stat') || return 1
    echo "$res"
    us=$(echo "$res" | sed -n "s/^usage_usec //p")
    periods=$(echo "$res" | sed -n "s/^nr_periods //p")
    [ -n "$us" ] && [ "${periods:-0}" -gt 0 ] || return 1
    pct=$((us * 100 / (periods * 100000)))
    echo "CPU time $us us over $periods periods of 100 ms: $pct% of a CPU"
    [ "$us" -gt 0 ] && [ "$pct" -ge 5 ] && [ "$pct" -le 15 ]
}
check "cpu.max: 100 millicores hold a busy loop near 10% of a CPU" "$O/cpu" cpu
sed 's/^/       /' "$O/cpu"

# ------------------------------------------------------------------ shutdown
# Through the agent itself: systemd stops the unit (SIGTERM to the agent, which
# stops its process groups and exits 0), then powers off; -no-reboot makes
# QEMU exit.
say "poweroff through the agent"
ctl start -- systemctl poweroff >/dev/null 2>&1 || true
i=0
while kill -0 "$QEMU_PID" 2>/dev/null && [ $i -lt 120 ]; do
    sleep 1
    i=$((i + 1))
done
if kill -0 "$QEMU_PID" 2>/dev/null; then
    say "FAIL the VM did not power off within 120s"
    FAILED=$((FAILED + 1))
else
    wait "$QEMU_PID" 2>/dev/null || true
    QEMU_PID=
    if grep -q "Stopped sandbox-agent" "$CONSOLE" || grep -q "reboot: Power down" "$CONSOLE"; then
        say "ok   the VM powered off"
    else
        say "FAIL the VM stopped without powering off; see $CONSOLE"
        FAILED=$((FAILED + 1))
    fi
fi

say "done: $FAILED failed, $(($(date +%s) - T0))s in all"
[ "$FAILED" = 0 ]
