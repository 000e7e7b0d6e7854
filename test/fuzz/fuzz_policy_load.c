/*
 * fuzz_policy_load.c: libFuzzer target for the policy loader (make fuzz).
 *
 * Any input must produce either a compiled policy or diagnostics, never a
 * crash, hang or leak. A policy that loads is then asked a few fixed
 * questions so the compiled matcher runs on whatever the loader accepted.
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "fuzz_policy.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_policy_load_one(data, size);
    return 0;
}
