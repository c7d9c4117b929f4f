/*
 * libpulse-msrdev.so: Linux's /dev/cpu/N/msr, served by a debuggee.
 *
 *   LD_PRELOAD=libpulse-msrdev.so PULSE_TRANSPORT=tcp:127.0.0.1:5555 rdmsr 0xc0000082
 *
 * Unmodified programs that use the kernel's msr driver (msr-tools' rdmsr and
 * wrmsr, turbostat-style tools) open /dev/cpu/N/msr and pread/pwrite 8 bytes
 * at offset = MSR number. This library intercepts those calls and turns them
 * into PsReadMsr/PsWriteMsr on CPU N of the debuggee named by
 * $PULSE_TRANSPORT (default "sim"). Errors come back as the errno values the
 * kernel driver uses (#GP -> EIO, no such CPU -> ENXIO) and, for failures
 * the kernel cannot have, the nearest errno a user recognises; msrdev/README.md
 * has the table. Everything else passes through to the C library.
 *
 * The /dev/cpu listing (opendir, scandir: msr-tools' -a) shows the debuggee's
 * CPUs: such lookups are redirected to a small directory tree made for this
 * process under $TMPDIR (one N/msr per CPU), removed at exit.
 */
#define _GNU_SOURCE
#undef _FORTIFY_SOURCE
#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#include <pulse.h>

#define EXPORT __attribute__((visibility("default")))

/* CPU targeting (docs/api/PsSwitchCpu.md). Weak, so this library also runs on a
 * libpulse without it: then the debuggee shows one CPU, CPU 0. */
#ifndef PULSE_STATUS_BARRIER_ALREADY_OWNED
#define PULSE_STATUS_BARRIER_ALREADY_OWNED 0x00000021
#endif
#ifndef PULSE_STATUS_BARRIER_OWNER_INACTIVE
#define PULSE_STATUS_BARRIER_OWNER_INACTIVE 0xC0000043
#endif
#ifndef PULSE_STATUS_BARRIER_NO_CPU
#define PULSE_STATUS_BARRIER_NO_CPU 0xC0000044
#endif
PULSE_STATUS PsSwitchCpu(PPS_ENGINE pEngine, uint64_t TargetCpuIndex);
PULSE_STATUS PsGetCpuCount(PPS_ENGINE pEngine, uint64_t *pCpuCount);
#pragma weak PsSwitchCpu
#pragma weak PsGetCpuCount
#pragma weak PsGetLastErrorMessage

/* ---- the C library's own functions ------------------------------------ */

