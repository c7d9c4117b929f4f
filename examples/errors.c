/*
 * errors.c - every status code a caller can provoke from a test program,
 * and how to print one: PsStatusToString() gives the macro's name, the
 * value itself goes in hex (PRIX32 from <inttypes.h>).
 *
 *   INVALID_PARAMETER             NULL engine / out-pointer / config, bad Size,
 *                                 missing or malformed transport string
 *   EXCEPTION_GENERAL_PROTECTION  an MSR that does not exist, a refused value
 *   NO_SUCH_DEVICE                serial:/dev/<nothing there>
 *   CONNECTION_REFUSED            tcp: to a local port nobody listens on
 *   TIMEOUT                       tcp: to a listener that never answers
 *   DEVICE_CONNECTION_LOST        tcp: to a listener that hangs up at once
 *
 * The others need a broken link or debuggee (READ_FAILED, WRITE_FAILED,
 * INVALID_PACKET, REVISION_MISMATCH), a lack of permission or resources
 * (ACCESS_DENIED, INSUFFICIENT_RESOURCES) or a bug (INTERNAL_ERROR); the
 * Rust tests provoke them with a fault-injecting relay. A failing call
 * never writes through its out-pointer; that is checked here too.
 *
 * A status says what kind of failure it was; PsGetLastErrorMessage() says
 * precisely what (which part of a transport string, which device and the
 * OS's reason, which CPU): checked for a few failures, with the size
 * query, PULSE_STATUS_BUFFER_TOO_SMALL and a NULL pcbNeeded.
 *
 * Exit status 0 only if every call returned the expected code.
 */
#define _POSIX_C_SOURCE 200809L

#include <arpa/inet.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <pulse.h>

static int failures;

/* The way to report a status: its name and its value. */
static void print_status(const char *call, PULSE_STATUS status)
{
    printf("%-58s -> %s (0x%08" PRIX32 ")\n", call, PsStatusToString(status), status);
}

static void expect(const char *call, PULSE_STATUS got, PULSE_STATUS want)
{
    print_status(call, got);
    if (got != want) {
        fprintf(stderr, "FAILED: %s: expected %s, got %s\n", call, PsStatusToString(want),
                PsStatusToString(got));
        failures++;
    }
}

static void check(int ok, const char *what)
{
    if (!ok) {
        fprintf(stderr, "FAILED: %s\n", what);
        failures++;
    }
}

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000.0 + ts.tv_nsec / 1e6;
}

/* A TCP socket on 127.0.0.1, bound to a free port; *port receives it. */
static int local_socket(uint16_t *port)
{
    struct sockaddr_in addr;
    socklen_t len = sizeof addr;
    int fd = socket(AF_INET, SOCK_STREAM, 0);

    memset(&addr, 0, sizeof addr);
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = 0;
    if (fd < 0 || bind(fd, (struct sockaddr *)&addr, sizeof addr) != 0 ||
        getsockname(fd, (struct sockaddr *)&addr, &len) != 0) {
        perror("socket");
        if (fd >= 0)
            close(fd);
        return -1;
    }
    *port = ntohs(addr.sin_port);
    return fd;
}

/* Creates an engine for `transport` and returns the status; destroys the
 * engine if one was made. `engine` must stay untouched on failure. */
static PULSE_STATUS try_create(const char *transport, uint32_t timeout_ms, uint32_t attempts)
{
    static char sentinel;
    PPS_ENGINE const marker = (PPS_ENGINE)(void *)&sentinel;
    PS_ENGINE_CONFIG config = { sizeof(PS_ENGINE_CONFIG), transport, timeout_ms, attempts, NULL, 0 };
    PPS_ENGINE engine = marker;
    PULSE_STATUS status = EngCreateEngine(&config, &engine);

    if (status == PULSE_STATUS_SUCCESS)
        EngDestroyEngine(engine);
    else
        check(engine == marker, "a failed EngCreateEngine leaves *ppEngine alone");
    return status;
}

static void *accept_and_hang_up(void *arg)
{
    int listener = *(int *)arg;
    int fd = accept(listener, NULL, NULL);
    if (fd >= 0)
        close(fd);
    return NULL;
}

