/* fuzz_hf.c - slm-convert's Hugging Face folder reader (tools/read_hf.c).
   The input is cut at each FUZZ_SEP into config.json, model.safetensors,
   tokenizer.json and tokenizer_config.json; the files a short input lacks
   are absent from the folder. Then the writer and the loader (fuzz_convert). */
#include "../../tools/convert.h"
#include "fuzz.h"

static const char *const files[4] = { "config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json" };
static char folder[1024];

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    fuzz_quiet_converter();
    snprintf(folder, sizeof folder, "%s/hf", fuzz_dir());
    if (mkdir(folder, 0700) != 0) {
        perror(folder);
        abort();
    }
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const uint8_t *part[4];
    size_t len[4];
    char name[64], path[1100];
    char *inputs[1];
    int n = fuzz_split(data, size, 4, part, len), i;
    for (i = 0; i < 4; i++) {
        snprintf(name, sizeof name, "hf/%s", files[i]);
        if (i < n) {
            fuzz_write(name, part[i], len[i]);
        } else {
            snprintf(path, sizeof path, "%s/%s", folder, files[i]);
            remove(path);
        }
    }
    inputs[0] = folder;
    fuzz_convert(conv_read_hf, inputs, 1, fuzz_hash(data, size));
    return 0;
}