/* The next definition of NAME (the C library's), looked up once. */
#define REAL(name) \
    static __typeof__(name) *real_##name; \
    if (!real_##name) \
        real_##name = (__typeof__(name) *)dlsym(RTLD_NEXT, #name)

/* ---- the engine: one per process, created on first use ---------------- */

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER; /* the engine, its current CPU, the listing */
static PPS_ENGINE engine;
static uint64_t cpu_count;
static uint64_t current_cpu;
static pid_t owner_pid; /* the process that created the engine (not a forked child) */

static int errno_of(PULSE_STATUS status)
{
    switch (status) {
    case PULSE_STATUS_EXCEPTION_GENERAL_PROTECTION: return EIO; /* as the kernel driver */
    case PULSE_STATUS_BARRIER_NO_CPU:
    case PULSE_STATUS_BARRIER_OWNER_INACTIVE: return ENXIO; /* as the kernel: CPU absent or offline */
    case PULSE_STATUS_TIMEOUT: return ETIMEDOUT;
    case PULSE_STATUS_DEVICE_CONNECTION_LOST: return ENOTCONN;
    case PULSE_STATUS_CONNECTION_REFUSED: return ECONNREFUSED;
    case PULSE_STATUS_NO_SUCH_DEVICE: return ENODEV;
    case PULSE_STATUS_ACCESS_DENIED: return EACCES;
    case PULSE_STATUS_INVALID_PARAMETER: return EINVAL;
    case PULSE_STATUS_INSUFFICIENT_RESOURCES: return ENOMEM;
    case PULSE_STATUS_READ_FAILED:
    case PULSE_STATUS_WRITE_FAILED: return ECOMM;
    case PULSE_STATUS_INVALID_PACKET: return EBADMSG;
    case PULSE_STATUS_REVISION_MISMATCH: return EPROTO;
    case PULSE_STATUS_INTERNAL_ERROR: return ENOTRECOVERABLE;
    default: return EREMOTEIO;
    }
}

static const char *transport_name(void)
{
    const char *t = getenv("PULSE_TRANSPORT");
    return t && *t ? t : "sim";
}

static int hex_digit(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Reads a key file: 64 hex digits, optionally followed by a newline (the
 * format of `pulse keygen` and hv-stub-sim --key-file). 0 or EINVAL. */
static int read_key_file(const char *path, uint8_t key[32])
{
    char text[67];
    size_t n;
    FILE *f = fopen(path, "r");

    if (!f)
        return errno ? errno : EINVAL;
    n = fread(text, 1, sizeof text, f);
    fclose(f);
    if (n == 65 && text[64] == '\n')
        n = 64;
    if (n != 64)
        return EINVAL;
    for (size_t i = 0; i < 64; i++) {
        int digit = hex_digit(text[i]);
        if (digit < 0)
            return EINVAL;
        if (i % 2 == 0)
            key[i / 2] = (uint8_t)(digit << 4);
        else
            key[i / 2] |= (uint8_t)digit;
    }
    return 0;
}

/* Creates the engine if there is none. With the lock held; 0 or an errno.
 * A failure is reported once on stderr (the tool itself only has perror). */
static int ensure_engine(void)
{
    static int reported;
    const char *key_file = getenv("PULSE_KEY_FILE");
    PS_ENGINE_CONFIG config;
    PULSE_STATUS status;
    uint8_t key[32];

    if (engine && owner_pid == getpid())
        return 0;
    engine = NULL; /* a forked child makes its own connection */
    memset(&config, 0, sizeof config);
    config.Size = sizeof config;
    config.Transport = transport_name();
    if (key_file && *key_file) {
        /* Authenticated link: a key file that cannot be used is an error,
         * never a reason to connect without the key. */
        int error = read_key_file(key_file, key);
        if (error) {
            if (!reported++)
                fprintf(stderr, "libpulse-msrdev: PULSE_KEY_FILE %s: %s\n", key_file,
                        error == EINVAL ? "not 64 hex digits" : strerror(error));
            return error;
        }
        config.pKey = key;
        config.KeySize = sizeof key;
    }
    status = EngCreateEngine(&config, &engine);
    if (status == PULSE_STATUS_SUCCESS && PsGetCpuCount)
        status = PsGetCpuCount(engine, &cpu_count);
    else
        cpu_count = 1;
    if (status != PULSE_STATUS_SUCCESS) {
        if (engine)
            EngDestroyEngine(engine);
        engine = NULL;
        if (!reported++) {
            /* The precise reason (which part of the transport string, the
             * OS's reason, a debuggee serving another client); a library
             * without PsGetLastErrorMessage, or a message longer than the
             * buffer, leaves it out. */
            char why[512] = "";
            if (PsGetLastErrorMessage)
                PsGetLastErrorMessage(why, sizeof why, NULL);
            fprintf(stderr, "libpulse-msrdev: cannot use debuggee `%s`: %s (0x%08X)%s%s\n",
                    config.Transport, PsStatusToString(status), (unsigned)status, *why ? ": " : "",
                    why);
        }
        return errno_of(status);
    }
    current_cpu = 0;
    owner_pid = getpid();
    return 0;
}

/* Makes CPU the engine's current one. With the lock held; 0 or an errno. */
static int select_cpu(uint64_t cpu)
{
    PULSE_STATUS status;

    if (cpu >= cpu_count)
        return ENXIO;
    if (cpu == current_cpu || !PsSwitchCpu)
        return 0;
    status = PsSwitchCpu(engine, cpu);
    if (status != PULSE_STATUS_SUCCESS && status != PULSE_STATUS_BARRIER_ALREADY_OWNED)
        return errno_of(status);
    current_cpu = cpu;
    return 0;
}

__attribute__((destructor)) static void destroy_engine(void)
{
    pthread_mutex_lock(&lock);
    if (engine && owner_pid == getpid())
        EngDestroyEngine(engine);
    engine = NULL;
    pthread_mutex_unlock(&lock);
}

/* ---- paths ------------------------------------------------------------- */

/* The CPU of "/dev/cpu/N/msr" (N canonical decimal), or -1. */
static long msr_path_cpu(const char *path)
{
    static const char prefix[] = "/dev/cpu/";
    const char *p;
    long cpu = 0;

    if (!path || strncmp(path, prefix, sizeof prefix - 1) != 0)
        return -1;
    p = path + sizeof prefix - 1;
    if (*p < '0' || *p > '9' || (p[0] == '0' && p[1] >= '0' && p[1] <= '9'))
        return -1;
    for (; *p >= '0' && *p <= '9'; p++) {
        cpu = cpu * 10 + (*p - '0');
        if (cpu > INT_MAX)
            return -1;
    }
    return strcmp(p, "/msr") == 0 ? cpu : -1;
}

/* The listing: a tree DIR/N/msr for each CPU of the debuggee, made once. */
static char listing_dir[PATH_MAX];
static pid_t listing_pid;

static void remove_listing(void)
{
    char path[PATH_MAX + 32];
    uint64_t cpu;

    if (!listing_dir[0] || listing_pid != getpid())
        return;
    for (cpu = 0; cpu < cpu_count; cpu++) {
        snprintf(path, sizeof path, "%s/%llu/msr", listing_dir, (unsigned long long)cpu);
        unlink(path);
        snprintf(path, sizeof path, "%s/%llu", listing_dir, (unsigned long long)cpu);
        rmdir(path);
    }
    rmdir(listing_dir);
    listing_dir[0] = 0;
}

/* With the lock held; 0 or an errno. */
static int ensure_listing(void)
{
    REAL(close);
    const char *tmp = getenv("TMPDIR");
    char path[PATH_MAX + 32];
    uint64_t cpu;
    int err = ensure_engine();

    if (err)
        return err;
    if (listing_dir[0] && listing_pid == getpid())
        return 0;
    snprintf(listing_dir, sizeof listing_dir, "%s/pulse-msrdev.XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(listing_dir)) {
        listing_dir[0] = 0;
        return errno;
    }
    listing_pid = getpid();
    for (cpu = 0; cpu < cpu_count; cpu++) {
        int fd;
        /* Like the kernel's, the listing has the CPUs that run. */
        err = select_cpu(cpu);
        if (err == ENXIO)
            continue;
        if (err) {
            remove_listing();
            return err;
        }
        snprintf(path, sizeof path, "%s/%llu", listing_dir, (unsigned long long)cpu);
        if (mkdir(path, 0755) != 0)
            goto fail;
        snprintf(path, sizeof path, "%s/%llu/msr", listing_dir, (unsigned long long)cpu);
        fd = creat(path, 0600);
        if (fd < 0)
            goto fail;
        real_close(fd);
    }
    atexit(remove_listing);
    return 0;
fail:
    err = errno;
    remove_listing();
    return err;
}

/* For a path inside /dev/cpu (the directory, a CPU's directory or its msr
 * file): the same path in the listing, in BUF. NULL for any other path, or
 * with errno set if the listing cannot be made. */
static const char *listing_path(const char *path, char *buf, size_t size)
{
    const char *rest;
    int err;

    if (!path || strncmp(path, "/dev/cpu", 8) != 0 || (path[8] != 0 && path[8] != '/'))
        return NULL;
    rest = path + 8;
    pthread_mutex_lock(&lock);
    err = ensure_listing();
    if (!err)
        snprintf(buf, size, "%s%s", listing_dir, rest);
    pthread_mutex_unlock(&lock);
    if (err) {
        errno = err;
        return NULL;
    }
    return buf;
}

/* The path a wrapped call passes on: PATH's stand-in in the listing for a
 * /dev/cpu path, else PATH itself; NULL with errno set if the listing
 * cannot be made. */
static const char *passed_path(const char *path, char *buf, size_t size)
{
    const char *listing;

    errno = 0;
    listing = listing_path(path, buf, size);
    if (!listing && errno)
        return NULL;
    return listing ? listing : path;
}

/* ---- file descriptors of opened /dev/cpu/N/msr ------------------------- */

#define MAX_FDS 1024
/* Indexed by descriptor. Read and written with atomics, never under the
 * engine lock: libpulse's own threads close descriptors while a call into
 * it holds that lock. */
static struct {
    int open;
    int accmode;
    uint64_t cpu;
    int64_t pos; /* the file position: the MSR that read/write access */
} fds[MAX_FDS];

/* Opens /dev/cpu/CPU/msr: checks the CPU, and holds a descriptor number
 * (on /dev/null, with the caller's access mode) that stands for it. */
static int open_msr(long cpu, int flags)
{
    REAL(open);
    int err, fd;

    pthread_mutex_lock(&lock);
    err = ensure_engine();
    if (!err)
        err = select_cpu((uint64_t)cpu);
    pthread_mutex_unlock(&lock);
    if (err) {
        errno = err;
        return -1;
    }
    fd = real_open("/dev/null", (flags & O_ACCMODE) | (flags & O_CLOEXEC));
    if (fd < 0)
        return -1;
    if (fd >= MAX_FDS) {
        close(fd);
        errno = EMFILE;
        return -1;
    }
    __atomic_store_n(&fds[fd].accmode, flags & O_ACCMODE, __ATOMIC_RELAXED);
    __atomic_store_n(&fds[fd].cpu, (uint64_t)cpu, __ATOMIC_RELAXED);
    __atomic_store_n(&fds[fd].pos, 0, __ATOMIC_RELAXED);
    __atomic_store_n(&fds[fd].open, 1, __ATOMIC_RELEASE);
    return fd;
}

/* The kernel driver: COUNT a multiple of 8, each 8 bytes one RDMSR/WRMSR of
 * the MSR at OFFSET; the first failure ends the call. Returns the bytes done,
 * or -1 with errno. */
static ssize_t msr_io(int fd, void *buf, size_t count, off_t offset, int write)
{
    unsigned char *bytes = buf;
    size_t done = 0;
    int err = 0;

    if (count % 8 != 0 || offset < 0 || (uint64_t)offset > UINT32_MAX) {
        errno = EINVAL;
        return -1;
    }
    if (__atomic_load_n(&fds[fd].accmode, __ATOMIC_RELAXED) == (write ? O_RDONLY : O_WRONLY)) {
        errno = EBADF;
        return -1;
    }
    pthread_mutex_lock(&lock);
    err = ensure_engine();
    if (!err)
        err = select_cpu(__atomic_load_n(&fds[fd].cpu, __ATOMIC_RELAXED));
    while (!err && done < count) {
        uint64_t value;
        PULSE_STATUS status;
        if (write) {
            memcpy(&value, bytes + done, 8);
            status = PsWriteMsr(engine, (uint32_t)offset, value);
        } else {
            status = PsReadMsr(engine, (uint32_t)offset, &value);
            if (status == PULSE_STATUS_SUCCESS)
                memcpy(bytes + done, &value, 8);
        }
        if (status != PULSE_STATUS_SUCCESS)
            err = errno_of(status);
        else
            done += 8;
    }
    pthread_mutex_unlock(&lock);
    if (err && done == 0) {
        errno = err;
        return -1;
    }
    return (ssize_t)done;
}

static int is_msr_fd(int fd)
{
    return fd >= 0 && fd < MAX_FDS && __atomic_load_n(&fds[fd].open, __ATOMIC_ACQUIRE);
}

/* ---- the intercepted functions ----------------------------------------- */

static mode_t mode_arg(int flags, va_list ap)
{
    return (flags & O_CREAT) || (flags & O_TMPFILE) == O_TMPFILE ? (mode_t)va_arg(ap, int) : 0;
}

EXPORT int open(const char *path, int flags, ...)
{
    REAL(open);
    long cpu = msr_path_cpu(path);
    va_list ap;
    mode_t mode;

    if (cpu >= 0)
        return open_msr(cpu, flags);
    va_start(ap, flags);
    mode = mode_arg(flags, ap);
    va_end(ap);
    return real_open(path, flags, mode);
}

EXPORT int open64(const char *path, int flags, ...)
{
    REAL(open64);
    long cpu = msr_path_cpu(path);
    va_list ap;
    mode_t mode;

    if (cpu >= 0)
        return open_msr(cpu, flags);
    va_start(ap, flags);
    mode = mode_arg(flags, ap);
    va_end(ap);
    return real_open64(path, flags, mode);
}

EXPORT int openat(int dirfd, const char *path, int flags, ...)
{
    REAL(openat);
    long cpu = msr_path_cpu(path);
    va_list ap;
    mode_t mode;

    if (cpu >= 0)
        return open_msr(cpu, flags);
    va_start(ap, flags);
    mode = mode_arg(flags, ap);
    va_end(ap);
    return real_openat(dirfd, path, flags, mode);
}

EXPORT int openat64(int dirfd, const char *path, int flags, ...)
{
    REAL(openat64);
    long cpu = msr_path_cpu(path);
    va_list ap;
    mode_t mode;

    if (cpu >= 0)
        return open_msr(cpu, flags);
    va_start(ap, flags);
    mode = mode_arg(flags, ap);
    va_end(ap);
    return real_openat64(dirfd, path, flags, mode);
}

/* What -D_FORTIFY_SOURCE builds call instead of open/open64. */
int __open_2(const char *path, int flags);
int __open64_2(const char *path, int flags);

EXPORT int __open_2(const char *path, int flags)
{
    REAL(__open_2);
    long cpu = msr_path_cpu(path);
    return cpu >= 0 ? open_msr(cpu, flags) : real___open_2(path, flags);
}

EXPORT int __open64_2(const char *path, int flags)
{
    REAL(__open64_2);
    long cpu = msr_path_cpu(path);
    return cpu >= 0 ? open_msr(cpu, flags) : real___open64_2(path, flags);
}

EXPORT ssize_t pread(int fd, void *buf, size_t count, off_t offset)
{
    REAL(pread);
    return is_msr_fd(fd) ? msr_io(fd, buf, count, offset, 0) : real_pread(fd, buf, count, offset);
}

EXPORT ssize_t pread64(int fd, void *buf, size_t count, off64_t offset)
{
    REAL(pread64);
    return is_msr_fd(fd) ? msr_io(fd, buf, count, (off_t)offset, 0)
                         : real_pread64(fd, buf, count, offset);
}

EXPORT ssize_t pwrite(int fd, const void *buf, size_t count, off_t offset)
{
    REAL(pwrite);
    return is_msr_fd(fd) ? msr_io(fd, (void *)buf, count, offset, 1)
                         : real_pwrite(fd, buf, count, offset);
}

EXPORT ssize_t pwrite64(int fd, const void *buf, size_t count, off64_t offset)
{
    REAL(pwrite64);
    return is_msr_fd(fd) ? msr_io(fd, (void *)buf, count, (off_t)offset, 1)
                         : real_pwrite64(fd, buf, count, offset);
}

/* The driver also serves read/write at the file position, which lseek
 * sets (SEEK_SET, SEEK_CUR) and the accesses leave where it is. */
EXPORT off_t lseek(int fd, off_t offset, int whence)
{
    REAL(lseek);
    int64_t pos;

    if (!is_msr_fd(fd))
        return real_lseek(fd, offset, whence);
    pos = __atomic_load_n(&fds[fd].pos, __ATOMIC_RELAXED);
    if (whence == SEEK_SET)
        pos = offset;
    else if (whence == SEEK_CUR)
        pos += offset;
    else
        pos = -1;
    if (pos < 0) {
        errno = EINVAL;
        return -1;
    }
    __atomic_store_n(&fds[fd].pos, pos, __ATOMIC_RELAXED);
    return (off_t)pos;
}

EXPORT off64_t lseek64(int fd, off64_t offset, int whence)
{
    REAL(lseek64);
    return is_msr_fd(fd) ? (off64_t)lseek(fd, (off_t)offset, whence)
                         : real_lseek64(fd, offset, whence);
}

EXPORT ssize_t read(int fd, void *buf, size_t count)
{
    REAL(read);
    return is_msr_fd(fd)
               ? msr_io(fd, buf, count, (off_t)__atomic_load_n(&fds[fd].pos, __ATOMIC_RELAXED), 0)
               : real_read(fd, buf, count);
}

EXPORT ssize_t write(int fd, const void *buf, size_t count)
{
    REAL(write);
    return is_msr_fd(fd)
               ? msr_io(fd, (void *)buf, count,
                        (off_t)__atomic_load_n(&fds[fd].pos, __ATOMIC_RELAXED), 1)
               : real_write(fd, buf, count);
}

EXPORT int close(int fd)
{
    REAL(close);
    if (fd >= 0 && fd < MAX_FDS)
        __atomic_store_n(&fds[fd].open, 0, __ATOMIC_RELEASE);
    return real_close(fd);
}

EXPORT DIR *opendir(const char *path)
{
    REAL(opendir);
    char buf[PATH_MAX + 32];
    const char *passed = passed_path(path, buf, sizeof buf);

    if (!passed)
        return NULL;
    return real_opendir(passed);
}

EXPORT int scandir(const char *path, struct dirent ***list, int (*filter)(const struct dirent *),
                   int (*compar)(const struct dirent **, const struct dirent **))
{
    REAL(scandir);
    char buf[PATH_MAX + 32];
    const char *passed = passed_path(path, buf, sizeof buf);

    if (!passed)
        return -1;
    return real_scandir(passed, list, filter, compar);
}

EXPORT int scandir64(const char *path, struct dirent64 ***list,
                     int (*filter)(const struct dirent64 *),
                     int (*compar)(const struct dirent64 **, const struct dirent64 **))
{
    REAL(scandir64);
    char buf[PATH_MAX + 32];
    const char *passed = passed_path(path, buf, sizeof buf);

    if (!passed)
        return -1;
    return real_scandir64(passed, list, filter, compar);
}

/* Tools that check for the device before opening it. */
EXPORT int access(const char *path, int mode)
{
    REAL(access);
    char buf[PATH_MAX + 32];
    const char *passed = passed_path(path, buf, sizeof buf);

    if (!passed)
        return -1;
    return real_access(passed, mode);
}

EXPORT int stat(const char *path, struct stat *st)
{
    REAL(stat);
    char buf[PATH_MAX + 32];
    const char *passed = passed_path(path, buf, sizeof buf);

    if (!passed)
        return -1;
    return real_stat(passed, st);
}

EXPORT int stat64(const char *path, struct stat64 *st)
{
    REAL(stat64);
    char buf[PATH_MAX + 32];
    const char *passed = passed_path(path, buf, sizeof buf);

    if (!passed)
        return -1;
    return real_stat64(passed, st);
}
