/*
 * version.c - compare the library loaded at run time with the header the
 * program was compiled with. A program built against pulse.h X.Y.Z works
 * with a library of the same soname (same MAJOR; for 0.x the same MINOR)
 * whose version is at least X.Y (docs/ABI.md).
 *
 * ctest passes the version from Cargo.toml as argv[1]; then the header
 * macros, PsGetVersion and Cargo.toml must all agree.
 */
#include <stdio.h>
#include <string.h>

#include <pulse.h>

int main(int argc, char **argv)
{
    uint32_t major = 0, minor = 0, patch = 0;
    char runtime[64], header[64];
    PULSE_STATUS status = PsGetVersion(&major, &minor, &patch);

    if (status != PULSE_STATUS_SUCCESS) {
        fprintf(stderr, "PsGetVersion: %s\n", PsStatusToString(status));
        return 1;
    }
    snprintf(runtime, sizeof runtime, "%u.%u.%u", (unsigned)major, (unsigned)minor, (unsigned)patch);
    snprintf(header, sizeof header, "%u.%u.%u", (unsigned)PULSE_VERSION_MAJOR, (unsigned)PULSE_VERSION_MINOR,
             (unsigned)PULSE_VERSION_PATCH);
    printf("header %s, library %s\n", header, runtime);

    /* The compatibility rule a program would apply. */
    if (major != PULSE_VERSION_MAJOR || (major == 0 && minor != PULSE_VERSION_MINOR) ||
        minor < PULSE_VERSION_MINOR) {
        fprintf(stderr, "libpulse %s is not compatible with pulse.h %s\n", runtime, header);
        return 1;
    }
    if (strcmp(runtime, header) != 0) {
        fprintf(stderr, "this build tree should have matching header and library\n");
        return 1;
    }
    if (argc > 1 && strcmp(argv[1], runtime) != 0) {
        fprintf(stderr, "Cargo.toml says %s\n", argv[1]);
        return 1;
    }
    return 0;
}
