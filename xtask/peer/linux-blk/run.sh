#!/usr/bin/env bash
# Linux 6.1's cost of a 4 KiB virtio-blk read, beside `cargo xtask bench`'s blk_* figures.
#
#   xtask/peer/linux-blk/run.sh [SMP ...]      default: 1 4
#
# Extends ../shared/peers/linux (read-only; its run.sh downloads Debian's arm64 kernel and
# headers into $WORK, and this script runs it once if they are not there yet). Builds
# peerblk.ko and a static /init against them, puts Debian's virtio_mmio.ko and virtio_blk.ko
# (modules in that kernel) into the initramfs, and boots the machine bench-format.md names,
# with the disk image `cargo xtask bench` generates (8 MiB, xtask/src/disk.rs) attached the
# way xtask attaches it. Prints bench-format lines:
#
#   blk_read_4k_qd1, blk_read_4k_qd32  bio submit to bi_end_io's first line, in the kernel
#                                      (what the Rust kernel's figures of those names count)
#   blk_pread_4k_qd1                   O_DIRECT pread(2), system call to return, user space
#   blk_aio_4k_qd32                    32 O_DIRECT reads by io_submit(2) + io_getevents(2), per read
#
# all in guest instructions retired (the PMU's INST_RETIRED; see peerblk.c for why not the
# clock). Environment: WORK (default /tmp/peer-linux), PEER (default ../shared/peers/linux
# beside the repository), ITERS (1000), QEMU, TIMEOUT (600 s).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../../.." && pwd)"
PEER="${PEER:-$REPO/../shared/peers/linux}"
WORK="${WORK:-/tmp/peer-linux}"
ITERS="${ITERS:-1000}"
QEMU="${QEMU:-qemu-system-aarch64}"
TIMEOUT="${TIMEOUT:-600}"
KABI="${PEER_KABI:-6.1.0-56}"
SMPS=("${@:-1 4}")
[ $# -gt 0 ] || SMPS=(1 4)

log() { echo "# $*" >&2; }

ROOT="$WORK/root-$KABI"
if [ ! -f "$ROOT/.complete" ]; then
	[ -x "$PEER/run.sh" ] || { echo "no Linux peer at $PEER (set PEER=)" >&2; exit 1; }
	log "fetching Debian's arm64 kernel through $PEER/run.sh (one short boot)"
	RUNS=1 ITERS=20 KT_ITERS=20 WORK="$WORK" "$PEER/run.sh" 1 3 icount >/dev/null
fi
KIMG="$ROOT/boot/vmlinuz-$KABI-arm64"
KDIR="$ROOT/usr/src/linux-headers-$KABI-arm64"
IMAGE_DEB="$(ls "$WORK/debs-$KABI"/linux-image-"$KABI"-arm64_*_arm64.deb)"

B="$WORK/blk-$KABI"
srcsum="$(cat "$HERE/peerblk.c" "$HERE/init.c" "$HERE/run.sh" | sha256sum | cut -c1-16)"
if [ ! -f "$B/initrd.cpio" ] || [ "$(cat "$B/.srcsum" 2>/dev/null)" != "$srcsum" ]; then
	log "building peerblk.ko and /init against $KDIR"
	rm -rf "$B"
	mkdir -p "$B/mod" "$B/initrd/proc" "$B/initrd/dev" "$B/x"
	cp "$HERE/peerblk.c" "$B/mod/"
	echo "obj-m := peerblk.o" >"$B/mod/Kbuild"
	make -s -C "$KDIR" M="$B/mod" ARCH=arm64 CROSS_COMPILE=aarch64-linux-gnu- modules \
		>"$B/mod/build.log" 2>&1 || { cat "$B/mod/build.log" >&2; exit 1; }
	aarch64-linux-gnu-gcc -static -O2 -Wall -s -o "$B/initrd/init" "$HERE/init.c"
	aarch64-linux-gnu-strip --strip-debug --remove-section=.note.gnu.build-id \
		-o "$B/initrd/peerblk.ko" "$B/mod/peerblk.ko"
	dpkg-deb --fsys-tarfile "$IMAGE_DEB" | tar -x -C "$B/x" \
		"./lib/modules/$KABI-arm64/kernel/drivers/virtio/virtio_mmio.ko" \
		"./lib/modules/$KABI-arm64/kernel/drivers/block/virtio_blk.ko"
	find "$B/x" -name '*.ko' -exec cp {} "$B/initrd/" \;
	# fixed mtimes, no build ids: the initrd's bytes do not depend on $WORK or the time
	find "$B/initrd" -exec touch -h -d @0 {} +
	(cd "$B/initrd" && find . | LC_ALL=C sort | cpio -o -H newc --owner 0:0 --reproducible --quiet >"$B/initrd.cpio")
	echo "$srcsum" >"$B/.srcsum"
fi

# The image `cargo xtask bench` attaches: 16384 sectors, each "sector N\n" then N % 251.
DISK="$B/bench.img"
python3 - "$DISK" <<'EOF'
import sys
with open(sys.argv[1], "wb") as f:
    for n in range(16384):
        head = f"sector {n}\n".encode()
        f.write(head + bytes([n % 251]) * (512 - len(head)))
EOF

for smp in "${SMPS[@]}"; do
	log="$B/smp$smp.log"
	cmd=("$QEMU" -M virt,gic-version=3,dtb-randomness=off -cpu cortex-a72 -smp "$smp" -m 1G
		-nographic -no-reboot -rtc base=2025-01-01T00:00:00,clock=vm
		-drive "file=$DISK,if=none,format=raw,id=vd0" -device virtio-blk-device,drive=vd0
		-icount shift=0,align=off,sleep=off
		-kernel "$KIMG" -initrd "$B/initrd.cpio"
		-append "console=ttyAMA0 quiet panic=-1 peerblk.iters=$ITERS")
	echo "${cmd[*]}" >"$B/smp$smp.cmd"
	t0=$(date +%s)
	timeout "$TIMEOUT" "${cmd[@]}" </dev/null >"$log" 2>&1 || true
	if grep -q "PEERBENCH error" "$log" || ! grep -q "PEERBENCH end" "$log"; then
		grep "PEERBENCH error" "$log" >&2 || true
		log "smp $smp FAILED (see $log)"
		continue
	fi
	grep "PEERBENCH info" "$log" | sed 's/^.*PEERBENCH info /# linux smp '"$smp"': /' >&2 || true
	sed -n 's/^.*PEERBENCH metric=\([^ ]*\) unit=\([^ ]*\) median=\([^ ]*\) min=\([^ ]*\) max=\([^ ]*\) n=\([^ ]*\).*$/metric=\1 board=virt smp='"$smp"' gic=3 unit=\2 median=\3 min=\4 max=\5 n=\6 mode=icount peer=linux/p' "$log" | tr -d '\r'
	log "smp $smp: $(( $(date +%s) - t0 )) s, log $log"
done
