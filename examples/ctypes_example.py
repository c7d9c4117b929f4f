#!/usr/bin/env python3
"""libpulse from Python through ctypes, no extension module needed.

    python3 ctypes_example.py /path/to/libpulse.so [TRANSPORT]

Load libpulse by its path (or by its soname, "libpulse.so.0.1", once
installed where the loader looks): ctypes.util.find_library("pulse") can
return PulseAudio's libpulse.so.0 (docs/TROUBLESHOOTING.md).

Writes IA32_LSTAR and reads it back, then shows a refused write (#GP) and
the status text. Exits 0 only if every result is the expected one.
"""
import ctypes
import sys

PULSE_STATUS_SUCCESS = 0x00000000
PULSE_STATUS_EXCEPTION_GENERAL_PROTECTION = 0xC001000D
IA32_LSTAR = 0xC0000082
IA32_PAT = 0x277


class PS_ENGINE_CONFIG(ctypes.Structure):
    """Version 1 of the struct in pulse.h; Size tells the library which."""

    _fields_ = [
        ("Size", ctypes.c_uint32),
        ("Transport", ctypes.c_char_p),
        ("RequestTimeoutMs", ctypes.c_uint32),
        ("MaxAttempts", ctypes.c_uint32),
    ]


def load(path):
    lib = ctypes.CDLL(path)
    engine = ctypes.c_void_p  # PPS_ENGINE, opaque
    status = ctypes.c_uint32  # PULSE_STATUS
    lib.EngCreateEngine.argtypes = [ctypes.POINTER(PS_ENGINE_CONFIG), ctypes.POINTER(engine)]
    lib.EngCreateEngine.restype = status
    lib.EngDestroyEngine.argtypes = [engine]
    lib.EngDestroyEngine.restype = status
    lib.PsWriteMsr.argtypes = [engine, ctypes.c_uint32, ctypes.c_uint64]
    lib.PsWriteMsr.restype = status
    lib.PsReadMsr.argtypes = [engine, ctypes.c_uint32, ctypes.POINTER(ctypes.c_uint64)]
    lib.PsReadMsr.restype = status
    lib.PsStatusToString.argtypes = [status]
    lib.PsStatusToString.restype = ctypes.c_char_p
    return lib


class PulseError(Exception):
    def __init__(self, lib, call, status):
        name = lib.PsStatusToString(status).decode()
        super().__init__(f"{call}: {name} (0x{status:08X})")
        self.status = status


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    lib = load(sys.argv[1])
    transport = sys.argv[2] if len(sys.argv) > 2 else "sim"

    config = PS_ENGINE_CONFIG(ctypes.sizeof(PS_ENGINE_CONFIG), transport.encode(), 0, 0)
    engine = ctypes.c_void_p()
    status = lib.EngCreateEngine(ctypes.byref(config), ctypes.byref(engine))
    if status != PULSE_STATUS_SUCCESS:
        raise PulseError(lib, "EngCreateEngine", status)
    try:
        value = 0xFFFFF80012345000
        status = lib.PsWriteMsr(engine, IA32_LSTAR, value)
        if status != PULSE_STATUS_SUCCESS:
            raise PulseError(lib, "PsWriteMsr", status)
        readback = ctypes.c_uint64()
        status = lib.PsReadMsr(engine, IA32_LSTAR, ctypes.byref(readback))
        if status != PULSE_STATUS_SUCCESS:
            raise PulseError(lib, "PsReadMsr", status)
        print(f"IA32_LSTAR = 0x{readback.value:016X} on {transport}")
        if readback.value != value:
            sys.exit(f"read back 0x{readback.value:X}, wrote 0x{value:X}")

        # Memory type 2 is reserved in IA32_PAT: the processor would #GP.
        status = lib.PsWriteMsr(engine, IA32_PAT, 0x0202020202020202)
        print(f"PsWriteMsr(IA32_PAT, 0x0202020202020202) -> {lib.PsStatusToString(status).decode()}")
        if status != PULSE_STATUS_EXCEPTION_GENERAL_PROTECTION:
            sys.exit("the refused PAT value was not reported as #GP")
    finally:
        lib.EngDestroyEngine(engine)


if __name__ == "__main__":
    try:
        main()
    except PulseError as e:
        sys.exit(str(e))
