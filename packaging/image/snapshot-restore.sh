#!/bin/sh
# snapshot-restore.sh - the lifecycle end to end in a real VM: boot the image
# that bake-and-boot.sh made with a VM generation ID device, follow a
# process, write a file, quiesce, save the VM to a file (QMP stop and
# migrate), start a new QEMU from that file (-incoming) with another
# generation ID, and check what the agent did about it; then pause the VM
# (QMP stop, cont) and check that the agent noticed that too.
#
#   sudo packaging/image/snapshot-restore.sh [WORKDIR]
#
# WORKDIR is bake-and-boot.sh's (default /var/tmp/sandbox-agent-image); it
# runs bake-and-boot.sh there first when there is no image yet. Needs root,
# qemu-system-x86 and python3 (the QMP client is a few lines of it).
# Settings: HOST_PORT=17000 GUEST_PORT=7000 MEM=1024 SMP=2 ACCEL=tcg
# BOOT_TIMEOUT= as bake-and-boot.sh; PAUSE=5 seconds between save and restore;
# HOLD=12 seconds of the pause (above the agent's --clock-jump-ms, 5 s);
# UPDATE_AGENT=1 builds the agent from this tree (static, in AGENT_BUILD or
# WORKDIR/build-static) and writes its binaries into the existing image with
# debugfs (no mount, no debootstrap), for a run after a change to the agent;
# KERNEL= INITRD= boot another kernel of the image (default WORKDIR/vmlinuz,
# the newest in its /boot), e.g. WORKDIR/rootfs/boot/vmlinuz-6.1.0-50-amd64.
#
# Prints one "ok"/"FAIL" line per check; exits 0 when all passed.
set -eu

SRC=$(cd "$(dirname "$0")/../.." && pwd)
WORK=${1:-/var/tmp/sandbox-agent-image}
GUEST_PORT=${GUEST_PORT:-7000}
HOST_PORT=${HOST_PORT:-17000}
MEM=${MEM:-1024}
SMP=${SMP:-2}
PAUSE=${PAUSE:-5}
HOLD=${HOLD:-12}
IMG=$WORK/disk.img
KERNEL=${KERNEL:-$WORK/vmlinuz}
INITRD=${INITRD:-$WORK/initrd.img}
TOKEN=$WORK/token
CTL=${AGENT_BUILD:-$WORK/build-static}/sandboxctl
QMP=$WORK/qmp.sock
STATE=$WORK/vm.state
O=$WORK/snap
QEMU_PID=
BG_PIDS=

