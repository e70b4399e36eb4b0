/* fuzz-proto.c - libFuzzer entry point for the wire codec; the body is in fuzz-proto.h. */
#include <stddef.h>
#include <stdint.h>

#include "fuzz-proto.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    return fuzz_proto_one(data, size);
}
