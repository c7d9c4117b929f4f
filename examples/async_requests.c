/*
 * async_requests.c - 64 asynchronous requests in flight on one engine
 * (PsRequest*, docs/api/PsRequestCreate.md and the pages it links).
 *
 *   async_requests [TRANSPORT [DEBUGGEE_PID]]
 *
 * TRANSPORT defaults to "sim". DEBUGGEE_PID is the hv-stub-sim process
 * behind a tcp: TRANSPORT (async_requests_tcp.sh starts one and passes
 * both): the example then pauses it (SIGSTOP) so that requests are busy for
 * certain while it checks the busy rules and destroys the engine under
 * them, and resumes it (SIGCONT). Without it, the busy rules are checked on
 * requests caught busy, and destroying the engine accepts requests that
 * were answered before it.
 *
 * Checked:
 *   - 64 request objects kept in flight over 1024 operations (each object
 *     reassigned and resubmitted 16 times): blocks of 8 writes of distinct
 *     values to 8 MSRs, then 8 reads of them. Every read sees the value of
 *     the write submitted just before it and not the one submitted after
 *     it, because requests run in submission order. Every status SUCCESS;
 *     a completed write has no value (INVALID_PARAMETER). Synchronous
 *     PsReadMsr calls amid the requests in flight take their place in the
 *     same order.
 *   - idle, ready and busy rules: REQUEST_NOT_INITIALIZED, REQUEST_BUSY,
 *     PENDING, Wait's TIMEOUT; NULL arguments give INVALID_PARAMETER.
 *   - PsRequestExecute; a failing request (#GP) among others that succeed,
 *     and PsGetLastErrorMessage naming the MSR after PsRequestGetStatus.
 *   - EngDestroyEngine with requests in flight: each completes with
 *     DEVICE_CONNECTION_LOST (or SUCCESS, when it was answered first), its
 *     object stays valid, and PsRequestDestroy frees it.
 *
 * Exit status 0 only if every check passed.
 */
#define _POSIX_C_SOURCE 200809L

#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <time.h>

#include <pulse.h>

#define IN_FLIGHT 64u
#define ROUNDS 16u /* uses of each request object in the window test */
#define OPERATIONS (IN_FLIGHT * ROUNDS)
#define WAIT_FOREVER 0xFFFFFFFFu
#define NO_SUCH_MSR 0x40001234u

static int failures;

/* The debuggee process to pause, or 0. */
static pid_t debuggee;

static void expect(const char *call, PULSE_STATUS got, PULSE_STATUS want)
{
    if (got != want) {
        fprintf(stderr, "FAILED: %s: expected %s, got %s (0x%08" PRIX32 ")\n", call, PsStatusToString(want),
                PsStatusToString(got), got);
        failures++;
    }
}

/* As expect, and printed: for the rule checks (the bulk stays quiet). */
static void expect_shown(const char *call, PULSE_STATUS got, PULSE_STATUS want)
{
    printf("%-62s -> %s\n", call, PsStatusToString(got));
    expect(call, got, want);
}

static void check(int ok, const char *what)
{
    if (!ok) {
        fprintf(stderr, "FAILED: %s\n", what);
        failures++;
    }
}

static void sleep_ms(long ms)
{
    struct timespec pause = { ms / 1000, (ms % 1000) * 1000000L };
    nanosleep(&pause, NULL);
}

/* Whether /proc shows the debuggee stopped; -1 if /proc cannot tell. */
static int debuggee_stopped(void)
{
    char path[64], line[256];
    const char *state;
    FILE *stat;

    snprintf(path, sizeof path, "/proc/%ld/stat", (long)debuggee);
    stat = fopen(path, "r");
    if (stat == NULL)
        return -1;
    state = fgets(line, sizeof line, stat) ? strrchr(line, ')') : NULL;
    fclose(stat);
    return state != NULL && (state[2] == 'T' || state[2] == 't');
}

