/* Stream a greedy generation from a decoder-only model (Llama, GPT-2) through the qkv C API.
 *
 *   cc generate.c -Itools/capi/include -Ltarget/release -lqkv_capi -Wl,-rpath,target/release -o generate
 *   ./generate MODEL_DIR "Once upon a time" [MAX_NEW_TOKENS]
 *
 * The text goes to stdout as it is generated, then one line "tokens: ID ID ..." and one "stop: REASON".
 */
#include <stdio.h>
#include <stdlib.h>

#include "qkv.h"

static int print_token(uint32_t token, const char *text, size_t text_len, void *user_data) {
    (void)token;
    (void)user_data;
    fwrite(text, 1, text_len, stdout);
    fflush(stdout);
    return 0; /* non-zero would stop the generation */
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: %s MODEL_DIR PROMPT [MAX_NEW_TOKENS]\n", argv[0]);
        return 2;
    }
    qkv_error *err = NULL;
    qkv_model *model = qkv_model_load(argv[1], NULL, &err);
    if (!model) {
        fprintf(stderr, "error %d: %s\n", (int)err->code, err->message);
        qkv_error_free(err);
        return 1;
    }
    qkv_generate_options opts = qkv_generate_options_default(); /* temperature 0: greedy */
    if (argc > 3) opts.max_new_tokens = (size_t)strtoul(argv[3], NULL, 10);

    qkv_generation *gen = qkv_generate_stream(model, argv[2], &opts, print_token, NULL, &err);
    if (!gen) {
        fprintf(stderr, "error %d: %s\n", (int)err->code, err->message);
        qkv_error_free(err);
        qkv_model_free(model);
        return 1;
    }
    size_t n = 0;
    const uint32_t *tokens = qkv_generation_tokens(gen, &n);
    printf("\ntokens:");
    for (size_t i = 0; i < n; i++) printf(" %u", tokens[i]);
    static const char *reasons[] = {"eos", "stop_string", "max_tokens", "length", "callback"};
    printf("\nstop: %s\n", reasons[qkv_generation_stop_reason(gen)]);
    qkv_timings t = qkv_generation_timings(gen);
    fprintf(stderr, "%zu tokens in %.3f s (qkv %s)\n", t.generated_tokens, t.total_s, qkv_version());

    qkv_generation_free(gen);
    qkv_model_free(model);
    return 0;
}
