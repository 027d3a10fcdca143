// The qkv C API from C++: RAII handles, errors as exceptions, a lambda as the token callback.
//
//   c++ -std=c++17 example.cpp -Itools/capi/include target/release/libqkv_capi.a -lpthread -ldl -lm -o example
//   ./example generate MODEL_DIR "Once upon a time" [MAX_NEW_TOKENS]
//   ./example translate MODEL_DIR TEXT...
//
// generate prints the streamed text, then "tokens: ..." and "stop: ..."; translate prints one line per
// input: the translation, a tab, its token ids.
#include <cstdio>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "qkv.h"

namespace qkv {

struct Error : std::runtime_error {
    qkv_status code;
    Error(qkv_status c, const std::string &m) : std::runtime_error(m), code(c) {}
};

// Throws the error a failed call left in `err`.
template <class T> T *check(T *result, qkv_error *err) {
    if (result) return result;
    Error e(err->code, err->message);
    qkv_error_free(err);
    throw e;
}

struct ModelFree { void operator()(qkv_model *m) const { qkv_model_free(m); } };
struct GenerationFree { void operator()(qkv_generation *g) const { qkv_generation_free(g); } };
struct TranslationsFree { void operator()(qkv_translations *t) const { qkv_translations_free(t); } };
using Generation = std::unique_ptr<qkv_generation, GenerationFree>;
using Translations = std::unique_ptr<qkv_translations, TranslationsFree>;

class Model {
  public:
    explicit Model(const std::string &dir, const qkv_load_options *opts = nullptr) {
        qkv_error *err = nullptr;
        m_.reset(check(qkv_model_load(dir.c_str(), opts, &err), err));
    }

    // Streams each token's text to `on_text` (return false to stop); returns the whole generation.
    template <class F> Generation stream(const std::string &prompt, const qkv_generate_options &opts, F on_text) {
        struct Ctx { F *f; } ctx{&on_text};
        auto trampoline = [](uint32_t, const char *text, size_t len, void *user) -> int {
            // the callback must not throw into qkv: a failure becomes "stop"
            try {
                return (*static_cast<Ctx *>(user)->f)(std::string(text, len)) ? 0 : 1;
            } catch (...) {
                return 1;
            }
        };
        qkv_error *err = nullptr;
        return Generation(check(qkv_generate_stream(m_.get(), prompt.c_str(), &opts, trampoline, &ctx, &err), err));
    }

    Translations translate(const std::vector<std::string> &texts, const qkv_translate_options &opts) {
        std::vector<const char *> ptrs;
        for (const auto &t : texts) ptrs.push_back(t.c_str());
        qkv_error *err = nullptr;
        return Translations(check(qkv_translate(m_.get(), ptrs.data(), ptrs.size(), &opts, &err), err));
    }

  private:
    std::unique_ptr<qkv_model, ModelFree> m_;
};

}  // namespace qkv

int main(int argc, char **argv) {
    if (argc < 4) {
        std::fprintf(stderr, "usage: %s generate MODEL_DIR PROMPT [MAX_NEW_TOKENS] | translate MODEL_DIR TEXT...\n",
                     argv[0]);
        return 2;
    }
    const std::string mode = argv[1];
    try {
        qkv::Model model(argv[2]);
        if (mode == "generate") {
            qkv_generate_options opts = qkv_generate_options_default();  // greedy
            if (argc > 4) opts.max_new_tokens = std::stoul(argv[4]);
            auto gen = model.stream(argv[3], opts, [](const std::string &text) {
                std::fputs(text.c_str(), stdout);
                return true;
            });
            size_t n = 0;
            const uint32_t *tokens = qkv_generation_tokens(gen.get(), &n);
            std::printf("\ntokens:");
            for (size_t i = 0; i < n; i++) std::printf(" %u", tokens[i]);
            static const char *reasons[] = {"eos", "stop_string", "max_tokens", "length", "callback"};
            std::printf("\nstop: %s\n", reasons[qkv_generation_stop_reason(gen.get())]);
        } else if (mode == "translate") {
            std::vector<std::string> texts(argv + 3, argv + argc);
            auto out = model.translate(texts, qkv_translate_options_default());
            for (size_t i = 0; i < qkv_translations_count(out.get()); i++) {
                const qkv_translation *t = qkv_translations_get(out.get(), i);
                std::printf("%s\t", std::string(t->text, t->text_len).c_str());
                for (size_t j = 0; j < t->n_tokens; j++) std::printf(j ? " %u" : "%u", t->tokens[j]);
                std::printf("\n");
            }
        } else {
            std::fprintf(stderr, "unknown mode %s\n", mode.c_str());
            return 2;
        }
    } catch (const qkv::Error &e) {
        std::fprintf(stderr, "error %d: %s\n", static_cast<int>(e.code), e.what());
        return 1;
    }
    return 0;
}