/* Pauses the debuggee: nothing submitted from now on is answered. */
static void pause_debuggee(void)
{
    int tries;

    if (kill(debuggee, SIGSTOP) != 0) {
        perror("kill(SIGSTOP)");
        exit(1);
    }
    for (tries = 0; tries < 200 && debuggee_stopped() == 0; tries++)
        sleep_ms(5);
    if (debuggee_stopped() < 0)
        sleep_ms(100);
}

static void resume_debuggee(void)
{
    if (kill(debuggee, SIGCONT) != 0) {
        perror("kill(SIGCONT)");
        exit(1);
    }
}

/* The MSRs the window writes and reads back: canonical addresses for the
 * address MSRs, a 32-bit value for IA32_TSC_AUX. */
static const struct msr {
    const char *name;
    uint32_t number;
    uint64_t base, mask;
} msrs[] = {
    { "IA32_LSTAR", 0xC0000082, UINT64_C(0xFFFFF80000000000), UINT64_C(0xFFFFFFFFF) },
    { "IA32_CSTAR", 0xC0000083, UINT64_C(0xFFFFF81000000000), UINT64_C(0xFFFFFFFFF) },
    { "IA32_KERNEL_GS_BASE", 0xC0000102, UINT64_C(0xFFFFF82000000000), UINT64_C(0xFFFFFFFFF) },
    { "IA32_FS_BASE", 0xC0000100, UINT64_C(0x00007F0000000000), UINT64_C(0xFFFFFFFFF) },
    { "IA32_GS_BASE", 0xC0000101, UINT64_C(0xFFFFF83000000000), UINT64_C(0xFFFFFFFFF) },
    { "IA32_SYSENTER_ESP", 0x175, UINT64_C(0xFFFFF84000000000), UINT64_C(0xFFFFFFFFF) },
    { "IA32_SYSENTER_EIP", 0x176, UINT64_C(0xFFFFF85000000000), UINT64_C(0xFFFFFFFFF) },
    { "IA32_TSC_AUX", 0xC0000103, UINT64_C(0x70000000), UINT64_C(0x0FFFFFFF) },
};

#define NMSRS (sizeof msrs / sizeof msrs[0])
#define IA32_LSTAR 0xC0000082u

/* Operation k of the window test: in block k / (2 * NMSRS), first a write
 * of each MSR, then a read of each. */
struct operation {
    int is_read;
    const struct msr *msr;
    uint64_t value; /* written, or expected back */
};

static struct operation operation(unsigned k)
{
    unsigned block = k / (2 * NMSRS), j = k % (2 * NMSRS);
    struct operation op;
    const struct msr *m = &msrs[j % NMSRS];
    uint64_t pattern = ((uint64_t)block << 8 | (uint64_t)(j % NMSRS)) << 4;

    op.is_read = j >= NMSRS;
    op.msr = m;
    op.value = m->base | (pattern & m->mask);
    return op;
}

static PULSE_STATUS assign(PPS_REQUEST request, struct operation op)
{
    return op.is_read ? PsRequestReadMsr(request, op.msr->number)
                      : PsRequestWriteMsr(request, op.msr->number, op.value);
}

/* Waits for the request of operation k and checks its outcome. */
static void finish(PPS_REQUEST request, unsigned k)
{
    struct operation op = operation(k);
    uint64_t value = 0;
    char what[96];

    snprintf(what, sizeof what, "operation %u: %s %s", k, op.is_read ? "read" : "write", op.msr->name);
    expect(what, PsRequestWait(request, WAIT_FOREVER), PULSE_STATUS_SUCCESS);
    expect(what, PsRequestGetStatus(request), PULSE_STATUS_SUCCESS);
    if (op.is_read) {
        expect(what, PsRequestGetMsrValue(request, &value), PULSE_STATUS_SUCCESS);
        if (value != op.value) {
            fprintf(stderr, "FAILED: %s: read 0x%016" PRIX64 ", the write before it was 0x%016" PRIX64 "\n", what,
                    value, op.value);
            failures++;
        }
    } else {
        /* A write has no value to give. */
        expect(what, PsRequestGetMsrValue(request, &value), PULSE_STATUS_INVALID_PARAMETER);
    }
}

