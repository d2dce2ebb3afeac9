// SPDX-License-Identifier: GPL-2.0
/*
 * peerblk: what Linux 6.1 pays for one 4 KiB virtio-blk read, counted the way this kernel's
 * `cargo xtask bench` counts its own (`blk_read_4k_qd1`, `blk_read_4k_qd32`): guest
 * instructions retired from just before the submission to the first line of the completion
 * callback (here a bio's bi_end_io), read from the PMU's INST_RETIRED event.
 *
 * Why the PMU and not the clock: under QEMU -icount sleep=off the host's time on a read is a
 * jump of the virtual clock to the next timer deadline, not guest work. QEMU counts
 * INST_RETIRED from its raw instruction counter, without those jumps, and that counter is
 * one for the whole machine: each vCPU's event counter counts every vCPU's instructions
 * (from its own reset), and a CPU idle in WFI adds none.
 *
 * The module also programs every CPU's counter 0 and opens it to EL0 (PMUSERENR_EL0.EN), so
 * that /init can count O_DIRECT pread and Linux AIO reads from user space. Nothing else in
 * this kernel uses the PMU (no perf events, no PMU watchdog in 6.1 arm64).
 *
 *   PEERBENCH metric=<name> unit=insns median=<x> min=<y> max=<z> n=<count>
 */
#include <linux/module.h>
#include <linux/kernel.h>
#include <linux/blkdev.h>
#include <linux/bio.h>
#include <linux/completion.h>
#include <linux/slab.h>
#include <linux/sort.h>
#include <linux/smp.h>
#include <linux/kthread.h>
#include <linux/delay.h>

MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("virtio-blk 4 KiB read cost, submit to bi_end_io, in retired instructions");

static int iters = 1000;
module_param(iters, int, 0444);
static int warmup = 100;
module_param(warmup, int, 0444);
static char *dev = "/dev/vda";
module_param(dev, charp, 0444);

#define DEPTH 32
#define INST_RETIRED 0x08

/* ------------------------------------------------------------------ */
/* the PMU */

static void pmu_start(void *unused)
{
	u64 pmcr;

	write_sysreg(INST_RETIRED, pmevtyper0_el0);     /* EL0 and EL1, no filter */
	write_sysreg(1, pmcntenset_el0);
	pmcr = read_sysreg(pmcr_el0);
	write_sysreg(pmcr | 1 /* E */ | 2 /* P: reset */, pmcr_el0);
	write_sysreg(1 /* EN: EL0 may read the counters */, pmuserenr_el0);
	isb();
}

static __always_inline u32 pmu_read(void)
{
	u64 v;

	asm volatile("isb\n\tmrs %0, pmevcntr0_el0" : "=r"(v) : : "memory");
	return (u32)v;
}

/*
 * Every CPU's counter minus CPU 0's at one instant (constant: they all count the same
 * machine-wide sequence). CPU 0 publishes its count in a loop that yields; each other CPU
 * reads the published count and then its own, 16 times, keeping the least difference (the
 * offset plus the few instructions between the two reads). The same method as the Rust
 * kernel's bench (kernel/src/bench/blk.rs, counter_offsets).
 */
static u32 offsets[NR_CPUS];
static atomic_t published, started, answered;

static int offset_reader(void *arg)
{
	int cpu = (long)arg, k;
	u32 best = 0;

	while (!atomic_read_acquire(&started))
		asm volatile("yield" ::: "memory");
	for (k = 0; k < 16; k++) {
		u32 theirs = (u32)atomic_read_acquire(&published);
		u32 mine = pmu_read();
		u32 d = mine - theirs;

		if (k == 0 || (s32)(d - best) < 0)
			best = d;
		asm volatile("yield" ::: "memory");
	}
	offsets[cpu] = best;
	atomic_inc(&answered);
	return 0;
}

static int calibrate(void)
{
	int cpu, others = num_online_cpus() - 1;

	offsets[0] = 0;
	atomic_set(&started, 0);
	atomic_set(&answered, 0);
	for_each_online_cpu(cpu) {
		struct task_struct *t;

		if (cpu == 0)
			continue;
		t = kthread_create(offset_reader, (void *)(long)cpu, "peerblk-cal/%d", cpu);
		if (IS_ERR(t))
			return PTR_ERR(t);
		kthread_bind(t, cpu);
		wake_up_process(t);
	}
	while (atomic_read(&answered) != others) {
		atomic_set_release(&published, (int)pmu_read());
		atomic_set_release(&started, 1);
		asm volatile("yield" ::: "memory");
	}
	return 0;
}

/* ------------------------------------------------------------------ */
/* reads */

struct slot {
	u32 insns;      /* at bi_end_io's first line, on ... */
	int cpu;        /* ... this CPU */
	int error;
};

static struct slot slots[DEPTH];
static atomic_t outstanding;
static DECLARE_COMPLETION(all_done);

static void end_io(struct bio *bio)
{
	u32 w = pmu_read();
	struct slot *s = bio->bi_private;

	s->insns = w;
	s->cpu = smp_processor_id();
	s->error = blk_status_to_errno(bio->bi_status);
	if (atomic_dec_and_test(&outstanding))
		complete(&all_done);
}

static u32 on_cpu0(const struct slot *s)
{
	return s->insns - offsets[s->cpu];
}

static int cmp_u64(const void *a, const void *b)
{
	u64 x = *(const u64 *)a, y = *(const u64 *)b;

	return x < y ? -1 : x > y;
}

