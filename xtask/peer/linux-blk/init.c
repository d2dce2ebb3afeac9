/*
 * Static /init for the virtio-blk peer measurement (see run.sh).
 *  - pins itself to CPU 0 (the PMU counter it reads is CPU 0's)
 *  - loads virtio_mmio.ko and virtio_blk.ko (modules in Debian's kernel), waits for /dev/vda
 *  - loads peerblk.ko, which programs the PMU and measures bio submit -> bi_end_io in-kernel
 *  - then counts, from user space, O_DIRECT 4 KiB reads of /dev/vda: one at a time with
 *    pread (blk_pread_4k_qd1) and 32 at a time with Linux AIO (blk_aio_4k_qd32): the
 *    retired instructions from before the system call to after the last completion is
 *    reaped, so these include system-call entry and exit, the waiter's wakeup and switch
 *  - prints the kernel's PEERBENCH lines and its own, and powers the machine off
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/aio_abi.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/klog.h>
#include <sys/mount.h>
#include <sys/reboot.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <linux/fs.h>

#define DEPTH 32
#define READ 4096

static inline uint32_t pmu(void)
{
	uint64_t v;
	__asm__ volatile("isb\n\tmrs %0, pmevcntr0_el0" : "=r"(v) : : "memory");
	return (uint32_t)v;
}

static int load(const char *path, const char *params)
{
	int fd = open(path, O_RDONLY);
	if (fd < 0 || syscall(SYS_finit_module, fd, params, 0) != 0) {
		printf("PEERBENCH error finit_module %s: %s\n", path, strerror(errno));
		return -1;
	}
	close(fd);
	return 0;
}

static int cmp(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

static void report(const char *metric, uint64_t *v, int n, int hundredths)
{
	qsort(v, n, sizeof(*v), cmp);
	if (hundredths)
		printf("PEERBENCH metric=%s unit=insns median=%llu.%02llu min=%llu.%02llu max=%llu.%02llu n=%d\n",
		       metric, (unsigned long long)v[n / 2] / 100, (unsigned long long)v[n / 2] % 100,
		       (unsigned long long)v[0] / 100, (unsigned long long)v[0] % 100,
		       (unsigned long long)v[n - 1] / 100, (unsigned long long)v[n - 1] % 100, n);
	else
		printf("PEERBENCH metric=%s unit=insns median=%llu min=%llu max=%llu n=%d\n", metric,
		       (unsigned long long)v[n / 2], (unsigned long long)v[0],
		       (unsigned long long)v[n - 1], n);
}

static void user_reads(int iters, int warmup)
{
	int fd = open("/dev/vda", O_RDONLY | O_DIRECT);
	uint64_t bytes = 0, span, *qd1 = calloc(iters, 8), *qd32 = calloc(iters, 8);
	unsigned char *buf;
	aio_context_t ctx = 0;

	if (fd < 0 || ioctl(fd, BLKGETSIZE64, &bytes) != 0 || posix_memalign((void **)&buf, READ, READ * DEPTH)) {
		printf("PEERBENCH error open /dev/vda O_DIRECT: %s\n", strerror(errno));
		return;
	}
	span = bytes / 512 - 8;
	for (int i = 0; i < warmup + iters; i++) {
		off_t off = (off_t)(((uint64_t)i * 8 * 37) % span) * 512;
		uint32_t w0 = pmu();
		ssize_t n = pread(fd, buf, READ, off);
		uint32_t w1 = pmu();
		if (n != READ) {
			printf("PEERBENCH error pread: %zd %s\n", n, strerror(errno));
			return;
		}
		if (i >= warmup)
			qd1[i - warmup] = w1 - w0;
	}
	report("blk_pread_4k_qd1", qd1, iters, 0);

	if (syscall(SYS_io_setup, DEPTH, &ctx) != 0) {
		printf("PEERBENCH error io_setup: %s\n", strerror(errno));
		return;
	}
	for (int i = 0; i < warmup + iters; i++) {
		struct iocb cbs[DEPTH], *list[DEPTH];
		struct io_event ev[DEPTH];
		int got = 0;
		memset(cbs, 0, sizeof(cbs));
		for (int k = 0; k < DEPTH; k++) {
			cbs[k].aio_fildes = fd;
			cbs[k].aio_lio_opcode = IOCB_CMD_PREAD;
			cbs[k].aio_buf = (uint64_t)(uintptr_t)(buf + k * READ);
			cbs[k].aio_nbytes = READ;
			cbs[k].aio_offset = (int64_t)((((uint64_t)(i * DEPTH + k)) * 8 * 37) % span) * 512;
			list[k] = &cbs[k];
		}
		uint32_t w0 = pmu();
		long s = syscall(SYS_io_submit, ctx, DEPTH, list);
		while (s == DEPTH && got < DEPTH) {
			long r = syscall(SYS_io_getevents, ctx, DEPTH - got, DEPTH - got, ev + got, NULL);
			if (r <= 0)
				break;
			got += r;
		}
		uint32_t w1 = pmu();
		if (s != DEPTH || got != DEPTH) {
			printf("PEERBENCH error aio: submitted %ld, reaped %d: %s\n", s, got, strerror(errno));
			return;
		}
		for (int k = 0; k < DEPTH; k++)
			if (ev[k].res != READ) {
				printf("PEERBENCH error aio read: %lld\n", (long long)ev[k].res);
				return;
			}
		if (i >= warmup)
			qd32[i - warmup] = (uint64_t)(w1 - w0) * 100 / DEPTH;
	}
	report("blk_aio_4k_qd32", qd32, iters, 1);
}

int main(void)
{
	static char cmdline[4096], params[512];
	int iters = 1000, warmup = 100, fd, n;
	cpu_set_t one;

	mount("proc", "/proc", "proc", 0, NULL);
	mount("devtmpfs", "/dev", "devtmpfs", 0, NULL);
	CPU_ZERO(&one);
	CPU_SET(0, &one);
	if (sched_setaffinity(0, sizeof(one), &one) != 0)
		printf("PEERBENCH error sched_setaffinity: %s\n", strerror(errno));
	fd = open("/proc/cmdline", O_RDONLY);
	if (fd >= 0) {
		n = read(fd, cmdline, sizeof(cmdline) - 1);
		cmdline[n > 0 ? n : 0] = 0;
		close(fd);
	}
	for (char *tok = strtok(cmdline, " \n"); tok; tok = strtok(NULL, " \n")) {
		if (!strncmp(tok, "peerblk.", 8) && strlen(params) + strlen(tok) < sizeof(params) - 2) {
			strcat(params, tok + 8);
			strcat(params, " ");
		}
		if (!strncmp(tok, "peerblk.iters=", 14))
			iters = atoi(tok + 14);
		if (!strncmp(tok, "peerblk.warmup=", 15))
			warmup = atoi(tok + 15);
	}
	fflush(stdout);

	if (load("/virtio_mmio.ko", "") == 0 && load("/virtio_blk.ko", "") == 0) {
		struct stat st;
		for (int k = 0; k < 1000 && stat("/dev/vda", &st) != 0; k++)
			usleep(1000);
		if (load("/peerblk.ko", params) == 0)
			user_reads(iters, warmup);
	}

	int sz = klogctl(10 /* SYSLOG_ACTION_SIZE_BUFFER */, NULL, 0);
	if (sz < (1 << 16))
		sz = 1 << 16;
	char *buf = malloc(sz + 1);
	n = klogctl(3 /* SYSLOG_ACTION_READ_ALL */, buf, sz);
	if (n > 0) {
		buf[n] = 0;
		for (char *line = strtok(buf, "\n"); line; line = strtok(NULL, "\n"))
			if (strstr(line, "PEERBENCH") || strstr(line, "virtio") || strstr(line, "vda") ||
			    strstr(line, "BUG") || strstr(line, "WARNING"))
				printf("KLOG %s\n", line);
	}
	printf("PEERBENCH end\n");
	fflush(stdout);
	sync();
	reboot(RB_POWER_OFF);
	for (;;)
		pause();
	return 0;
}