/* 64 request objects in flight over OPERATIONS operations: as soon as a
 * request completes it carries the next operation. */
static void window(PPS_ENGINE engine)
{
    PPS_REQUEST requests[IN_FLIGHT];
    unsigned k, i, pending = 0, synchronous_reads = 0;

    for (i = 0; i < IN_FLIGHT; i++)
        expect("PsRequestCreate", PsRequestCreate(engine, &requests[i]), PULSE_STATUS_SUCCESS);
    /* With the debuggee paused, all 64 are in flight at once for certain. */
    if (debuggee)
        pause_debuggee();
    for (k = 0; k < OPERATIONS; k++) {
        PPS_REQUEST request = requests[k % IN_FLIGHT];

        if (k >= IN_FLIGHT)
            finish(request, k - IN_FLIGHT);
        expect("assign", assign(request, operation(k)), PULSE_STATUS_SUCCESS);
        expect("PsRequestSubmit", PsRequestSubmit(request), PULSE_STATUS_SUCCESS);
        /* Now and then a synchronous read, behind 64 requests in flight:
         * it takes its place in the same order, after the write just
         * submitted. */
        if (k >= IN_FLIGHT && k % 37 == 0 && !operation(k).is_read) {
            uint64_t value = 0;

            synchronous_reads++;
            expect("PsReadMsr amid the window", PsReadMsr(engine, operation(k).msr->number, &value),
                   PULSE_STATUS_SUCCESS);
            check(value == operation(k).value, "a synchronous read sees the request submitted before it");
        }
        if (k == IN_FLIGHT - 1) {
            for (i = 0; i < IN_FLIGHT; i++)
                pending += PsRequestGetStatus(requests[i]) == PULSE_STATUS_PENDING;
            printf("window: %u of %u requests pending after the %uth submission\n", pending, IN_FLIGHT, IN_FLIGHT);
            if (debuggee) {
                check(pending == IN_FLIGHT, "all 64 requests pending while the debuggee is paused");
                resume_debuggee();
            }
        }
    }
    for (k = OPERATIONS - IN_FLIGHT; k < OPERATIONS; k++)
        finish(requests[k % IN_FLIGHT], k);
    for (i = 0; i < IN_FLIGHT; i++)
        expect("PsRequestDestroy", PsRequestDestroy(requests[i]), PULSE_STATUS_SUCCESS);

    /* Synchronous calls see the last block's writes. */
    for (i = 0; i < NMSRS; i++) {
        uint64_t value = 0;
        struct operation last = operation(OPERATIONS - 2 * NMSRS + i);

        expect("PsReadMsr", PsReadMsr(engine, msrs[i].number, &value), PULSE_STATUS_SUCCESS);
        check(value == last.value, "PsReadMsr sees the window's last write");
    }
    printf("window: %u operations on %u requests and %u synchronous reads amid them, every read saw the write "
           "submitted before it\n",
           OPERATIONS, IN_FLIGHT, synchronous_reads);
}

