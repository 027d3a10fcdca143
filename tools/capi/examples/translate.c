/* Translate sentences in one batch with an encoder-decoder model (Marian, CTranslate2 Transformer)
 * through the qkv C API.
 *
 *   cc translate.c -Itools/capi/include -Ltarget/release -lqkv_capi -Wl,-rpath,target/release -o translate
 *   ./translate MODEL_DIR [--beam-size K] TEXT...
 *
 * One line per input, in order: the translation, a tab, its token ids.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "qkv.h"

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: %s MODEL_DIR [--beam-size K] TEXT...\n", argv[0]);
        return 2;
    }
    qkv_translate_options opts = qkv_translate_options_default(); /* the model's beam size, lengths */
    int first = 2;
    if (argc > 4 && strcmp(argv[2], "--beam-size") == 0) {
        opts.beam_size = (size_t)strtoul(argv[3], NULL, 10);
        first = 4;
    }
    qkv_error *err = NULL;
    qkv_model *model = qkv_model_load(argv[1], NULL, &err);
    if (!model) {
        fprintf(stderr, "error %d: %s\n", (int)err->code, err->message);
        qkv_error_free(err);
        return 1;
    }
    qkv_translations *out =
        qkv_translate(model, (const char *const *)&argv[first], (size_t)(argc - first), &opts, &err);
    if (!out) {
        fprintf(stderr, "error %d: %s\n", (int)err->code, err->message);
        qkv_error_free(err);
        qkv_model_free(model);
        return 1;
    }
    for (size_t i = 0; i < qkv_translations_count(out); i++) {
        const qkv_translation *t = qkv_translations_get(out, i);
        printf("%s\t", t->text);
        for (size_t j = 0; j < t->n_tokens; j++) printf(j ? " %u" : "%u", t->tokens[j]);
        printf("\n");
    }
    qkv_translations_free(out);
    qkv_model_free(model);
    return 0;
}