static void invalid_parameter(void)
{
    PS_ENGINE_CONFIG config = { sizeof(PS_ENGINE_CONFIG), "sim", 0, 0, NULL, 0 };
    PPS_ENGINE engine = NULL;
    uint64_t value = 0;
    const char *bad[] = { "", "simulator", "sim?cpu=pentium", "tcp:localhost", "tcp:host:99999",
                          "serial:", "usb:1" };
    char call[128];
    size_t i;

    expect("EngCreateEngine(NULL config)", EngCreateEngine(NULL, &engine), PULSE_STATUS_INVALID_PARAMETER);
    expect("EngCreateEngine(config, NULL ppEngine)", EngCreateEngine(&config, NULL),
           PULSE_STATUS_INVALID_PARAMETER);
    config.Size = 0;
    expect("EngCreateEngine(Size = 0)", EngCreateEngine(&config, &engine), PULSE_STATUS_INVALID_PARAMETER);
    config.Size = offsetof(PS_ENGINE_CONFIG, pKey) - 1; /* short of version 1 */
    expect("EngCreateEngine(Size = version 1 - 1)", EngCreateEngine(&config, &engine),
           PULSE_STATUS_INVALID_PARAMETER);
    config.Size = sizeof(PS_ENGINE_CONFIG);
    config.Transport = NULL;
    expect("EngCreateEngine(Transport = NULL)", EngCreateEngine(&config, &engine),
           PULSE_STATUS_INVALID_PARAMETER);
    check(engine == NULL, "*ppEngine untouched by failed creates");
    for (i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        snprintf(call, sizeof call, "EngCreateEngine(Transport = \"%s\")", bad[i]);
        expect(call, try_create(bad[i], 0, 0), PULSE_STATUS_INVALID_PARAMETER);
    }
    expect("PsWriteMsr(NULL engine)", PsWriteMsr(NULL, 0xC0000082, 0), PULSE_STATUS_INVALID_PARAMETER);
    expect("PsReadMsr(NULL engine)", PsReadMsr(NULL, 0xC0000082, &value), PULSE_STATUS_INVALID_PARAMETER);
    expect("EngDestroyEngine(NULL)", EngDestroyEngine(NULL), PULSE_STATUS_INVALID_PARAMETER);
    expect("PsGetVersion(NULL, NULL, NULL)", PsGetVersion(NULL, NULL, NULL), PULSE_STATUS_INVALID_PARAMETER);

    config.Transport = "sim";
    if (EngCreateEngine(&config, &engine) != PULSE_STATUS_SUCCESS) {
        check(0, "EngCreateEngine(sim)");
        return;
    }
    expect("PsReadMsr(engine, IA32_LSTAR, NULL)", PsReadMsr(engine, 0xC0000082, NULL),
           PULSE_STATUS_INVALID_PARAMETER);
    EngDestroyEngine(engine);
}

static void general_protection(void)
{
    PS_ENGINE_CONFIG config = { sizeof(PS_ENGINE_CONFIG), "sim", 0, 0, NULL, 0 };
    PPS_ENGINE engine = NULL;
    uint64_t value = 42;

    if (EngCreateEngine(&config, &engine) != PULSE_STATUS_SUCCESS) {
        check(0, "EngCreateEngine(sim)");
        return;
    }
    expect("PsWriteMsr(0x40001234: no such MSR)", PsWriteMsr(engine, 0x40001234, 1),
           PULSE_STATUS_EXCEPTION_GENERAL_PROTECTION);
    expect("PsReadMsr(0x40001234: no such MSR)", PsReadMsr(engine, 0x40001234, &value),
           PULSE_STATUS_EXCEPTION_GENERAL_PROTECTION);
    check(value == 42, "a failed PsReadMsr leaves *pMsrValue alone");
    expect("PsWriteMsr(IA32_PAT, 0x0202020202020202: type 2 reserved)",
           PsWriteMsr(engine, 0x277, UINT64_C(0x0202020202020202)), PULSE_STATUS_EXCEPTION_GENERAL_PROTECTION);
    expect("PsWriteMsr(IA32_LSTAR, 0x0000800000000000: non-canonical)",
           PsWriteMsr(engine, 0xC0000082, UINT64_C(0x0000800000000000)),
           PULSE_STATUS_EXCEPTION_GENERAL_PROTECTION);
    /* A refused write changed nothing: PAT still has its reset value. */
    check(PsReadMsr(engine, 0x277, &value) == PULSE_STATUS_SUCCESS && value == UINT64_C(0x0007040600070406),
          "IA32_PAT unchanged after the refused write");
    EngDestroyEngine(engine);
}