static void null_arguments(PPS_ENGINE engine)
{
    PPS_REQUEST request = (PPS_REQUEST)&failures; /* a sentinel, never used as a request */
    uint64_t value = 7;

    expect_shown("PsRequestCreate(NULL engine)", PsRequestCreate(NULL, &request), PULSE_STATUS_INVALID_PARAMETER);
    check(request == (PPS_REQUEST)&failures, "a failed PsRequestCreate leaves *ppRequest alone");
    expect_shown("PsRequestCreate(engine, NULL)", PsRequestCreate(engine, NULL), PULSE_STATUS_INVALID_PARAMETER);
    expect_shown("PsRequestDestroy(NULL)", PsRequestDestroy(NULL), PULSE_STATUS_INVALID_PARAMETER);
    expect_shown("PsRequestWriteMsr(NULL)", PsRequestWriteMsr(NULL, IA32_LSTAR, 0), PULSE_STATUS_INVALID_PARAMETER);
    expect_shown("PsRequestReadMsr(NULL)", PsRequestReadMsr(NULL, IA32_LSTAR), PULSE_STATUS_INVALID_PARAMETER);
    expect_shown("PsRequestSubmit(NULL)", PsRequestSubmit(NULL), PULSE_STATUS_INVALID_PARAMETER);
    expect_shown("PsRequestWait(NULL)", PsRequestWait(NULL, 0), PULSE_STATUS_INVALID_PARAMETER);
    expect_shown("PsRequestGetStatus(NULL)", PsRequestGetStatus(NULL), PULSE_STATUS_INVALID_PARAMETER);
    expect_shown("PsRequestGetMsrValue(NULL, &value)", PsRequestGetMsrValue(NULL, &value),
                 PULSE_STATUS_INVALID_PARAMETER);
    expect_shown("PsRequestExecute(NULL)", PsRequestExecute(NULL), PULSE_STATUS_INVALID_PARAMETER);

    expect("PsRequestCreate", PsRequestCreate(engine, &request), PULSE_STATUS_SUCCESS);
    expect_shown("PsRequestReadMsr(IA32_LSTAR)", PsRequestReadMsr(request, IA32_LSTAR), PULSE_STATUS_SUCCESS);
    expect_shown("PsRequestExecute", PsRequestExecute(request), PULSE_STATUS_SUCCESS);
    expect_shown("PsRequestGetMsrValue(request, NULL)", PsRequestGetMsrValue(request, NULL),
                 PULSE_STATUS_INVALID_PARAMETER);
    expect("PsRequestDestroy", PsRequestDestroy(request), PULSE_STATUS_SUCCESS);
    check(value == 7, "failed calls leave *pMsrValue alone");
}

/* A request with no operation, and one assigned but never submitted. */
static void idle_and_ready(PPS_ENGINE engine)
{
    PPS_REQUEST request = NULL;
    uint64_t value = 7;

    expect("PsRequestCreate", PsRequestCreate(engine, &request), PULSE_STATUS_SUCCESS);
    expect_shown("idle: PsRequestSubmit", PsRequestSubmit(request), PULSE_STATUS_REQUEST_NOT_INITIALIZED);
    expect_shown("idle: PsRequestExecute", PsRequestExecute(request), PULSE_STATUS_REQUEST_NOT_INITIALIZED);
    expect_shown("idle: PsRequestWait", PsRequestWait(request, 0), PULSE_STATUS_REQUEST_NOT_INITIALIZED);
    expect_shown("idle: PsRequestGetStatus", PsRequestGetStatus(request), PULSE_STATUS_REQUEST_NOT_INITIALIZED);
    expect_shown("idle: PsRequestGetMsrValue", PsRequestGetMsrValue(request, &value), PULSE_STATUS_INVALID_PARAMETER);
    expect_shown("ready: PsRequestReadMsr(IA32_LSTAR)", PsRequestReadMsr(request, IA32_LSTAR), PULSE_STATUS_SUCCESS);
    expect_shown("ready: PsRequestGetStatus", PsRequestGetStatus(request), PULSE_STATUS_REQUEST_NOT_INITIALIZED);
    expect_shown("ready: PsRequestWait", PsRequestWait(request, 0), PULSE_STATUS_REQUEST_NOT_INITIALIZED);
    expect_shown("ready: PsRequestGetMsrValue", PsRequestGetMsrValue(request, &value), PULSE_STATUS_INVALID_PARAMETER);
    expect_shown("ready: PsRequestDestroy", PsRequestDestroy(request), PULSE_STATUS_SUCCESS);
    check(value == 7, "failed calls leave *pMsrValue alone");
}

