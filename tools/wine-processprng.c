/*
 * Purpose: a stand-in bcryptprimitives.dll for the Wine test environment, never for a
 * release. cryptography's Rust extension imports ProcessPrng from bcryptprimitives.dll
 * (Windows 10 and later have it); Wine 8's builtin lacks it, and the import fails with
 * "DLL load failed while importing _rust". This one function fills the buffer from
 * RtlGenRandom (advapi32's SystemFunction036), which Wine has.
 *
 * Strategy: tools/wine-env compiles it with Debian's MinGW-w64 and puts it beside the
 * extension module, whose own directory Python searches first for its DLLs; the Wine test
 * build of the .exe carries it the same way (tools/wine-pyinstaller, build.spec's
 * TSWSL_TEST_BINARIES).
 */
#include <windows.h>

BOOLEAN WINAPI SystemFunction036(PVOID buffer, ULONG length);

__declspec(dllexport) BOOL WINAPI ProcessPrng(PBYTE data, SIZE_T size)
{
    while (size > 0) {
        ULONG chunk = size > 0x40000000 ? 0x40000000 : (ULONG)size;
        if (!SystemFunction036(data, chunk)) {
            return FALSE;
        }
        data += chunk;
        size -= chunk;
    }
    return TRUE;
}
