//! Any text and ids through the real tokenizers (Marian SentencePiece, llama2.c, CTranslate2 vocabularies,
//! tokenizer.json BPE and Unigram): encode, decode, lookups (see the shared harness).
#![no_main]

#[path = "../../tests/fuzz_regressions/harness.rs"]
mod harness;

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use loaders::tokenizer::Tokenizer;

type Loaded = Vec<(String, Box<dyn Tokenizer>, harness::IdSpace)>;

fuzz_target!(|data: &[u8]| {
    static TOKENIZERS: OnceLock<Loaded> = OnceLock::new();
    harness::tokenizer_text(TOKENIZERS.get_or_init(harness::text_tokenizers), data);
});
