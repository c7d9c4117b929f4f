/*
 * /init of the test initramfs: reports what Linux itself reads from a few
 * MSRs through its msr driver (/dev/cpu/N/msr), so a test can check that a
 * PsWriteMsr reached the real OS.
 *
 * Output (port 0xE9, i.e. Bochs's stdout; the console if ioperm fails):
 *   LINUX <cpu> <msr hex> <value hex>   every MSR once, then only changes
 *   LINUX <cpu> <msr hex> GP            the read faulted (#GP -> EIO)
 *   LINUX <cpu> <msr hex> ERR <errno>   any other failure
 *   LINUX LOOP <iter/s> iterations=<n> ns=<ns>   busy-loop rate (emulated clock)
 *   LINUX READY                         first full sweep printed
 *   LINUX ALIVE <n>                     heartbeat, every ALIVE_EVERY sweeps
 *   LINUX FAIL <what> <errno>           setup failed (init keeps running)
 *   LINUX OFFLINE <cpu> <0|errno>       CPU taken offline on request (below)
 *   LINUX ONLINE <cpu> <0|errno>        CPU brought back online on request
 *
 * Requests from the debugger, through an MSR init watches anyway: when CPU
 * 0's IA32_SYSENTER_CS (unused by a 64-bit kernel without 32-bit tasks)
 * becomes HOTPLUG_OFFLINE | n, init takes CPU n offline (sysfs); when it
 * becomes HOTPLUG_ONLINE | n, init brings CPU n back online.
 *
 * Kernel command-line words of the form pulse_loops=N reach init as
 * environment variables: pulse_loops = busy-loop rounds before READY (default 1).
 *
 * PID 1 must never exit (the kernel panics), so every failure is reported
 * and init goes on or idles.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/io.h>
#include <sys/klog.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define MSR_MODULE "/msr.ko"
#define MAX_CPUS 64
/* Guest time runs ~70x slower than Bochs's emulated time (see README.md):
 * 5 ms here is ~0.35 s emulated, a few tenths of a second of wall time. */
#define SWEEP_NS (5 * 1000 * 1000L)
#define ALIVE_EVERY 10
#define LOOP_ITERATIONS 10000000UL
#define SYSENTER_CS 0x174
#define HOTPLUG_OFFLINE 0xD0F00UL
#define HOTPLUG_ONLINE 0xD0100UL

/* MSRs whose value is the same whether the CPU is in kernel or user mode
 * when sampled (unlike FS/GS/KERNEL_GS base, which SWAPGS and context
 * switches change), so a debugger reading at any VM exit must agree. */
static const uint32_t watched[] = {
    0x3A,       /* IA32_FEATURE_CONTROL (virtualised by hv-stub) */
    0x174,      /* IA32_SYSENTER_CS */
    0x175,      /* IA32_SYSENTER_ESP */
    0x176,      /* IA32_SYSENTER_EIP */
    0x1D9,      /* IA32_DEBUGCTL (absent on Bochs's models: GP) */
    0x277,      /* IA32_PAT */
    0xC0000080, /* IA32_EFER */
    0xC0000081, /* IA32_STAR */
    0xC0000082, /* IA32_LSTAR */
    0xC0000083, /* IA32_CSTAR */
    0xC0000084, /* IA32_FMASK */
    0xC0000103, /* IA32_TSC_AUX (Linux stores the CPU number) */
};
#define NWATCHED (sizeof watched / sizeof watched[0])

static int use_e9;

/* One report line, written in one go so lines never interleave. */
static void report(const char *fmt, ...)
{
    char line[160];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof line - 1, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    if (n > (int)sizeof line - 2)
        n = sizeof line - 2;
    line[n++] = '\n';
    if (use_e9) {
        for (int i = 0; i < n; i++)
            outb((unsigned char)line[i], 0xE9);
    } else {
        ssize_t ignored = write(1, line, (size_t)n);
        (void)ignored;
    }
}

static void open_console(void)
{
    int fd = open("/dev/console", O_RDWR | O_NOCTTY);
    if (fd < 0)
        return;
    for (int i = 0; i < 3; i++)
        if (fd != i)
            dup2(fd, i);
    if (fd > 2)
        close(fd);
}

static void load_msr_module(void)
{
    int fd = open(MSR_MODULE, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        report("LINUX FAIL open-" MSR_MODULE " %d", errno);
        return;
    }
    if (syscall(SYS_finit_module, fd, "", 0) != 0 && errno != EEXIST)
        report("LINUX FAIL finit_module %d", errno);
    close(fd);
}

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

/* A fixed amount of user-mode work, timed with the guest's own clock. The
 * host timestamps the BEGIN and result lines for the wall-clock rate. */
static void measure_loop(void)
{
    volatile uint64_t counter = 0;
    report("LINUX LOOP BEGIN");
    uint64_t start = now_ns();
    for (unsigned long i = 0; i < LOOP_ITERATIONS; i++)
        counter = counter + 1;
    uint64_t ns = now_ns() - start;
    if (ns == 0)
        ns = 1;
    report("LINUX LOOP %llu iterations=%lu ns=%llu",
           (unsigned long long)(LOOP_ITERATIONS * 1000000000ULL / ns),
           LOOP_ITERATIONS, (unsigned long long)ns);
}

