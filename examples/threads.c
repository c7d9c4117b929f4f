/*
 * threads.c - one engine, many threads. An engine may be used from several
 * threads at once: each call is one request/response exchange and the
 * engine serialises them. Here every thread owns one MSR and, ITERATIONS
 * times, writes a value unique to (thread, iteration) and reads it back;
 * nobody else touches that MSR, so each read must return this thread's
 * last write. At the end the main thread checks each MSR's final value.
 *
 * Exit status 0 only if every call succeeded and every value matched.
 */
#define _POSIX_C_SOURCE 200809L

#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>

#include <pulse.h>

#define ITERATIONS 200u

struct worker {
    PPS_ENGINE engine;
    const char *name;
    uint32_t msr;
    uint64_t base; /* value = base | pattern(iteration); every value is valid */
    uint64_t mask; /* bits the pattern may use */
    unsigned calls, failures;
    pthread_t thread;
};

/* Canonical kernel addresses for the address MSRs, 32-bit values where the
 * MSR only has 32 bits; all written as the guest sees them. */
static struct worker workers[] = {
    { .name = "IA32_LSTAR", .msr = 0xC0000082, .base = UINT64_C(0xFFFFF80000000000), .mask = UINT64_C(0xFFFFFFFFF) },
    { .name = "IA32_CSTAR", .msr = 0xC0000083, .base = UINT64_C(0xFFFFF81000000000), .mask = UINT64_C(0xFFFFFFFFF) },
    { .name = "IA32_KERNEL_GS_BASE", .msr = 0xC0000102, .base = UINT64_C(0xFFFFF82000000000), .mask = UINT64_C(0xFFFFFFFFF) },
    { .name = "IA32_FS_BASE", .msr = 0xC0000100, .base = UINT64_C(0x00007F0000000000), .mask = UINT64_C(0xFFFFFFFFF) },
    { .name = "IA32_GS_BASE", .msr = 0xC0000101, .base = UINT64_C(0xFFFFF83000000000), .mask = UINT64_C(0xFFFFFFFFF) },
    { .name = "IA32_SYSENTER_ESP", .msr = 0x175, .base = UINT64_C(0xFFFFF84000000000), .mask = UINT64_C(0xFFFFFFFFF) },
    { .name = "IA32_SYSENTER_EIP", .msr = 0x176, .base = UINT64_C(0xFFFFF85000000000), .mask = UINT64_C(0xFFFFFFFFF) },
    { .name = "IA32_TSC_AUX", .msr = 0xC0000103, .base = UINT64_C(0x70000000), .mask = UINT64_C(0x0FFFFFFF) },
};

#define NWORKERS (sizeof workers / sizeof workers[0])

static uint64_t value_for(const struct worker *w, unsigned iteration)
{
    /* Thread index in the top of the pattern, iteration below it. */
    uint64_t pattern = ((uint64_t)(w - workers) << 20 | iteration) << 4;
    return w->base | (pattern & w->mask);
}

static void *work(void *arg)
{
    struct worker *w = arg;
    unsigned i;

    for (i = 0; i < ITERATIONS; i++) {
        uint64_t wanted = value_for(w, i), got = 0;
        PULSE_STATUS status = PsWriteMsr(w->engine, w->msr, wanted);

        w->calls++;
        if (status != PULSE_STATUS_SUCCESS) {
            fprintf(stderr, "%s: PsWriteMsr #%u: %s\n", w->name, i, PsStatusToString(status));
            w->failures++;
            continue;
        }
        status = PsReadMsr(w->engine, w->msr, &got);
        w->calls++;
        if (status != PULSE_STATUS_SUCCESS || got != wanted) {
            fprintf(stderr, "%s: PsReadMsr #%u: %s, 0x%016" PRIX64 " != 0x%016" PRIX64 "\n", w->name, i,
                    PsStatusToString(status), got, wanted);
            w->failures++;
        }
    }
    return NULL;
}

int main(void)
{
    PS_ENGINE_CONFIG config = { sizeof(PS_ENGINE_CONFIG), "sim", 0, 0, NULL, 0 };
    PPS_ENGINE engine = NULL;
    PULSE_STATUS status = EngCreateEngine(&config, &engine);
    unsigned started = 0, failures = 0, calls = 0;
    size_t i;

    if (status != PULSE_STATUS_SUCCESS) {
        fprintf(stderr, "EngCreateEngine: %s\n", PsStatusToString(status));
        return 1;
    }
    for (i = 0; i < NWORKERS; i++) {
        workers[i].engine = engine;
        if (pthread_create(&workers[i].thread, NULL, work, &workers[i]) != 0) {
            fprintf(stderr, "pthread_create failed\n");
            failures++;
            break;
        }
        started++;
    }
    for (i = 0; i < started; i++)
        pthread_join(workers[i].thread, NULL);

    /* Every thread's last write is what the guest now reads. */
    for (i = 0; i < started; i++) {
        const struct worker *w = &workers[i];
        uint64_t wanted = value_for(w, ITERATIONS - 1), got = 0;

        status = PsReadMsr(engine, w->msr, &got);
        printf("%-20s %u calls, %u failures, final 0x%016" PRIX64 "\n", w->name, w->calls, w->failures, got);
        if (status != PULSE_STATUS_SUCCESS || got != wanted) {
            fprintf(stderr, "%s: final value 0x%016" PRIX64 " (%s), expected 0x%016" PRIX64 "\n", w->name, got,
                    PsStatusToString(status), wanted);
            failures++;
        }
        failures += w->failures;
        calls += w->calls;
    }
    if (EngDestroyEngine(engine) != PULSE_STATUS_SUCCESS)
        failures++;
    if (failures || started != NWORKERS) {
        fprintf(stderr, "%u failure(s)\n", failures);
        return 1;
    }
    printf("%u threads, %u calls on one engine, all PULSE_STATUS_SUCCESS\n", started, calls);
    return 0;
}
