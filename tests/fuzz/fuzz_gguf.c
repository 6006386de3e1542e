/* fuzz_gguf.c - slm-convert's GGUF reader (tools/read_gguf.c) on one file,
   then the writer and the loader on what it accepts (fuzz_convert). The
   conversion options come from a hash of the input. */
#include "../../tools/convert.h"
#include "fuzz.h"

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    fuzz_quiet_converter();
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char path[1024];
    char *inputs[1];
    snprintf(path, sizeof path, "%s", fuzz_write("in.gguf", data, size));
    inputs[0] = path;
    fuzz_convert(conv_read_gguf, inputs, 1, fuzz_hash(data, size));
    return 0;
}