/* Execute, reuse of a completed request, and a failing request among
 * requests that succeed: its text names the MSR. */
static void execute_and_failure(PPS_ENGINE engine)
{
    const uint64_t written = UINT64_C(0xFFFFF80077665540);
    PPS_REQUEST write = NULL, bad = NULL, read = NULL;
    uint64_t value = 0;
    char text[512];
    uint32_t needed = 0;

    expect("PsRequestCreate", PsRequestCreate(engine, &write), PULSE_STATUS_SUCCESS);
    expect("PsRequestCreate", PsRequestCreate(engine, &bad), PULSE_STATUS_SUCCESS);
    expect("PsRequestCreate", PsRequestCreate(engine, &read), PULSE_STATUS_SUCCESS);

    expect("PsRequestWriteMsr", PsRequestWriteMsr(write, IA32_LSTAR, written), PULSE_STATUS_SUCCESS);
    expect_shown("PsRequestExecute(write IA32_LSTAR)", PsRequestExecute(write), PULSE_STATUS_SUCCESS);
    expect_shown("PsRequestGetMsrValue(completed write)", PsRequestGetMsrValue(write, &value),
                 PULSE_STATUS_INVALID_PARAMETER);
    expect("PsRequestReadMsr", PsRequestReadMsr(read, IA32_LSTAR), PULSE_STATUS_SUCCESS);
    expect_shown("PsRequestExecute(read IA32_LSTAR)", PsRequestExecute(read), PULSE_STATUS_SUCCESS);
    expect("PsRequestGetMsrValue", PsRequestGetMsrValue(read, &value), PULSE_STATUS_SUCCESS);
    check(value == written, "PsRequestExecute's read sees its write");
    /* A completed request runs its operation again when resubmitted. */
    expect_shown("PsRequestExecute(the same read again)", PsRequestExecute(read), PULSE_STATUS_SUCCESS);

    /* write LSTAR, read a nonexistent MSR, read LSTAR: in flight together. */
    expect("PsRequestWriteMsr", PsRequestWriteMsr(write, IA32_LSTAR, written + 0x10), PULSE_STATUS_SUCCESS);
    expect("PsRequestReadMsr", PsRequestReadMsr(bad, NO_SUCH_MSR), PULSE_STATUS_SUCCESS);
    expect("PsRequestSubmit", PsRequestSubmit(write), PULSE_STATUS_SUCCESS);
    expect("PsRequestSubmit", PsRequestSubmit(bad), PULSE_STATUS_SUCCESS);
    expect("PsRequestSubmit", PsRequestSubmit(read), PULSE_STATUS_SUCCESS);
    expect("PsRequestWait", PsRequestWait(read, WAIT_FOREVER), PULSE_STATUS_SUCCESS);
    expect("PsRequestWait", PsRequestWait(bad, WAIT_FOREVER), PULSE_STATUS_SUCCESS);
    expect("PsRequestWait", PsRequestWait(write, WAIT_FOREVER), PULSE_STATUS_SUCCESS);
    expect_shown("PsRequestGetStatus(write IA32_LSTAR)", PsRequestGetStatus(write), PULSE_STATUS_SUCCESS);
    expect_shown("PsRequestGetStatus(read 0x40001234)", PsRequestGetStatus(bad),
                 PULSE_STATUS_EXCEPTION_GENERAL_PROTECTION);
    expect("PsGetLastErrorMessage", PsGetLastErrorMessage(text, sizeof text, &needed), PULSE_STATUS_SUCCESS);
    printf("%-62s    \"%s\"\n", "", text);
    check(strstr(text, "0x40001234") != NULL, "the #GP message names the MSR");
    check(needed == strlen(text) + 1, "pcbNeeded is the length plus the NUL");
    expect_shown("PsRequestGetMsrValue(failed read)", PsRequestGetMsrValue(bad, &value),
                 PULSE_STATUS_INVALID_PARAMETER);
    expect_shown("PsRequestGetStatus(read IA32_LSTAR)", PsRequestGetStatus(read), PULSE_STATUS_SUCCESS);
    expect("PsRequestGetMsrValue", PsRequestGetMsrValue(read, &value), PULSE_STATUS_SUCCESS);
    check(value == written + 0x10, "the read after the failing one sees the write before both");
    /* The same status as the synchronous call. */
    expect_shown("PsRequestExecute(read 0x40001234)", PsRequestExecute(bad), PULSE_STATUS_EXCEPTION_GENERAL_PROTECTION);
    expect_shown("PsReadMsr(0x40001234)", PsReadMsr(engine, NO_SUCH_MSR, &value),
                 PULSE_STATUS_EXCEPTION_GENERAL_PROTECTION);

    expect("PsRequestDestroy", PsRequestDestroy(write), PULSE_STATUS_SUCCESS);
    expect("PsRequestDestroy", PsRequestDestroy(bad), PULSE_STATUS_SUCCESS);
    expect("PsRequestDestroy", PsRequestDestroy(read), PULSE_STATUS_SUCCESS);
}