static void transport_failures(void)
{
    char transport[64];
    uint16_t port = 0;
    pthread_t thread;
    double started, elapsed;
    int fd;

    expect("EngCreateEngine(serial:/dev/nonexistent)", try_create("serial:/dev/nonexistent", 0, 0),
           PULSE_STATUS_NO_SUCH_DEVICE);

    /* A port that was free a moment ago and has no listener now. */
    fd = local_socket(&port);
    check(fd >= 0, "local socket");
    close(fd);
    snprintf(transport, sizeof transport, "tcp:127.0.0.1:%u", (unsigned)port);
    expect("EngCreateEngine(tcp: closed port)", try_create(transport, 0, 0), PULSE_STATUS_CONNECTION_REFUSED);

    /* listen() without accept(): the kernel completes the TCP handshake,
     * nobody ever answers. 50 ms x 2 attempts bounds the call. */
    fd = local_socket(&port);
    check(fd >= 0 && listen(fd, 4) == 0, "listen");
    snprintf(transport, sizeof transport, "tcp:127.0.0.1:%u", (unsigned)port);
    started = now_ms();
    expect("EngCreateEngine(tcp: silent listener, 50 ms x 2)", try_create(transport, 50, 2),
           PULSE_STATUS_TIMEOUT);
    elapsed = now_ms() - started;
    printf("%-58s    (took %.0f ms)\n", "", elapsed);
    check(elapsed < 2000.0, "TIMEOUT within RequestTimeoutMs x MaxAttempts plus slack");
    close(fd);

    /* A listener that accepts and hangs up at once: EOF during the handshake. */
    fd = local_socket(&port);
    check(fd >= 0 && listen(fd, 4) == 0, "listen");
    snprintf(transport, sizeof transport, "tcp:127.0.0.1:%u", (unsigned)port);
    if (pthread_create(&thread, NULL, accept_and_hang_up, &fd) == 0) {
        expect("EngCreateEngine(tcp: peer hangs up)", try_create(transport, 500, 2),
               PULSE_STATUS_DEVICE_CONNECTION_LOST);
        pthread_join(thread, NULL);
    } else {
        check(0, "pthread_create");
    }
    close(fd);
}

/* The thread's last message must contain `needle`; printed under the call. */
static void expect_message(const char *what, const char *needle)
{
    char text[512];
    uint32_t needed = 0;
    PULSE_STATUS status = PsGetLastErrorMessage(text, sizeof text, &needed);

    if (status != PULSE_STATUS_SUCCESS) {
        fprintf(stderr, "FAILED: %s: PsGetLastErrorMessage -> %s\n", what, PsStatusToString(status));
        failures++;
        return;
    }
    printf("%-58s    \"%s\"\n", "", text);
    check(needed == strlen(text) + 1, "pcbNeeded is the length plus the NUL");
    if (strstr(text, needle) == NULL) {
        fprintf(stderr, "FAILED: %s: message \"%s\" lacks \"%s\"\n", what, text, needle);
        failures++;
    }
}

