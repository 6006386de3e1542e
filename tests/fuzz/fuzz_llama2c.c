/* fuzz_llama2c.c - slm-convert's llama2.c reader (tools/read_llama2c.c):
   the input is the checkpoint, FUZZ_SEP, then its tokenizer.bin (empty when
   there is no separator); then the writer and the loader (fuzz_convert). */
#include "../../tools/convert.h"
#include "fuzz.h"

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    fuzz_quiet_converter();
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const uint8_t *part[2];
    size_t len[2];
    char ckpt[1024], tok[1024];
    char *inputs[2];
    int n = fuzz_split(data, size, 2, part, len);
    snprintf(ckpt, sizeof ckpt, "%s", fuzz_write("model.bin", part[0], len[0]));
    snprintf(tok, sizeof tok, "%s", fuzz_write("tokenizer.bin", n > 1 ? part[1] : data, n > 1 ? len[1] : 0));
    inputs[0] = ckpt;
    inputs[1] = tok;
    fuzz_convert(conv_read_llama2c, inputs, 2, fuzz_hash(data, size));
    return 0;
}