/* The busy rules on requests held busy by the paused debuggee: a write of
 * IA32_LSTAR and a read of it behind. Refused calls change nothing. */
static void busy_held(PPS_ENGINE engine)
{
    const uint64_t written = UINT64_C(0xFFFFF800AABBCC00);
    PPS_REQUEST write = NULL, read = NULL;
    uint64_t value = 7;

    expect("PsRequestCreate", PsRequestCreate(engine, &write), PULSE_STATUS_SUCCESS);
    expect("PsRequestCreate", PsRequestCreate(engine, &read), PULSE_STATUS_SUCCESS);
    expect("PsRequestWriteMsr", PsRequestWriteMsr(write, IA32_LSTAR, written), PULSE_STATUS_SUCCESS);
    expect("PsRequestReadMsr", PsRequestReadMsr(read, IA32_LSTAR), PULSE_STATUS_SUCCESS);
    pause_debuggee();
    expect("PsRequestSubmit", PsRequestSubmit(write), PULSE_STATUS_SUCCESS);
    expect("PsRequestSubmit", PsRequestSubmit(read), PULSE_STATUS_SUCCESS);
    expect_shown("busy: PsRequestGetStatus", PsRequestGetStatus(write), PULSE_STATUS_PENDING);
    expect_shown("busy: PsRequestWriteMsr", PsRequestWriteMsr(write, IA32_LSTAR, 0), PULSE_STATUS_REQUEST_BUSY);
    expect_shown("busy: PsRequestReadMsr", PsRequestReadMsr(write, IA32_LSTAR), PULSE_STATUS_REQUEST_BUSY);
    expect_shown("busy: PsRequestWriteMsr (the read)", PsRequestWriteMsr(read, IA32_LSTAR, 0),
                 PULSE_STATUS_REQUEST_BUSY);
    expect_shown("busy: PsRequestSubmit", PsRequestSubmit(write), PULSE_STATUS_REQUEST_BUSY);
    expect_shown("busy: PsRequestExecute", PsRequestExecute(write), PULSE_STATUS_REQUEST_BUSY);
    expect_shown("busy: PsRequestDestroy", PsRequestDestroy(write), PULSE_STATUS_REQUEST_BUSY);
    expect_shown("busy: PsRequestGetMsrValue", PsRequestGetMsrValue(read, &value), PULSE_STATUS_INVALID_PARAMETER);
    expect_shown("busy: PsRequestWait(50 ms)", PsRequestWait(read, 50), PULSE_STATUS_TIMEOUT);
    expect_shown("busy: PsRequestGetStatus after Wait's TIMEOUT", PsRequestGetStatus(read), PULSE_STATUS_PENDING);
    check(value == 7, "a refused PsRequestGetMsrValue leaves *pMsrValue alone");
    resume_debuggee();
    expect_shown("resumed: PsRequestWait", PsRequestWait(read, WAIT_FOREVER), PULSE_STATUS_SUCCESS);
    expect_shown("resumed: PsRequestGetStatus", PsRequestGetStatus(read), PULSE_STATUS_SUCCESS);
    expect("PsRequestGetMsrValue", PsRequestGetMsrValue(read, &value), PULSE_STATUS_SUCCESS);
    check(value == written, "the refused reassignments changed nothing: the read sees the write");
    expect_shown("completed: PsRequestGetStatus (the write)", PsRequestGetStatus(write), PULSE_STATUS_SUCCESS);
    expect_shown("completed: PsRequestDestroy", PsRequestDestroy(write), PULSE_STATUS_SUCCESS);
    expect("PsRequestDestroy", PsRequestDestroy(read), PULSE_STATUS_SUCCESS);
}