/* hundredths: the value is 100 times the figure */
static void report(const char *metric, u64 *v, int n, bool hundredths)
{
	sort(v, n, sizeof(*v), cmp_u64, NULL);
	if (hundredths)
		pr_info("PEERBENCH metric=%s unit=insns median=%llu.%02llu min=%llu.%02llu max=%llu.%02llu n=%d\n",
			metric, v[n / 2] / 100, v[n / 2] % 100, v[0] / 100, v[0] % 100,
			v[n - 1] / 100, v[n - 1] % 100, n);
	else
		pr_info("PEERBENCH metric=%s unit=insns median=%llu min=%llu max=%llu n=%d\n",
			metric, v[n / 2], v[0], v[n - 1], n);
}

static int run(void)
{
	struct block_device *bdev;
	struct page *pages[DEPTH] = {};
	u64 *qd1 = NULL, *qd32 = NULL, span, sector = 0;
	int i, k, err = 0, elsewhere = 0;

	bdev = blkdev_get_by_path(dev, FMODE_READ, THIS_MODULE);
	if (IS_ERR(bdev)) {
		pr_info("PEERBENCH error open %s: %ld\n", dev, PTR_ERR(bdev));
		return PTR_ERR(bdev);
	}
	span = bdev_nr_sectors(bdev) - 8;
	qd1 = kcalloc(iters, sizeof(u64), GFP_KERNEL);
	qd32 = kcalloc(iters, sizeof(u64), GFP_KERNEL);
	for (k = 0; k < DEPTH; k++)
		pages[k] = alloc_page(GFP_KERNEL);
	for (k = 0; k < DEPTH; k++)
		if (!pages[k])
			err = -ENOMEM;
	if (!qd1 || !qd32 || err) {
		err = -ENOMEM;
		goto out;
	}

	/* one read at a time, as the Rust kernel's: sector i * 8 * 37 modulo the span */
	for (i = 0; i < warmup + iters; i++) {
		struct bio *bio = bio_alloc(bdev, 1, REQ_OP_READ, GFP_KERNEL);
		u32 w0;

		bio->bi_iter.bi_sector = ((u64)i * 8 * 37) % span;
		__bio_add_page(bio, pages[0], PAGE_SIZE, 0);
		bio->bi_end_io = end_io;
		bio->bi_private = &slots[0];
		atomic_set(&outstanding, 1);
		reinit_completion(&all_done);
		w0 = pmu_read();
		submit_bio(bio);
		wait_for_completion(&all_done);
		bio_put(bio);
		if (slots[0].error) {
			pr_info("PEERBENCH error read: %d\n", slots[0].error);
			err = slots[0].error;
			goto out;
		}
		if (slots[0].cpu != 0)
			elsewhere++;
		if (i >= warmup)
			qd1[i - warmup] = on_cpu0(&slots[0]) - w0;
	}
	report("blk_read_4k_qd1", qd1, iters, false);

	/* rounds of 32 submitted back to back under a plug (as io_submit does), then waited */
	for (i = 0; i < warmup + iters; i++) {
		struct bio *bios[DEPTH];
		struct blk_plug plug;
		u32 w0, last = 0;

		for (k = 0; k < DEPTH; k++) {
			bios[k] = bio_alloc(bdev, 1, REQ_OP_READ, GFP_KERNEL);
			bios[k]->bi_iter.bi_sector = ((u64)(i * DEPTH + k) * 8 * 37) % span;
			__bio_add_page(bios[k], pages[k], PAGE_SIZE, 0);
			bios[k]->bi_end_io = end_io;
			bios[k]->bi_private = &slots[k];
		}
		atomic_set(&outstanding, DEPTH);
		reinit_completion(&all_done);
		w0 = pmu_read();
		blk_start_plug(&plug);
		for (k = 0; k < DEPTH; k++)
			submit_bio(bios[k]);
		blk_finish_plug(&plug);
		wait_for_completion(&all_done);
		for (k = 0; k < DEPTH; k++) {
			u32 d = on_cpu0(&slots[k]) - w0;

			if (d > last)
				last = d;
			if (slots[k].cpu != 0)
				elsewhere++;
			if (slots[k].error)
				err = slots[k].error;
			bio_put(bios[k]);
		}
		if (err) {
			pr_info("PEERBENCH error read: %d\n", err);
			goto out;
		}
		if (i >= warmup)
			qd32[i - warmup] = (u64)last * 100 / DEPTH;
	}
	report("blk_read_4k_qd32", qd32, iters, true);
	pr_info("PEERBENCH info blk_callbacks_off_cpu0=%d\n", elsewhere);
out:
	for (k = 0; k < DEPTH; k++)
		if (pages[k])
			__free_page(pages[k]);
	kfree(qd1);
	kfree(qd32);
	blkdev_put(bdev, FMODE_READ);
	return err;
}

static int __init peerblk_init(void)
{
	int err;

	if (!(read_sysreg(pmceid0_el0) & (1 << INST_RETIRED))) {
		pr_info("PEERBENCH error the PMU has no INST_RETIRED (QEMU needs -icount shift=N)\n");
		return -ENODEV;
	}
	on_each_cpu(pmu_start, NULL, 1);
	err = calibrate();
	if (err)
		return err;
	err = run();
	pr_info("PEERBENCH blk done err=%d\n", err);
	return 0;       /* stays loaded: /init's user-space reads use the counters it set up */
}

static void __exit peerblk_exit(void)
{
}

module_init(peerblk_init);
module_exit(peerblk_exit);
