/* The qkv C API from C: every error path (NULL, bad UTF-8, missing model, bad options, callback stop),
 * stream == generate, results shared by threads, and the error reporting itself.
 *
 *   capi_test STORIES260K_DIR AREN_CT2_DIR
 *
 * Compiled and run by tools/tests/embed_c.rs; ends with "N passed, M failed" and exits non-zero on a failure.
 */
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "qkv.h"

static int passed, failed;

#define CHECK(cond, ...)                                               \
    do {                                                               \
        if (cond) {                                                    \
            passed++;                                                  \
        } else {                                                       \
            failed++;                                                  \
            fprintf(stderr, "FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond); \
            fprintf(stderr, __VA_ARGS__);                              \
            fprintf(stderr, "\n");                                     \
        }                                                              \
    } while (0)

/* A failed call: NULL result, the error (code and a message containing `needle`) both in *err and as the
 * thread's last error. Frees the error. */
static void expect_error(const void *result, qkv_error *err, qkv_status code, const char *needle, const char *what) {
    CHECK(result == NULL, "%s: expected NULL", what);
    CHECK(err != NULL, "%s: expected an error", what);
    if (!err) return;
    if (getenv("QKV_TEST_VERBOSE")) printf("%-34s -> %d: %s\n", what, (int)err->code, err->message);
    CHECK(err->code == code, "%s: code %d, expected %d (%s)", what, (int)err->code, (int)code, err->message);
    CHECK(strstr(err->message, needle) != NULL, "%s: message \"%s\" does not name \"%s\"", what, err->message,
          needle);
    CHECK(qkv_last_error_code() == code, "%s: last error code %d", what, (int)qkv_last_error_code());
    CHECK(strcmp(qkv_last_error_message(), err->message) == 0, "%s: last error message \"%s\"", what,
          qkv_last_error_message());
    qkv_error_free(err);
}

/* `call` (which writes `err`) fails as expect_error says. */
#define EXPECT(call, code, needle, what)                   \
    do {                                                   \
        err = NULL;                                        \
        const void *result_ = (call);                      \
        expect_error(result_, err, code, needle, what);    \
    } while (0)

static int tokens_equal(const qkv_generation *a, const qkv_generation *b) {
    size_t na, nb;
    const uint32_t *ta = qkv_generation_tokens(a, &na);
    const uint32_t *tb = qkv_generation_tokens(b, &nb);
    return na == nb && memcmp(ta, tb, na * sizeof(uint32_t)) == 0;
}

/* The callback of stream tests: appends the text, counts calls, stops after `stop_after` (0 = never). */
typedef struct {
    char text[8192];
    size_t len;
    size_t calls;
    size_t stop_after;
    int bad_text; /* text[text_len] was not NUL */
} collect;

static int on_token(uint32_t token, const char *text, size_t text_len, void *user_data) {
    (void)token;
    collect *c = user_data;
    if (text[text_len] != '\0') c->bad_text = 1;
    if (c->len + text_len < sizeof c->text) {
        memcpy(c->text + c->len, text, text_len);
        c->len += text_len;
        c->text[c->len] = '\0';
    }
    c->calls++;
    return c->stop_after && c->calls >= c->stop_after;
}

static void test_version(void) {
    const char *v = qkv_version();
    CHECK(v && strlen(v) >= 5 && strchr(v, '.'), "version \"%s\"", v ? v : "(null)");
    CHECK(qkv_abi_version() == QKV_ABI_VERSION, "abi %u", qkv_abi_version());
}

static void test_load_errors(const char *stories) {
    qkv_error *err = NULL;
    EXPECT(qkv_model_load(NULL, NULL, &err), QKV_ERR_NULL_POINTER, "path", "load(NULL)");

    /* err may be NULL: the thread's last error still says what happened */
    CHECK(qkv_model_load(NULL, NULL, NULL) == NULL, "load(NULL) without err");
    CHECK(qkv_last_error_code() == QKV_ERR_NULL_POINTER, "last error %d", (int)qkv_last_error_code());
    EXPECT(qkv_model_load("/tmp/\xff\xfe-model", NULL, &err), QKV_ERR_INVALID_UTF8, "path",
                 "load(bad UTF-8)");
    EXPECT(qkv_model_load("/nonexistent/qkv-model", NULL, &err), QKV_ERR_LOAD, "/nonexistent/qkv-model",
                 "load(missing)");

    qkv_load_options o = qkv_load_options_default();
    o.weights = 7;
    EXPECT(qkv_model_load(stories, &o, &err), QKV_ERR_INVALID_ARGUMENT, "weights", "load(weights=7)");
    o = qkv_load_options_default();
    o.isa = "avx1024";
    EXPECT(qkv_model_load(stories, &o, &err), QKV_ERR_ISA, "avx1024", "load(isa=avx1024)");
    o.isa = "\xc3\x28";
    EXPECT(qkv_model_load(stories, &o, &err), QKV_ERR_INVALID_UTF8, "options.isa", "load(isa bad UTF-8)");
}

static void test_generate_errors(const qkv_model *model, const qkv_model *aren) {
    qkv_error *err = NULL;
    EXPECT(qkv_generate(NULL, "x", NULL, &err), QKV_ERR_NULL_POINTER, "model", "generate(NULL model)");
    EXPECT(qkv_generate(model, NULL, NULL, &err), QKV_ERR_NULL_POINTER, "prompt", "generate(NULL prompt)");
    EXPECT(qkv_generate(model, "Once \xff upon", NULL, &err), QKV_ERR_INVALID_UTF8, "prompt",
                 "generate(bad UTF-8)");

    qkv_generate_options o = qkv_generate_options_default();
    o.temperature = -1.0f;
    EXPECT(qkv_generate(model, "x", &o, &err), QKV_ERR_INVALID_ARGUMENT, "temperature",
                 "generate(temperature=-1)");
    o = qkv_generate_options_default();
    o.top_p = 2.0f;
    EXPECT(qkv_generate(model, "x", &o, &err), QKV_ERR_INVALID_ARGUMENT, "top_p", "generate(top_p=2)");
    o = qkv_generate_options_default();
    o.repetition_penalty = 0.0f;
    EXPECT(qkv_generate(model, "x", &o, &err), QKV_ERR_INVALID_ARGUMENT, "repetition_penalty",
                 "generate(repetition_penalty=0)");
    o = qkv_generate_options_default();
    o.prompt_format = 9;
    EXPECT(qkv_generate(model, "x", &o, &err), QKV_ERR_INVALID_ARGUMENT, "prompt_format",
                 "generate(prompt_format=9)");
    o = qkv_generate_options_default();
    o.n_stop_strings = 1;
    EXPECT(qkv_generate(model, "x", &o, &err), QKV_ERR_NULL_POINTER, "stop_strings",
                 "generate(stop_strings NULL)");
    const char *stops[] = {"ok", "\xff"};
    o.stop_strings = stops;
    o.n_stop_strings = 2;
    EXPECT(qkv_generate(model, "x", &o, &err), QKV_ERR_INVALID_UTF8, "stop_strings[1]",
                 "generate(stop_strings bad UTF-8)");
    EXPECT(qkv_generate_stream(model, "x", NULL, NULL, NULL, &err), QKV_ERR_NULL_POINTER, "callback",
                 "stream(NULL callback)");
    /* an encoder-decoder model generates from the prompt as its source (T5's text-to-text prompts) */
    {
        qkv_generation *g = qkv_generate(aren, "x", NULL, &err);
        CHECK(g != NULL && err == NULL, "generate on a translation model: %s", err ? err->message : "no result");
        qkv_generation_free(g);
        if (err) qkv_error_free(err), err = NULL;
    }

    /* a prompt longer than the context (512 positions) */
    static char long_prompt[20000];
    for (size_t i = 0; i + 2 < sizeof long_prompt; i += 2) memcpy(long_prompt + i, "a ", 2);
    EXPECT(qkv_generate(model, long_prompt, NULL, &err), QKV_ERR_INVALID_ARGUMENT, "prompt",
                 "generate(over-long prompt)");
}

static void test_generate(const qkv_model *model) {
    qkv_generate_options o = qkv_generate_options_default();
    o.max_new_tokens = 40;
    qkv_error *err = (qkv_error *)1; /* overwritten with NULL on success */
    qkv_generation *whole = qkv_generate(model, "Once upon a time", &o, &err);
    CHECK(whole && err == NULL, "generate: %s", qkv_last_error_message());
    if (!whole) return;
    CHECK(qkv_last_error_code() == QKV_OK && strcmp(qkv_last_error_message(), "") == 0, "last error after success");
    size_t n = 0, text_len = 0;
    qkv_generation_tokens(whole, &n);
    const char *text = qkv_generation_text(whole, &text_len);
    CHECK(n > 0 && n <= 40, "%zu tokens", n);
    CHECK(text_len == strlen(text) && text_len > 0, "text length %zu", text_len);
    qkv_stop_reason why = qkv_generation_stop_reason(whole);
    CHECK(why == QKV_STOP_MAX_TOKENS || why == QKV_STOP_EOS, "stop reason %d", (int)why);
    qkv_timings t = qkv_generation_timings(whole);
    CHECK(t.generated_tokens == n && t.prompt_tokens > 0 && t.total_s > 0, "timings %zu %zu", t.generated_tokens,
          t.prompt_tokens);

    /* streaming gives the same tokens and the same text, one callback per token */
    collect c = {0};
    qkv_generation *streamed = qkv_generate_stream(model, "Once upon a time", &o, on_token, &c, &err);
    CHECK(streamed && err == NULL, "stream: %s", qkv_last_error_message());
    if (streamed) {
        CHECK(tokens_equal(whole, streamed), "stream tokens differ from generate");
        CHECK(strcmp(c.text, text) == 0, "streamed text \"%s\" vs \"%s\"", c.text, text);
        CHECK(c.calls == n, "%zu callbacks for %zu tokens", c.calls, n);
        CHECK(!c.bad_text, "callback text not NUL-terminated");
        CHECK(qkv_generation_stop_reason(streamed) == why, "stream stop reason");
        qkv_generation_free(streamed);
    }

    /* the callback stops it: not an error; the tokens so far, QKV_STOP_CALLBACK */
    collect s = {0};
    s.stop_after = 5;
    qkv_generation *stopped = qkv_generate_stream(model, "Once upon a time", &o, on_token, &s, &err);
    CHECK(stopped && err == NULL, "stopped stream: %s", qkv_last_error_message());
    if (stopped) {
        size_t ns = 0;
        const uint32_t *ts = qkv_generation_tokens(stopped, &ns);
        const uint32_t *tw = qkv_generation_tokens(whole, &n);
        CHECK(s.calls == 5 && ns == 5, "stopped after %zu calls, %zu tokens", s.calls, ns);
        CHECK(ns <= n && memcmp(ts, tw, ns * sizeof(uint32_t)) == 0, "stopped tokens are not a prefix");
        CHECK(qkv_generation_stop_reason(stopped) == QKV_STOP_CALLBACK, "stop reason %d",
              (int)qkv_generation_stop_reason(stopped));
        CHECK(strcmp(qkv_generation_text(stopped, NULL), s.text) == 0, "stopped text");
        qkv_generation_free(stopped);
    }

    /* a stop string ends it and is not returned */
    const char *stops[] = {"upon"};
    qkv_generate_options os = o;
    os.stop_strings = stops;
    os.n_stop_strings = 1;
    qkv_generation *g = qkv_generate(model, "Once", &os, &err);
    CHECK(g != NULL, "stop strings: %s", qkv_last_error_message());
    if (g) {
        const char *gt = qkv_generation_text(g, NULL);
        CHECK(strstr(gt, "upon") == NULL, "stop string returned: \"%s\"", gt);
        qkv_generation_free(g);
    }

    /* sampling with a seed is reproducible */
    qkv_generate_options sampled = o;
    sampled.temperature = 0.8f;
    sampled.top_p = 0.9f;
    sampled.seed = 42;
    qkv_generation *a = qkv_generate(model, "Once upon a time", &sampled, NULL);
    qkv_generation *b = qkv_generate(model, "Once upon a time", &sampled, NULL);
    CHECK(a && b && tokens_equal(a, b), "seeded sampling is not reproducible");
    qkv_generation_free(a);
    qkv_generation_free(b);

    /* NULL handles in accessors and frees */
    CHECK(qkv_generation_text(NULL, &text_len) == NULL && text_len == 0, "text(NULL)");
    CHECK(qkv_generation_tokens(NULL, &n) == NULL && n == 0, "tokens(NULL)");
    qkv_generation_free(NULL);
    qkv_model_free(NULL);
    qkv_translations_free(NULL);
    qkv_error_free(NULL);
    qkv_generation_free(whole);
}

static void test_memory_cap(const char *stories) {
    qkv_load_options lo = qkv_load_options_default();
    lo.max_cache_bytes = 1024; /* far below one position of 5 layers */
    qkv_model *small = qkv_model_load(stories, &lo, NULL);
    CHECK(small != NULL, "load with a cache cap: %s", qkv_last_error_message());
    qkv_error *err = NULL;
    EXPECT(qkv_generate(small, "Once", NULL, &err), QKV_ERR_MEMORY, "1024", "generate over the cache cap");
    qkv_model_free(small);
}

static void test_translate(const qkv_model *aren, const qkv_model *stories) {
    qkv_error *err = NULL;
    const char *texts[] = {"\xd8\xb3\xd9\x85\xd9\x8a\xd8\xb1", NULL};
    EXPECT(qkv_translate(aren, NULL, 2, NULL, &err), QKV_ERR_NULL_POINTER, "texts", "translate(NULL)");
    EXPECT(qkv_translate(aren, texts, 2, NULL, &err), QKV_ERR_NULL_POINTER, "texts[1]",
                 "translate(texts[1] NULL)");
    const char *bad[] = {"\xd8"};
    EXPECT(qkv_translate(aren, bad, 1, NULL, &err), QKV_ERR_INVALID_UTF8, "texts[0]",
                 "translate(bad UTF-8)");
    EXPECT(qkv_translate(stories, texts, 1, NULL, &err), QKV_ERR_INVALID_ARGUMENT, "decoder-only",
                 "translate on a decoder-only model");
    qkv_translate_options o = qkv_translate_options_default();
    o.batch_size = 0;
    EXPECT(qkv_translate(aren, texts, 1, &o, &err), QKV_ERR_INVALID_ARGUMENT, "batch_size",
                 "translate(batch_size=0)");

    qkv_translations *none = qkv_translate(aren, NULL, 0, NULL, &err);
    CHECK(none && qkv_translations_count(none) == 0, "translate of nothing");
    qkv_translations_free(none);

    qkv_translations *one = qkv_translate(aren, texts, 1, NULL, &err);
    CHECK(one && qkv_translations_count(one) == 1, "translate: %s", qkv_last_error_message());
    if (one) {
        const qkv_translation *t = qkv_translations_get(one, 0);
        CHECK(t && t->text_len == strlen(t->text) && t->n_tokens > 0 && t->tokens[t->n_tokens - 1] == 2,
              "translation %s", t ? t->text : "(null)");
        CHECK(t && isfinite(t->score) && t->score <= 0, "score");
        CHECK(qkv_translations_get(one, 1) == NULL, "get out of range");
        qkv_translations_free(one);
    }
}

/* One model shared by threads: each thread's generations equal the serial ones. */
typedef struct {
    const qkv_model *model;
    const qkv_generate_options *opts;
    qkv_generation *out[3];
} job;

static const char *prompts[3] = {"Once upon a time", "The cat", "Lily and Tom"};

static void *run_job(void *arg) {
    job *j = arg;
    for (int i = 0; i < 3; i++) j->out[i] = qkv_generate(j->model, prompts[i], j->opts, NULL);
    return NULL;
}

static void test_threads(const qkv_model *model) {
    qkv_generate_options o = qkv_generate_options_default();
    o.max_new_tokens = 48;
    o.temperature = 0.9f;
    o.seed = 7;
    job serial = {model, &o, {0}};
    run_job(&serial);
    pthread_t th[4];
    job jobs[4];
    for (int t = 0; t < 4; t++) {
        jobs[t] = (job){model, &o, {0}};
        pthread_create(&th[t], NULL, run_job, &jobs[t]);
    }
    for (int t = 0; t < 4; t++) pthread_join(th[t], NULL);
    for (int t = 0; t < 4; t++) {
        for (int i = 0; i < 3; i++) {
            CHECK(jobs[t].out[i] && serial.out[i] && tokens_equal(jobs[t].out[i], serial.out[i]),
                  "thread %d prompt %d differs from the serial run", t, i);
            qkv_generation_free(jobs[t].out[i]);
        }
    }
    for (int i = 0; i < 3; i++) qkv_generation_free(serial.out[i]);
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: %s STORIES260K_DIR AREN_CT2_DIR\n", argv[0]);
        return 2;
    }
    test_version();
    test_load_errors(argv[1]);

    qkv_load_options lo = qkv_load_options_default();
    lo.threads = 2;
    qkv_error *err = NULL;
    qkv_model *stories = qkv_model_load(argv[1], &lo, &err);
    qkv_model *aren = qkv_model_load(argv[2], NULL, &err);
    CHECK(stories && aren, "load: %s", qkv_last_error_message());
    if (!stories || !aren) {
        printf("%d passed, %d failed\n", passed, failed);
        return 1;
    }
    test_generate_errors(stories, aren);
    test_generate(stories);
    test_memory_cap(argv[1]);
    test_translate(aren, stories);
    test_threads(stories);

    /* int8 weights load and generate */
    lo.weights = QKV_WEIGHTS_INT8;
    qkv_model *int8 = qkv_model_load(argv[1], &lo, NULL);
    qkv_generation *g = int8 ? qkv_generate(int8, "Once upon a time", NULL, NULL) : NULL;
    CHECK(int8 && g, "int8: %s", qkv_last_error_message());
    qkv_generation_free(g);
    qkv_model_free(int8);

    qkv_model_free(stories);
    qkv_model_free(aren);
    printf("%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