/* Without a debuggee to pause: the busy rules on requests caught busy
 * right after their submission. A call that finds the request completed
 * succeeds instead (harmlessly: it assigns the same read again, resubmits
 * it, or destroys it), so each rule must be seen at least once. */
static void busy_caught(PPS_ENGINE engine)
{
    PPS_REQUEST request = NULL;
    unsigned tries, assign_busy = 0, submit_busy = 0, destroy_busy = 0;
    PULSE_STATUS status;

    expect("PsRequestCreate", PsRequestCreate(engine, &request), PULSE_STATUS_SUCCESS);
    for (tries = 0; tries < 100000 && !(assign_busy && submit_busy && destroy_busy); tries++) {
        expect("PsRequestReadMsr", PsRequestReadMsr(request, IA32_LSTAR), PULSE_STATUS_SUCCESS);
        expect("PsRequestSubmit", PsRequestSubmit(request), PULSE_STATUS_SUCCESS);
        status = PsRequestReadMsr(request, IA32_LSTAR);
        assign_busy += status == PULSE_STATUS_REQUEST_BUSY;
        if (status != PULSE_STATUS_REQUEST_BUSY)
            expect("PsRequestReadMsr (busy or completed)", status, PULSE_STATUS_SUCCESS);
        status = PsRequestSubmit(request);
        submit_busy += status == PULSE_STATUS_REQUEST_BUSY;
        if (status != PULSE_STATUS_REQUEST_BUSY)
            expect("PsRequestSubmit (busy or completed)", status, PULSE_STATUS_SUCCESS);
        status = PsRequestDestroy(request);
        destroy_busy += status == PULSE_STATUS_REQUEST_BUSY;
        if (status == PULSE_STATUS_REQUEST_BUSY) {
            expect("PsRequestWait", PsRequestWait(request, WAIT_FOREVER), PULSE_STATUS_SUCCESS);
            expect("PsRequestGetStatus", PsRequestGetStatus(request), PULSE_STATUS_SUCCESS);
        } else {
            expect("PsRequestDestroy (busy or completed)", status, PULSE_STATUS_SUCCESS);
            expect("PsRequestCreate", PsRequestCreate(engine, &request), PULSE_STATUS_SUCCESS);
        }
    }
    printf("busy: in %u tries, REQUEST_BUSY from PsRequestReadMsr %u, PsRequestSubmit %u, PsRequestDestroy %u times\n",
           tries, assign_busy, submit_busy, destroy_busy);
    check(assign_busy && submit_busy && destroy_busy, "each busy rule seen at least once");
    expect("PsRequestDestroy", PsRequestDestroy(request), PULSE_STATUS_SUCCESS);
}

/* EngDestroyEngine under 64 requests in flight: each completes with
 * DEVICE_CONNECTION_LOST (SUCCESS if it was answered before), its object
 * stays valid until PsRequestDestroy, and it cannot be submitted again. */