T0=$(date +%s)
say() { printf '[%4ds] %s\n' $(($(date +%s) - T0)) "$*"; }
die() { say "error: $*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "needs root"
for t in qemu-system-x86_64 python3; do
    command -v "$t" >/dev/null 2>&1 || die "$t not found (apt-get install qemu-system-x86 python3)"
done
if [ ! -f "$IMG" ] || [ ! -f "$WORK/vmlinuz" ] || [ ! -x "$CTL" ]; then
    say "no image in $WORK yet: running bake-and-boot.sh first"
    sh "$SRC/packaging/image/bake-and-boot.sh" "$WORK" || die "bake-and-boot.sh failed"
fi
if [ "${UPDATE_AGENT:-}" = 1 ]; then
    B=${AGENT_BUILD:-$WORK/build-static}
    command -v debugfs >/dev/null 2>&1 || die "debugfs not found (apt-get install e2fsprogs)"
    say "building the static agent in $B and writing it into $IMG"
    cmake -S "$SRC" -B "$B" -DCMAKE_BUILD_TYPE=Release -DSANDBOX_AGENT_STATIC=ON \
        -DSANDBOX_AGENT_TESTS=OFF -DSANDBOX_AGENT_INSTALL_OPENRC=OFF \
        -DCMAKE_INSTALL_PREFIX=/usr >"$WORK/build.log" 2>&1 || die "cmake failed, see $WORK/build.log"
    make -C "$B" -j"$(nproc)" sandbox-agent sandboxctl >>"$WORK/build.log" 2>&1 ||
        die "build failed, see $WORK/build.log"
    for f in sandbox-agent sandboxctl; do
        debugfs -w -R "rm /usr/bin/$f" "$IMG" >/dev/null 2>&1 || true
        debugfs -w -R "write $B/$f /usr/bin/$f" "$IMG" >>"$WORK/build.log" 2>&1 &&
            debugfs -w -R "sif /usr/bin/$f mode 0100755" "$IMG" >>"$WORK/build.log" 2>&1 ||
            die "debugfs could not write /usr/bin/$f into $IMG"
    done
    CTL=$B/sandboxctl
fi
rm -rf "$O"
mkdir -p "$O"

# A QMP command (JSON arguments optional); prints the reply. "migrate-wait"
# polls query-migrate until the migration has completed.
qmp() {
    python3 - "$QMP" "$@" <<'EOF'
import json, socket, sys, time
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
f = s.makefile("rw")
def cmd(name, args=None):
    m = {"execute": name}
    if args:
        m["arguments"] = args
    f.write(json.dumps(m) + "\n")
    f.flush()
    while True:
        r = json.loads(f.readline())
        if "return" in r or "error" in r:
            return r
f.readline()
cmd("qmp_capabilities")
name = sys.argv[2]
if name == "cont-after-incoming":
    # The state was saved stopped, so it loads stopped: run it once loaded.
    for _ in range(1200):
        r = cmd("query-status")["return"]
        if r.get("status") != "inmigrate":
            print(json.dumps(cmd("cont")))
            sys.exit(0)
        time.sleep(0.5)
    sys.exit(1)
if name == "migrate-wait":
    for _ in range(600):
        r = cmd("query-migrate")["return"]
        if r.get("status") in ("completed", "failed", "cancelled"):
            print(json.dumps(r))
            sys.exit(0 if r["status"] == "completed" else 1)
        time.sleep(0.5)
    sys.exit(1)
r = cmd(name, json.loads(sys.argv[3]) if len(sys.argv) > 3 else None)
print(json.dumps(r))
sys.exit(1 if "error" in r else 0)
EOF
}

# The same machine both times: migration needs it. $1: accelerator
# arguments (one word list), $2: the generation ID, then extra arguments.
boot() {
    accel=$1 guid=$2
    shift 2
    console=$WORK/console-$guid.log
    say "qemu ($accel), vmgenid $guid $*"
    rm -f "$QMP"
    # shellcheck disable=SC2086
    qemu-system-x86_64 $accel -m "$MEM" -smp "$SMP" -nographic -monitor none \
        -serial "file:$console" -qmp "unix:$QMP,server=on,wait=off" \
        -kernel "$KERNEL" -initrd "$INITRD" \
        -append "root=/dev/vda rw console=ttyS0 panic=-1" -no-reboot \
        -drive "file=$IMG,format=raw,if=virtio" \
        -netdev "user,id=n0,hostfwd=tcp:127.0.0.1:$HOST_PORT-:$GUEST_PORT" \
        -device virtio-net-pci,netdev=n0 \
        -device "vmgenid,guid=$guid" \
        "$@" </dev/null >"$WORK/qemu-$guid.log" 2>&1 &
    QEMU_PID=$!
    CONSOLE=$console
}
cleanup() {
    for p in $BG_PIDS; do kill "$p" 2>/dev/null || true; done
    if [ -n "$QEMU_PID" ] && kill -0 "$QEMU_PID" 2>/dev/null; then
        kill "$QEMU_PID" 2>/dev/null || true
    fi
}
trap cleanup EXIT INT TERM

ctl() { "$CTL" --connect "tcp:127.0.0.1:$HOST_PORT" --token-file "$TOKEN" "$@"; }
wait_agent() {
    B0=$(date +%s)
    until ctl ping >/dev/null 2>&1; do
        kill -0 "$QEMU_PID" 2>/dev/null || die "qemu exited; see $WORK/qemu-*.log and $CONSOLE"
        [ $(($(date +%s) - B0)) -lt "$BOOT_TIMEOUT" ] ||
            die "the agent did not answer within ${BOOT_TIMEOUT}s; see $CONSOLE"
        sleep 1
    done
    say "the agent answers, $(($(date +%s) - B0))s after qemu started"
}
uuid() { cat /proc/sys/kernel/random/uuid; }

FAILED=0
check() { # NAME COMMAND...
    name=$1
    shift
    if "$@" >"$O/last" 2>&1; then
        say "ok   $name"
    else
        say "FAIL $name"
        FAILED=$((FAILED + 1))
    fi
    sed 's/^/       /' "$O/last"
}

# ------------------------------------------------------------------ boot
GUID1=$(uuid)
GUID2=$(uuid)
FORCE_TCG=${ACCEL:-}
ACCEL="-accel tcg"
BOOT_TIMEOUT=${BOOT_TIMEOUT:-900}
if [ "$FORCE_TCG" != tcg ] && [ -r /dev/kvm ] && [ -w /dev/kvm ]; then
    boot "-enable-kvm -cpu host" "$GUID1"
    i=0
    while ! grep -qa "Linux version" "$CONSOLE" 2>/dev/null && [ $i -lt 30 ]; do
        sleep 1
        i=$((i + 1))
    done
    if grep -qa "Linux version" "$CONSOLE" 2>/dev/null; then
        ACCEL="-enable-kvm -cpu host"
    else
        say "no kernel output under KVM after 30s (nested virtualization?); using TCG"
        kill "$QEMU_PID" 2>/dev/null || true
        wait "$QEMU_PID" 2>/dev/null || true
    fi
fi
[ "$ACCEL" = "-accel tcg" ] && boot "$ACCEL" "$GUID1"
wait_agent

# ------------------------------------------------------------------ before
# A counter every 100 ms, followed live; events watched; a file written.
ctl start --tag counter -- sh -c 'i=0; while :; do echo "$i"; i=$((i+1)); sleep 0.1; done' \
    >"$O/pid" || die "start failed"
PID=$(cat "$O/pid")
# The kernel's own uevents, for the record: what the guest announced.
ctl start --tag uevents -- udevadm monitor --kernel --property >/dev/null 2>&1 || true
ctl logs -f "$PID" >"$O/part1" 2>"$O/part1.err" &
BG_PIDS="$BG_PIDS $!"
ctl --json events >"$O/events1" 2>&1 &
BG_PIDS="$BG_PIDS $!"
head -c 3000000 /dev/urandom >"$O/blob"
ctl cp "$O/blob" :/root/snap-blob || die "cp failed"
HOST_SUM=$(cksum <"$O/blob")
sleep 2
check "freeze (the automatic choice: the root file system)" \
    sh -c "$CTL --connect tcp:127.0.0.1:$HOST_PORT --token-file $TOKEN freeze --thaw-after 600s | tee $O/freeze && grep -q '^frozen /\$' $O/freeze"
check "info says / is frozen" sh -c "$CTL --connect tcp:127.0.0.1:$HOST_PORT --token-file $TOKEN --json info | tee $O/info1 | grep -q '\"frozen\":\\[\"/\"\\]'"
sleep 1

# ------------------------------------------------------------------ save
say "stop, save the VM's state to $STATE, quit"
rm -f "$STATE"
qmp stop >/dev/null || die "QMP stop failed"
qmp migrate "{\"uri\": \"exec:cat > $STATE\"}" >/dev/null || die "QMP migrate failed"
qmp migrate-wait >"$O/migrate" || die "migration failed: $(cat "$O/migrate")"
qmp quit >/dev/null 2>&1 || true
wait "$QEMU_PID" 2>/dev/null || true
QEMU_PID=
sleep 1
for p in $BG_PIDS; do kill "$p" 2>/dev/null || true; done
BG_PIDS=
SEQ=$(wc -c <"$O/part1")
say "saved $(du -m "$STATE" | cut -f1) MiB; the follower had $SEQ bytes; waiting ${PAUSE}s"
sleep "$PAUSE"

# ------------------------------------------------------------------ restore
boot "$ACCEL" "$GUID2" -incoming "exec:cat $STATE"
i=0
until [ -S "$QMP" ] || [ $i -ge 60 ]; do
    sleep 1
    i=$((i + 1))
done
qmp cont-after-incoming >/dev/null || die "the incoming VM did not load; see $WORK/qemu-$GUID2.log"
say "loaded; running again"
wait_agent
sleep 2

noticed() {
    ctl --json info | tee "$O/info2" &&
        grep -q '"restores":1' "$O/info2" && grep -q '"frozen":\[\]' "$O/info2"
}
check "the agent noticed the restore by itself (restores 1) and thawed /" noticed
ctl logs uevents 2>&1 | grep -E "^(KERNEL|ACTION|DEVPATH|NEW_VMGENID)" | tail -n 8 | sed 's/^/       guest uevent: /' || true
check "the root file system takes writes" ctl run -- sh -c 'echo after >/root/after && cat /root/after'
sleep 1
followed() {
    ctl logs --from "$SEQ" "$PID" >"$O/part2" &&
        cat "$O/part1" "$O/part2" >"$O/joined" &&
        python3 - "$O/joined" <<'EOF'
import sys
data = open(sys.argv[1]).read()
lines = data.split("\n")
if lines and lines[-1] == "":
    lines.pop()
else:
    lines = lines[:-1]  # a line being written
nums = [int(x) for x in lines]
if nums != list(range(len(nums))):
    sys.exit("not every counter line exactly once")
print("%d counter lines, 0..%d, each once" % (len(nums), nums[-1]))
EOF
}
check "a follower resuming from its last byte ($SEQ) gets every line exactly once" followed
intact() {
    guest=$(ctl run -- sh -c 'cksum </root/snap-blob') && echo "host $HOST_SUM, guest $guest" &&
        [ "$guest" = "$HOST_SUM" ]
}
check "the file written before the snapshot is intact" intact
stepped() {
    ctl --json restored --time now --entropy-from /dev/urandom --generation 2 | tee "$O/restored" &&
        python3 -c "import json,sys; r=json.load(open('$O/restored')); s=r['clock_step_nano']; print('clock stepped by %+.3f s' % (s/1e9)); sys.exit(0 if s > ${PAUSE}000000000 // 2 else 1)"
}
check "Restored steps the clock forward by the time the VM was away" stepped
check "info: generation 2" sh -c "$CTL --connect tcp:127.0.0.1:$HOST_PORT --token-file $TOKEN --json info | grep -q '\"generation\":2'"

# ------------------------------------------------------------------ pause
# A pause that is no restore: QMP stop and cont keep the generation ID, and
# the guest's clocks stand still meanwhile; only the RTC (the host's clock)
# moves on. Signs within 30 s of running time of the last restore are that
# restore, so this waits that out first.
sleep 35
say "pause: QMP stop, ${HOLD}s, cont"
qmp stop >/dev/null || die "QMP stop failed"
sleep "$HOLD"
qmp cont >/dev/null || die "QMP cont failed"
paused() {
    i=0
    until ctl --json info >"$O/info3" 2>&1 && grep -q '"restores":2' "$O/info3"; do
        i=$((i + 1))
        [ $i -lt 30 ] || { cat "$O/info3"; return 1; }
        sleep 1
    done
    echo "restores 2 after ${i}s"
}
check "the agent noticed the pause by itself (the RTC; restores 2)" paused
ctl run -- sh -c 'journalctl -u sandbox-agent --no-pager | grep -E "uevent|kmsg|rtc|restore|thaw|quiesce|froze" | tail -n 12' \
    >"$O/journal" 2>&1 || true
sed 's/^/       journal: /' "$O/journal"

say "poweroff through the agent"
ctl start -- systemctl poweroff >/dev/null 2>&1 || true
i=0
while kill -0 "$QEMU_PID" 2>/dev/null && [ $i -lt 120 ]; do
    sleep 1
    i=$((i + 1))
done
kill -0 "$QEMU_PID" 2>/dev/null && { say "FAIL the VM did not power off"; FAILED=$((FAILED + 1)); }
QEMU_PID=
rm -f "$STATE"
say "done: $FAILED failed, $(($(date +%s) - T0))s in all"
[ "$FAILED" = 0 ]
