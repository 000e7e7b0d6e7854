/*
 * fuzz_policy_request.c: libFuzzer target for the JSON request reader and
 * the decisions it feeds (make fuzz). Each input is one request line, decided
 * against a fixed policy exercising every matcher (exact, wildcard and
 * hostless endpoints, L7 rules with query matchers, deny rules, allowed_ips).
 */
#include <stddef.h>
#include <stdint.h>

#include "fuzz_policy.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_policy_request_one(data, size);
    return 0;
}
