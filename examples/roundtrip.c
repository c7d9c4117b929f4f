/*
 * roundtrip.c - write each of the 14 MSRs that hv-stub applies to the guest
 * (the PsWriteMsr reference page's list), read it back with PsReadMsr and
 * check the guest sees the value written.
 *
 * Runs on "sim?cpu=full", the simulated CPU that has every feature, so all
 * 14 MSRs exist. Two values are not read back unchanged, by design:
 *   - IA32_SYSENTER_CS lives in a 32-bit VMCS field: bits 63:32 are dropped;
 *   - IA32_EFER.LMA is read-only and follows LME and paging, so only SCE
 *     and NXE are toggled here, LME/LMA are kept as they are.
 * Then, on the default "sim" CPU (no MPX), IA32_BNDCFGS does not exist and
 * both calls fail with PULSE_STATUS_EXCEPTION_GENERAL_PROTECTION.
 *
 * Exit status 0 only if every check passed.
 */
#include <inttypes.h>
#include <stdio.h>

#include <pulse.h>

struct seed {
    const char *name;
    uint32_t msr;
    uint64_t value;    /* what is written */
    uint64_t expected; /* what the guest then reads */
};

/* Values every one of which the processor accepts: canonical addresses,
 * valid PAT memory types, only implemented control bits. */
static const struct seed seeds[] = {
    { "IA32_SYSENTER_CS", 0x174, UINT64_C(0xDEADBEEF00000010), UINT64_C(0x10) },
    { "IA32_SYSENTER_ESP", 0x175, UINT64_C(0xFFFFF80000003000), UINT64_C(0xFFFFF80000003000) },
    { "IA32_SYSENTER_EIP", 0x176, UINT64_C(0xFFFFF80000004000), UINT64_C(0xFFFFF80000004000) },
    { "IA32_SMBASE", 0x9E, UINT64_C(0x000A8000), UINT64_C(0x000A8000) },
    { "IA32_DEBUGCTL", 0x1D9, UINT64_C(0x41), UINT64_C(0x41) }, /* LBR | TR */
    { "IA32_PAT", 0x277, UINT64_C(0x0007010600070106), UINT64_C(0x0007010600070106) },
    { "IA32_EFER", 0xC0000080, 0, 0 }, /* filled in from the current value */
    { "IA32_PERF_GLOBAL_CTRL", 0x38F, UINT64_C(0x0000000F000000FF), UINT64_C(0x0000000F000000FF) },
    { "IA32_BNDCFGS", 0xD90, UINT64_C(0xFFFFF80000001001), UINT64_C(0xFFFFF80000001001) },
    { "IA32_RTIT_CTL", 0x570, UINT64_C(0x2000), UINT64_C(0x2000) }, /* BranchEn */
    { "IA32_PKRS", 0x6E1, UINT64_C(0x55555554), UINT64_C(0x55555554) },
    { "IA32_S_CET", 0x6A2, UINT64_C(0x1), UINT64_C(0x1) }, /* SH_STK_EN */
    { "IA32_INTERRUPT_SSP_TABLE_ADDR", 0x6A8, UINT64_C(0xFFFFF80000002000), UINT64_C(0xFFFFF80000002000) },
    { "IA32_FEATURE_CONTROL", 0x3A, UINT64_C(0x5), UINT64_C(0x5) }, /* lock | VMX outside SMX */
};

#define IA32_EFER 0xC0000080u
#define EFER_SCE UINT64_C(0x001)
#define EFER_NXE UINT64_C(0x800)
#define IA32_BNDCFGS 0xD90u

static int failures;

static void check(int ok, const char *what)
{
    if (!ok) {
        fprintf(stderr, "FAILED: %s\n", what);
        failures++;
    }
}

static PULSE_STATUS open_engine(const char *transport, PPS_ENGINE *engine)
{
    PS_ENGINE_CONFIG config = { sizeof(PS_ENGINE_CONFIG), transport, 0, 0, NULL, 0 };
    PULSE_STATUS status = EngCreateEngine(&config, engine);
    if (status != PULSE_STATUS_SUCCESS)
        fprintf(stderr, "EngCreateEngine(%s): %s\n", transport, PsStatusToString(status));
    return status;
}

int main(void)
{
    struct seed table[sizeof seeds / sizeof seeds[0]];
    PPS_ENGINE engine = NULL;
    uint64_t efer = 0, value = 0;
    size_t i;

    if (open_engine("sim?cpu=full", &engine) != PULSE_STATUS_SUCCESS)
        return 1;

    /* EFER: keep LME/LMA (the guest is in long mode), flip SCE and NXE. */
    check(PsReadMsr(engine, IA32_EFER, &efer) == PULSE_STATUS_SUCCESS, "read IA32_EFER");
    printf("IA32_EFER before: 0x%016" PRIX64 "\n", efer);
    for (i = 0; i < sizeof table / sizeof table[0]; i++) {
        table[i] = seeds[i];
        if (table[i].msr == IA32_EFER)
            table[i].value = table[i].expected = efer ^ (EFER_SCE | EFER_NXE);
    }

    for (i = 0; i < sizeof table / sizeof table[0]; i++) {
        const struct seed *s = &table[i];
        PULSE_STATUS write = PsWriteMsr(engine, s->msr, s->value);
        PULSE_STATUS read = PULSE_STATUS_INTERNAL_ERROR;

        value = ~UINT64_C(0);
        if (write == PULSE_STATUS_SUCCESS)
            read = PsReadMsr(engine, s->msr, &value);
        printf("%-30s 0x%08" PRIX32 "  wrote 0x%016" PRIX64 " -> %s, guest reads 0x%016" PRIX64 "\n",
               s->name, s->msr, s->value, PsStatusToString(write), value);
        check(write == PULSE_STATUS_SUCCESS, s->name);
        check(read == PULSE_STATUS_SUCCESS, s->name);
        check(value == s->expected, s->name);
    }

    /* SYSENTER_CS, spelled out: the high half is gone. */
    check(PsReadMsr(engine, 0x174, &value) == PULSE_STATUS_SUCCESS && value == UINT64_C(0x10),
          "IA32_SYSENTER_CS keeps only bits 31:0");
    check(EngDestroyEngine(engine) == PULSE_STATUS_SUCCESS, "EngDestroyEngine");

    /* The default CPU has no MPX: IA32_BNDCFGS faults both ways and the
     * out-value is left alone. */
    if (open_engine("sim", &engine) != PULSE_STATUS_SUCCESS)
        return 1;
    value = 42;
    check(PsWriteMsr(engine, IA32_BNDCFGS, 0) == PULSE_STATUS_EXCEPTION_GENERAL_PROTECTION,
          "IA32_BNDCFGS write on sim (no MPX) is #GP");
    check(PsReadMsr(engine, IA32_BNDCFGS, &value) == PULSE_STATUS_EXCEPTION_GENERAL_PROTECTION,
          "IA32_BNDCFGS read on sim (no MPX) is #GP");
    check(value == 42, "no value stored on failure");
    check(EngDestroyEngine(engine) == PULSE_STATUS_SUCCESS, "EngDestroyEngine");

    if (failures) {
        fprintf(stderr, "%d check(s) failed\n", failures);
        return 1;
    }
    printf("all %u guest-applied MSRs round-trip\n", (unsigned)(sizeof table / sizeof table[0]));
    return 0;
}