static void messages(void)
{
    PS_ENGINE_CONFIG config = { sizeof(PS_ENGINE_CONFIG), "sim?cpus=2", 0, 0, NULL, 0 };
    PPS_ENGINE engine = NULL;
    char small[8];
    char text[512];
    uint32_t needed = 0;

    expect("EngCreateEngine(tcp://127.0.0.1:5555)", try_create("tcp://127.0.0.1:5555", 100, 1),
           PULSE_STATUS_INVALID_PARAMETER);
    expect_message("URL-style tcp string", "`tcp://127.0.0.1:5555` is malformed");
    expect("EngCreateEngine(serial:/dev/nonexistent)", try_create("serial:/dev/nonexistent", 0, 0),
           PULSE_STATUS_NO_SUCH_DEVICE);
    expect_message("missing device", "`/dev/nonexistent`: No such file or directory");

    /* The size query: no buffer, size 0. */
    expect("PsGetLastErrorMessage(NULL, 0, &needed)", PsGetLastErrorMessage(NULL, 0, &needed),
           PULSE_STATUS_BUFFER_TOO_SMALL);
    check(needed > sizeof small, "the message needs more than 8 bytes");
    /* Too small: BUFFER_TOO_SMALL, nothing written, the size told. */
    memset(small, 'x', sizeof small);
    needed = 0;
    expect("PsGetLastErrorMessage(8-byte buffer)", PsGetLastErrorMessage(small, sizeof small, &needed),
           PULSE_STATUS_BUFFER_TOO_SMALL);
    check(memchr(small, 'x', sizeof small) == small && small[sizeof small - 1] == 'x',
          "BUFFER_TOO_SMALL writes nothing");
    check(needed > sizeof small, "BUFFER_TOO_SMALL tells the size");
    /* pcbNeeded may be NULL. */
    expect("PsGetLastErrorMessage(buffer, size, NULL)", PsGetLastErrorMessage(text, sizeof text, NULL),
           PULSE_STATUS_SUCCESS);
    check(strlen(text) + 1 == needed, "the same message with a NULL pcbNeeded");

    if (EngCreateEngine(&config, &engine) != PULSE_STATUS_SUCCESS) {
        check(0, "EngCreateEngine(sim?cpus=2)");
        return;
    }
    expect("PsSwitchCpu(engine, 7)", PsSwitchCpu(engine, 7), PULSE_STATUS_BARRIER_NO_CPU);
    expect_message("missing CPU", "no CPU 7 (it has 2");
    expect("PsWriteMsr(0x40001234: no such MSR)", PsWriteMsr(engine, 0x40001234, 1),
           PULSE_STATUS_EXCEPTION_GENERAL_PROTECTION);
    expect_message("#GP", "WRMSR 0x40001234 <- 0x1 on CPU 0");
    EngDestroyEngine(engine);
    /* A successful call leaves the message as it was. */
    expect_message("after a success", "WRMSR 0x40001234");
}

/* Every code has a name; anything else is PULSE_STATUS_UNKNOWN. */
static void names(void)
{
#define NAMED(code) { code, #code }
    static const struct {
        PULSE_STATUS code;
        const char *name;
    } all[] = {
        NAMED(PULSE_STATUS_SUCCESS),
        NAMED(PULSE_STATUS_INSUFFICIENT_RESOURCES),
        NAMED(PULSE_STATUS_READ_FAILED),
        NAMED(PULSE_STATUS_WRITE_FAILED),
        NAMED(PULSE_STATUS_TIMEOUT),
        NAMED(PULSE_STATUS_NO_SUCH_DEVICE),
        NAMED(PULSE_STATUS_INVALID_PARAMETER),
        NAMED(PULSE_STATUS_ACCESS_DENIED),
        NAMED(PULSE_STATUS_BUFFER_TOO_SMALL),
        NAMED(PULSE_STATUS_INVALID_PACKET),
        NAMED(PULSE_STATUS_REVISION_MISMATCH),
        NAMED(PULSE_STATUS_INTERNAL_ERROR),
        NAMED(PULSE_STATUS_CONNECTION_REFUSED),
        NAMED(PULSE_STATUS_DEVICE_CONNECTION_LOST),
        NAMED(PULSE_STATUS_EXCEPTION_GENERAL_PROTECTION),
    };
#undef NAMED
    size_t i;

    for (i = 0; i < sizeof all / sizeof all[0]; i++) {
        const char *name = PsStatusToString(all[i].code);
        check(name != NULL && strcmp(name, all[i].name) == 0, all[i].name);
    }
    check(strcmp(PsStatusToString(0xC0FFEE00u), "PULSE_STATUS_UNKNOWN") == 0,
          "an unknown code is PULSE_STATUS_UNKNOWN");
    print_status("PsStatusToString(0xC0FFEE00)", 0xC0FFEE00u);
}

int main(void)
{
    invalid_parameter();
    general_protection();
    transport_failures();
    messages();
    names();
    if (failures) {
        fprintf(stderr, "%d check(s) failed\n", failures);
        return 1;
    }
    printf("every provoked status matched\n");
    return 0;
}
