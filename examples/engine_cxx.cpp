// engine_cxx.cpp - libpulse from C++: the header is C++-clean (extern "C"),
// and a std::unique_ptr with EngDestroyEngine as its deleter owns the
// engine, so every path out of the function destroys it. Failures become
// exceptions carrying PsStatusToString's name.
//
// Exit status 0 only if every check passed.
#include <cinttypes>
#include <cstdio>
#include <memory>
#include <stdexcept>
#include <string>

#include <pulse.h>

namespace {

struct EngineDeleter {
    void operator()(PS_ENGINE *engine) const noexcept { EngDestroyEngine(engine); }
};
using Engine = std::unique_ptr<PS_ENGINE, EngineDeleter>;

struct PulseError : std::runtime_error {
    PULSE_STATUS status;
    PulseError(const std::string &call, PULSE_STATUS s)
        : std::runtime_error(call + ": " + PsStatusToString(s)), status(s) {}
};

void check(const char *call, PULSE_STATUS status)
{
    if (status != PULSE_STATUS_SUCCESS)
        throw PulseError(call, status);
}

Engine open(const char *transport)
{
    PS_ENGINE_CONFIG config = {};
    config.Size = sizeof config;
    config.Transport = transport;
    PPS_ENGINE raw = nullptr;
    check("EngCreateEngine", EngCreateEngine(&config, &raw));
    return Engine(raw);
}

std::uint64_t read(const Engine &engine, std::uint32_t msr)
{
    std::uint64_t value = 0;
    check("PsReadMsr", PsReadMsr(engine.get(), msr, &value));
    return value;
}

} // namespace

int main()
{
    const std::uint32_t IA32_LSTAR = 0xC0000082u, IA32_PAT = 0x277u;
    int failures = 0;

    std::uint32_t major = 0, minor = 0, patch = 0;
    if (PsGetVersion(&major, &minor, &patch) != PULSE_STATUS_SUCCESS || major != PULSE_VERSION_MAJOR ||
        minor != PULSE_VERSION_MINOR) {
        std::fprintf(stderr, "library %u.%u.%u does not match the header\n", unsigned(major), unsigned(minor),
                     unsigned(patch));
        return 1;
    }
    try {
        Engine engine = open("sim");
        check("PsWriteMsr", PsWriteMsr(engine.get(), IA32_LSTAR, 0xFFFFF80012345000ull));
        std::uint64_t value = read(engine, IA32_LSTAR);
        std::printf("IA32_LSTAR = 0x%016" PRIX64 "\n", value);
        if (value != 0xFFFFF80012345000ull)
            failures++;

        // A refused value throws; the engine is still destroyed on the way out.
        try {
            check("PsWriteMsr", PsWriteMsr(engine.get(), IA32_PAT, 0x0202020202020202ull));
            std::fprintf(stderr, "invalid PAT accepted\n");
            failures++;
        } catch (const PulseError &e) {
            std::printf("caught: %s\n", e.what());
            if (e.status != PULSE_STATUS_EXCEPTION_GENERAL_PROTECTION)
                failures++;
        }
    } catch (const PulseError &e) {
        std::fprintf(stderr, "%s\n", e.what());
        return 1;
    }
    try {
        open("tcp:no-port");
        failures++;
    } catch (const PulseError &e) {
        std::printf("caught: %s\n", e.what());
        if (e.status != PULSE_STATUS_INVALID_PARAMETER)
            failures++;
    }
    return failures == 0 ? 0 : 1;
}
