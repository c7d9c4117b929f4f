/*
 * msrdev_errno.c - the kernel msr driver's interface, as a program that knows
 * nothing of libpulse uses it, run under LD_PRELOAD=libpulse-msrdev.so with
 * PULSE_TRANSPORT=sim (ctest: msrdev_errno). Checks the values and every
 * errno the drop-in documents for pread/pwrite/open, the /dev/cpu listing,
 * and that other files pass through. Exits 0 only if every check holds.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static int failures;

#define CHECK(cond, ...)                                    \
    do {                                                    \
        if (!(cond)) {                                      \
            fprintf(stderr, "FAIL line %d: ", __LINE__);    \
            fprintf(stderr, __VA_ARGS__);                   \
            fprintf(stderr, " (errno %s)\n", strerror(errno)); \
            failures++;                                     \
        }                                                   \
    } while (0)

/* A call that must fail with -1 and errno WANT. */
#define CHECK_ERRNO(call, want)                                                     \
    do {                                                                            \
        errno = 0;                                                                  \
        long r_ = (long)(call);                                                     \
        CHECK(r_ == -1 && errno == (want), "%s returned %ld, want -1/%s", #call, r_, \
              strerror(want));                                                      \
    } while (0)

/* Usage: msrdev_errno [CPUS]: with CPUS, the listing must have exactly
 * that many CPUs (the ones that run). */
int main(int argc, char **argv)
{
    uint64_t value = 0, pair[2] = { 0, 0 };
    const uint64_t lstar = UINT64_C(0xFFFFF80012345000);
    const uint64_t bad_pat = UINT64_C(0x0202020202020202);
    char path[64], buf[4];
    struct stat st;
    struct dirent *entry;
    DIR *dir;
    int fd, ro, cpus = 0, listed = 0;

    fd = open("/dev/cpu/0/msr", O_RDWR);
    CHECK(fd >= 0, "open /dev/cpu/0/msr");
    if (fd < 0)
        return 1;

    /* Values: sim's EFER, and a write read back by the same process. */
    CHECK(pread(fd, &value, 8, 0xC0000080) == 8 && value == 0xD01, "EFER = 0x%" PRIx64, value);
    CHECK(pwrite(fd, &lstar, 8, 0xC0000082) == 8, "pwrite LSTAR");
    CHECK(pread(fd, &value, 8, 0xC0000082) == 8 && value == lstar, "LSTAR = 0x%" PRIx64, value);
    /* 16 bytes: two reads of the same MSR, as the kernel driver does. */
    CHECK(pread(fd, pair, 16, 0xC0000082) == 16 && pair[0] == lstar && pair[1] == lstar,
          "16-byte read");

    /* #GP -> EIO; sizes and offsets the driver refuses -> EINVAL. */
    CHECK_ERRNO(pread(fd, &value, 8, 0x40001234), EIO);
    CHECK_ERRNO(pwrite(fd, &bad_pat, 8, 0x277), EIO);
    CHECK(pread(fd, &value, 8, 0x277) == 8 && value != bad_pat, "refused PAT left unchanged");
    CHECK_ERRNO(pread(fd, &value, 4, 0xC0000080), EINVAL);
    CHECK_ERRNO(pread(fd, &value, 8, (off_t)0x100000000), EINVAL);
    /* read/write at the file position, which lseek sets and they keep. */
    CHECK(lseek(fd, 0xC0000080, SEEK_SET) == 0xC0000080, "lseek");
    CHECK(read(fd, &value, 8) == 8 && value == 0xD01, "read EFER = 0x%" PRIx64, value);
    CHECK(lseek(fd, 2, SEEK_CUR) == 0xC0000082, "lseek SEEK_CUR");
    CHECK(write(fd, &lstar, 8) == 8, "write LSTAR");
    CHECK(read(fd, &value, 8) == 8 && value == lstar, "read LSTAR = 0x%" PRIx64, value);
    CHECK_ERRNO(lseek(fd, 0, SEEK_END), EINVAL);
    CHECK(close(fd) == 0, "close");
    CHECK_ERRNO(pread(fd, &value, 8, 0xC0000080), EBADF);

    /* The access mode is kept: no write through a read-only descriptor. */
    ro = open("/dev/cpu/0/msr", O_RDONLY);
    CHECK(ro >= 0, "open read-only");
    CHECK_ERRNO(pwrite(ro, &lstar, 8, 0xC0000082), EBADF);
    close(ro);

    /* The listing: CPUs 0..N-1 exist (stat, access, opendir), N is ENXIO. */
    while (snprintf(path, sizeof path, "/dev/cpu/%d/msr", cpus), access(path, F_OK) == 0)
        cpus++;
    CHECK(cpus >= 1, "no CPU in /dev/cpu");
    CHECK(argc < 2 || cpus == atoi(argv[1]), "%d CPUs listed, want %s", cpus, argv[1]);
    CHECK(stat("/dev/cpu/0/msr", &st) == 0 && S_ISREG(st.st_mode), "stat /dev/cpu/0/msr");
    CHECK(stat("/dev/cpu", &st) == 0 && S_ISDIR(st.st_mode), "stat /dev/cpu");
    dir = opendir("/dev/cpu");
    CHECK(dir != NULL, "opendir /dev/cpu");
    while (dir && (entry = readdir(dir)) != NULL)
        if (entry->d_name[0] != '.')
            listed++;
    if (dir)
        closedir(dir);
    CHECK(listed == cpus, "/dev/cpu lists %d entries, %d CPUs", listed, cpus);
    snprintf(path, sizeof path, "/dev/cpu/%d/msr", cpus);
    CHECK_ERRNO(open(path, O_RDONLY), ENXIO);
    /* Not an MSR device: the C library's own answer. */
    CHECK_ERRNO(open("/dev/cpu/00/msr", O_RDONLY), ENOENT);

    /* Everything else passes through. */
    fd = open("/etc/passwd", O_RDONLY);
    CHECK(fd >= 0 && pread(fd, buf, 4, 0) == 4 && memcmp(buf, "root", 4) == 0, "pass-through pread");
    if (fd >= 0)
        close(fd);

    if (failures) {
        fprintf(stderr, "%d check(s) failed\n", failures);
        return 1;
    }
    printf("the msr driver's interface through libpulse-msrdev.so: %d CPU(s), every check passed\n",
           cpus);
    return 0;
}