static void destroy_in_flight(PPS_ENGINE engine)
{
    PPS_REQUEST requests[IN_FLIGHT];
    unsigned i, lost = 0, succeeded = 0;

    for (i = 0; i < IN_FLIGHT; i++) {
        expect("PsRequestCreate", PsRequestCreate(engine, &requests[i]), PULSE_STATUS_SUCCESS);
        expect("assign", assign(requests[i], operation(i)), PULSE_STATUS_SUCCESS);
    }
    if (debuggee)
        pause_debuggee();
    for (i = 0; i < IN_FLIGHT; i++)
        expect("PsRequestSubmit", PsRequestSubmit(requests[i]), PULSE_STATUS_SUCCESS);
    expect_shown("EngDestroyEngine with 64 requests in flight", EngDestroyEngine(engine), PULSE_STATUS_SUCCESS);
    for (i = 0; i < IN_FLIGHT; i++) {
        /* Completed by EngDestroyEngine: no Wait needed. */
        PULSE_STATUS status = PsRequestGetStatus(requests[i]);

        lost += status == PULSE_STATUS_DEVICE_CONNECTION_LOST;
        succeeded += status == PULSE_STATUS_SUCCESS;
        if (status != PULSE_STATUS_SUCCESS)
            expect("request in flight at EngDestroyEngine", status, PULSE_STATUS_DEVICE_CONNECTION_LOST);
        expect("PsRequestWait (completed)", PsRequestWait(requests[i], 0), PULSE_STATUS_SUCCESS);
    }
    printf("destroyed: %u requests completed with DEVICE_CONNECTION_LOST, %u had succeeded before\n", lost,
           succeeded);
    if (debuggee) {
        check(lost == IN_FLIGHT, "with the debuggee paused, all 64 complete with DEVICE_CONNECTION_LOST");
        resume_debuggee();
    }
    expect_shown("after EngDestroyEngine: PsRequestSubmit", PsRequestSubmit(requests[0]),
                 PULSE_STATUS_DEVICE_CONNECTION_LOST);
    expect_shown("after EngDestroyEngine: PsRequestExecute", PsRequestExecute(requests[1]),
                 PULSE_STATUS_DEVICE_CONNECTION_LOST);
    expect_shown("after EngDestroyEngine: PsRequestWriteMsr", PsRequestWriteMsr(requests[2], IA32_LSTAR, 0),
                 PULSE_STATUS_SUCCESS);
    for (i = 0; i < IN_FLIGHT; i++)
        expect("PsRequestDestroy after EngDestroyEngine", PsRequestDestroy(requests[i]), PULSE_STATUS_SUCCESS);
}

int main(int argc, char **argv)
{
    PS_ENGINE_CONFIG config = { sizeof(PS_ENGINE_CONFIG), "sim", 0, 0, NULL, 0 };
    PPS_ENGINE engine = NULL;
    PULSE_STATUS status;

    if (argc > 1)
        config.Transport = argv[1];
    if (argc > 2)
        debuggee = (pid_t)atol(argv[2]);
    status = EngCreateEngine(&config, &engine);
    if (status != PULSE_STATUS_SUCCESS) {
        fprintf(stderr, "EngCreateEngine(%s): %s (0x%08" PRIX32 ")\n", config.Transport, PsStatusToString(status),
                status);
        return 1;
    }
    printf("transport %s%s\n", config.Transport, debuggee ? ", debuggee paused for the busy checks" : "");

    null_arguments(engine);
    idle_and_ready(engine);
    window(engine);
    execute_and_failure(engine);
    if (debuggee)
        busy_held(engine);
    else
        busy_caught(engine);
    destroy_in_flight(engine); /* destroys the engine */

    if (failures) {
        fprintf(stderr, "%d check(s) failed\n", failures);
        return 1;
    }
    printf("all checks passed\n");
    return 0;
}