/* A read's outcome: 0 = value, else GP or ERR with errno. */
struct sample {
    int state; /* -1 never read, 0 value, 1 GP, 2 other error */
    int err;
    uint64_t value;
};

static struct sample last[MAX_CPUS][NWATCHED];
static int cpu_fd[MAX_CPUS];

static struct sample read_msr(int fd, uint32_t msr)
{
    struct sample s = {0, 0, 0};
    ssize_t got = pread(fd, &s.value, sizeof s.value, (off_t)msr);
    if (got == (ssize_t)sizeof s.value)
        return s;
    s.value = 0;
    if (got < 0 && errno == EIO) {
        s.state = 1;
    } else {
        s.state = 2;
        s.err = got < 0 ? errno : EINVAL;
    }
    return s;
}

static void print_sample(int cpu, uint32_t msr, struct sample s)
{
    switch (s.state) {
    case 0:
        report("LINUX %d %x %llx", cpu, msr, (unsigned long long)s.value);
        break;
    case 1:
        report("LINUX %d %x GP", cpu, msr);
        break;
    default:
        report("LINUX %d %x ERR %d", cpu, msr, s.err);
        break;
    }
}

static int open_cpus(void)
{
    int count = 0;
    for (int cpu = 0; cpu < MAX_CPUS; cpu++) {
        char path[32];
        snprintf(path, sizeof path, "/dev/cpu/%d/msr", cpu);
        cpu_fd[cpu] = open(path, O_RDONLY | O_CLOEXEC);
        if (cpu_fd[cpu] >= 0)
            count++;
        for (size_t i = 0; i < NWATCHED; i++)
            last[cpu][i].state = -1;
    }
    return count;
}

/* Writes "0" or "1" to CPU n's sysfs online file; 0 or the errno. */
static int set_online(int cpu, int online)
{
    char path[64];
    snprintf(path, sizeof path, "/sys/devices/system/cpu/cpu%d/online", cpu);
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0)
        return errno;
    int err = write(fd, online ? "1" : "0", 1) == 1 ? 0 : errno;
    close(fd);
    return err;
}

/* A hotplug request in CPU 0's SYSENTER_CS (see the top of this file). */
static void hotplug(uint64_t sysenter_cs)
{
    static uint64_t done;
    if (sysenter_cs == done)
        return;
    uint64_t kind = sysenter_cs & ~0xFFUL;
    int cpu = (int)(sysenter_cs & 0xFF);
    if (kind != HOTPLUG_OFFLINE && kind != HOTPLUG_ONLINE)
        return;
    done = sysenter_cs;
    if (kind == HOTPLUG_OFFLINE)
        report("LINUX OFFLINE %d %d", cpu, set_online(cpu, 0));
    else
        report("LINUX ONLINE %d %d", cpu, set_online(cpu, 1));
}

static void sweep(void)
{
    for (int cpu = 0; cpu < MAX_CPUS; cpu++) {
        if (cpu_fd[cpu] < 0)
            continue;
        for (size_t i = 0; i < NWATCHED; i++) {
            struct sample s = read_msr(cpu_fd[cpu], watched[i]);
            struct sample *old = &last[cpu][i];
            if (old->state != s.state || old->value != s.value || old->err != s.err) {
                print_sample(cpu, watched[i], s);
                *old = s;
            }
            if (cpu == 0 && watched[i] == SYSENTER_CS && s.state == 0)
                hotplug(s.value);
        }
    }
}

int main(void)
{
    mkdir("/dev", 0755);
    mkdir("/proc", 0555);
    mount("devtmpfs", "/dev", "devtmpfs", 0, NULL);
    mount("proc", "/proc", "proc", 0, NULL);
    mkdir("/sys", 0555);
    mount("sysfs", "/sys", "sysfs", 0, NULL);
    open_console();
    use_e9 = ioperm(0xE9, 1, 1) == 0;
    if (!use_e9)
        report("LINUX FAIL ioperm %d (reporting on the console)", errno);
    else
        printf("pulse linux-guest init: reporting on port 0xE9\n");
    fflush(stdout);
    /* Kernel messages after this point would tear the report lines on a
     * shared output; panics (level 0) still get through. */
    klogctl(8 /* SYSLOG_ACTION_CONSOLE_LEVEL */, NULL, 1);

    load_msr_module();
    int cpus = open_cpus();
    if (cpus == 0)
        report("LINUX FAIL no /dev/cpu/N/msr %d", errno);

    const char *loops_env = getenv("pulse_loops");
    int loops = loops_env ? atoi(loops_env) : 1;
    for (int i = 0; i < loops; i++)
        measure_loop();

    report("LINUX CPUS %d", cpus);
    sweep();
    report("LINUX READY");
    const struct timespec pause = {0, SWEEP_NS};
    for (unsigned long n = 1;; n++) {
        nanosleep(&pause, NULL);
        sweep();
        if (n % ALIVE_EVERY == 0)
            report("LINUX ALIVE %lu", n / ALIVE_EVERY);
    }
}
