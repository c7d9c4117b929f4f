/*
 * wrmsr.c - the minimal libpulse program: create an engine on the simulated
 * debuggee, write IA32_LSTAR, read it back as the guest sees it, destroy.
 * Exits 0 only if every step succeeded and the value read back is the one
 * written.
 */
#include <inttypes.h>
#include <stdio.h>

#include <pulse.h>

#define IA32_LSTAR 0xC0000082u

int main(int argc, char **argv)
{
    const char *transport = argc > 1 ? argv[1] : "sim";
    PS_ENGINE_CONFIG config = { sizeof(PS_ENGINE_CONFIG), transport, 0, 0, NULL, 0 };
    PPS_ENGINE engine = NULL;
    const uint64_t value = UINT64_C(0xFFFFF80012345000);
    uint64_t readback = 0;
    PULSE_STATUS status;

    status = EngCreateEngine(&config, &engine);
    if (status != PULSE_STATUS_SUCCESS) {
        fprintf(stderr, "EngCreateEngine(%s): %s (0x%08" PRIX32 ")\n", transport,
                PsStatusToString(status), status);
        return 1;
    }
    status = PsWriteMsr(engine, IA32_LSTAR, value);
    if (status != PULSE_STATUS_SUCCESS) {
        fprintf(stderr, "PsWriteMsr: %s\n", PsStatusToString(status));
        EngDestroyEngine(engine);
        return 1;
    }
    status = PsReadMsr(engine, IA32_LSTAR, &readback);
    EngDestroyEngine(engine);
    if (status != PULSE_STATUS_SUCCESS || readback != value) {
        fprintf(stderr, "PsReadMsr: %s, value 0x%016" PRIX64 "\n", PsStatusToString(status), readback);
        return 1;
    }
    printf("IA32_LSTAR = 0x%016" PRIX64 " on %s\n", readback, transport);
    return 0;
}
