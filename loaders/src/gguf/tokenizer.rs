//! A Hugging Face `tokenizer.json` + `tokenizer_config.json` built from a GGUF file's tokenizer metadata.
//!
//! Mirrors what transformers builds when it loads a tokenizer from a GGUF
//! (`integrations/gguf/gguf_tokenizer_mapping.py`), so ids match `AutoTokenizer.from_pretrained(dir, gguf_file=..)`:
//! - `tokenizer.ggml.model = gpt2`: byte-level BPE (GPT-2 style) over the file's vocabulary and merges; tokens not
//!   spelled in the byte alphabet are respelled byte by byte; the pre-tokenizer is GPT-2's byte-level regex unless
//!   `tokenizer.ggml.pre` names a split regex transformers knows (llama3, qwen2, ...).
//! - `tokenizer.ggml.model = llama`: SentencePiece-style BPE with byte fallback and merges recovered from the scores.
//! - Control tokens (type 3) become special added tokens, user-defined tokens (type 4) plain added tokens, and the
//!   bos/eos/unk/pad tokens are special too; the post-processor adds bos/eos as `add_bos_token`/`add_eos_token` say.
//!
//! The JSON is checked by loading it with the `tokenizers` crate before it is written.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde_json::{json, Map, Value};

use super::reader::GgufFile;
use crate::error::{Error, Result};

/// llama.cpp token types (`tokenizer.ggml.token_type`).
const TOKEN_TYPE_CONTROL: i64 = 3;
const TOKEN_TYPE_USER_DEFINED: i64 = 4;

/// llama3-style split regex (transformers' `_LLAMA3_SPLIT`).
const LLAMA3_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// Qwen2 split regex (transformers' `Qwen2Tokenizer` `PRETOKENIZE_REGEX`).
const QWEN2_SPLIT: &str =
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// Qwen3.5 split regex.
const QWEN35_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}| ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// Mistral tekken split regex.
const TEKKEN_SPLIT: &str = concat!(
    r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+",
    r"|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*",
    r"|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+"
);
/// GPT-4o split regex.
const GPT4O_SPLIT: &str = concat!(
    r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?",
    r"|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?",
    r"|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+"
);

/// `tokenizer.ggml.pre` values whose split regex transformers knows; any other keeps GPT-2's byte-level regex.
fn split_regex(pre: &str) -> Option<&'static str> {
    Some(match pre {
        "llama3" | "llama-v3" | "llama-bpe" | "falcon3" | "falcon-h1" | "pixtral" | "midm-2.0" | "lfm2"
        | "jina-v5-nano" | "dbrx" | "smaug-bpe" => LLAMA3_SPLIT,
        "tekken" => TEKKEN_SPLIT,
        "qwen2" | "deepseek-r1-qwen" | "kormo" | "f2llmv2" | "megrez" => QWEN2_SPLIT,
        "qwen35" => QWEN35_SPLIT,
        "gpt-4o" | "llama4" | "kanana2" | "talkie" | "minimax-m2" => GPT4O_SPLIT,
        _ => return None,
    })
}

/// GPT-2's reversible byte -> printable char table (`bytes_to_unicode`).
fn bytes_to_unicode() -> [char; 256] {
    let mut table = ['\0'; 256];
    let printable = |b: u32| (33..=126).contains(&b) || (161..=172).contains(&b) || (174..=255).contains(&b);
    let mut n = 0;
    for b in 0..256u32 {
        let c = if printable(b) {
            b
        } else {
            n += 1;
            255 + n
        };
        // Every value is below 256 + 256, a valid scalar value.
        table[b as usize] = char::from_u32(c).unwrap_or('\u{FFFD}');
    }
    table
}

/// The two JSON files of a Hugging Face tokenizer.
pub struct TokenizerFiles {
    pub tokenizer_json: Value,
    pub tokenizer_config: Value,
}

/// The special-token ids the file names (each checked to be a valid id).
#[derive(Default)]
struct SpecialIds {
    bos: Option<u32>,
    eos: Option<u32>,
    unk: Option<u32>,
    pad: Option<u32>,
}

struct Meta<'a> {
    model: &'a str,
    tokens: &'a [String],
    /// One llama.cpp token type per token (empty when the file has none).
    token_types: Vec<i64>,
    special: SpecialIds,
    add_bos: bool,
    add_eos: bool,
}

fn import_err(gguf: &GgufFile, reason: String) -> Error {
    Error::GgufImport {
        path: gguf.path().to_path_buf(),
        reason,
    }
}

fn read_meta(gguf: &GgufFile) -> Result<Meta<'_>> {
    let model = gguf.get_str("tokenizer.ggml.model")?;
    let tokens = gguf.get_str_array("tokenizer.ggml.tokens")?;
    let token_types = match gguf.metadata().get("tokenizer.ggml.token_type") {
        None => vec![],
        Some(_) => gguf.get_int_array("tokenizer.ggml.token_type")?,
    };
    if !token_types.is_empty() && token_types.len() != tokens.len() {
        return Err(Error::GgufMetadata {
            path: gguf.path().to_path_buf(),
            key: "tokenizer.ggml.token_type".into(),
            expected: format!("{} entries (one per token)", tokens.len()),
            found: format!("{} entries", token_types.len()),
        });
    }
    let id = |key: &str| -> Result<Option<u32>> {
        if !gguf.metadata().contains_key(key) {
            return Ok(None);
        }
        let v = gguf.get_u64(key)?;
        match u32::try_from(v) {
            Ok(v) if (v as usize) < tokens.len() => Ok(Some(v)),
            _ => Err(Error::GgufMetadata {
                path: gguf.path().to_path_buf(),
                key: key.to_string(),
                expected: format!("a token id below {}", tokens.len()),
                found: v.to_string(),
            }),
        }
    };
    let special = SpecialIds {
        bos: id("tokenizer.ggml.bos_token_id")?,
        eos: id("tokenizer.ggml.eos_token_id")?,
        unk: id("tokenizer.ggml.unknown_token_id")?,
        pad: id("tokenizer.ggml.padding_token_id")?,
    };
    let flag = |key: &str, default: bool| -> Result<bool> {
        match gguf.metadata().get(key) {
            None => Ok(default),
            Some(_) => gguf.get_bool(key),
        }
    };
    // llama.cpp adds BOS to a SentencePiece vocabulary that does not say otherwise (as transformers assumes too).
    let add_bos = flag("tokenizer.ggml.add_bos_token", model == "llama")?;
    let add_eos = flag("tokenizer.ggml.add_eos_token", false)?;
    Ok(Meta {
        model,
        tokens,
        token_types,
        special,
        add_bos,
        add_eos,
    })
}

/// One `added_tokens` entry.
fn added_token(id: u32, content: &str, special: bool) -> Value {
    json!({
        "id": id, "content": content, "single_word": false, "lstrip": false, "rstrip": false,
        "normalized": false, "special": special,
    })
}

/// `TemplateProcessing` adding bos/eos as the flags say (transformers' `update_post_processor`).
fn post_processor(meta: &Meta, add_bos: bool, add_eos: bool) -> Value {
    let tok = |id: Option<u32>| id.map(|i| (meta.tokens[i as usize].as_str(), i));
    let bos = tok(meta.special.bos).filter(|_| add_bos);
    let eos = tok(meta.special.eos).filter(|_| add_eos);
    let special = |content: &str, type_id: u32| json!({"SpecialToken": {"id": content, "type_id": type_id}});
    let seq = |id: &str, type_id: u32| json!({"Sequence": {"id": id, "type_id": type_id}});
    let mut single = vec![];
    let mut pair = vec![];
    if let Some((b, _)) = bos {
        single.push(special(b, 0));
    }
    single.push(seq("A", 0));
    if let Some((e, _)) = eos {
        single.push(special(e, 0));
    }
    pair.extend(single.iter().cloned());
    if let Some((b, _)) = bos {
        pair.push(special(b, 1));
    }
    pair.push(seq("B", 1));
    if let Some((e, _)) = eos {
        pair.push(special(e, 1));
    }
    let mut special_tokens = Map::new();
    for (content, id) in bos.into_iter().chain(eos) {
        special_tokens.insert(
            content.to_string(),
            json!({"id": content, "ids": [id], "tokens": [content]}),
        );
    }
    json!({"type": "TemplateProcessing", "single": single, "pair": pair, "special_tokens": special_tokens})
}

/// The added-token list: control tokens and the named special tokens as special, user-defined tokens as plain.
/// `in_vocab` says whether a token (as the file spells it) is a key of the model vocabulary.
fn added_tokens(meta: &Meta, control_ok: &dyn Fn(&str) -> bool, in_vocab: &dyn Fn(&str) -> bool) -> Vec<Value> {
    let mut added: BTreeMap<u32, (String, bool)> = BTreeMap::new();
    for (i, (tok, &ty)) in meta.tokens.iter().zip(&meta.token_types).enumerate() {
        if ty == TOKEN_TYPE_CONTROL && control_ok(tok) {
            added.insert(i as u32, (tok.clone(), true));
        }
    }
    let s = &meta.special;
    for id in [s.bos, s.eos, s.unk, s.pad].into_iter().flatten() {
        let tok = &meta.tokens[id as usize];
        if in_vocab(tok) {
            added.insert(id, (tok.clone(), true));
        }
    }
    for (i, (tok, &ty)) in meta.tokens.iter().zip(&meta.token_types).enumerate() {
        if ty == TOKEN_TYPE_USER_DEFINED && in_vocab(tok) {
            added.entry(i as u32).or_insert((tok.clone(), false));
        }
    }
    added
        .into_iter()
        .map(|(id, (tok, special))| added_token(id, &tok, special))
        .collect()
}

/// Byte-level BPE (`tokenizer.ggml.model = gpt2`).
fn gpt2_tokenizer(gguf: &GgufFile, meta: &Meta) -> Result<Value> {
    let table = bytes_to_unicode();
    let alphabet: HashSet<char> = table.iter().copied().collect();
    let spelled = |t: &str| t.chars().all(|c| alphabet.contains(&c));
    // Vocabulary: tokens spelled in the byte alphabet as they are, others respelled byte by byte; a later
    // duplicate wins, as in a Python dict.
    let mut vocab = Map::new();
    for (i, tok) in meta.tokens.iter().enumerate() {
        let key = if spelled(tok) {
            tok.clone()
        } else {
            tok.bytes().map(|b| table[b as usize]).collect()
        };
        vocab.insert(key, json!(i));
    }
    let merges = gguf.get_str_array("tokenizer.ggml.merges")?;
    let mut pairs = Vec::with_capacity(merges.len());
    for (i, m) in merges.iter().enumerate() {
        let parts: Vec<&str> = m.split(' ').collect();
        if parts.len() != 2 {
            return Err(Error::GgufMetadata {
                path: gguf.path().to_path_buf(),
                key: format!("tokenizer.ggml.merges[{i}]"),
                expected: "two tokens separated by one space".into(),
                found: format!("{m:?}"),
            });
        }
        pairs.push(json!([parts[0], parts[1]]));
    }
    let added = added_tokens(meta, &spelled, &|t| vocab.contains_key(t));
    let pre = gguf
        .metadata()
        .get("tokenizer.ggml.pre")
        .and_then(|v| v.as_str())
        .unwrap_or("");
    let pre_tokenizer = match split_regex(pre) {
        Some(re) => json!({"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": re}, "behavior": "Isolated", "invert": false},
            {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": false},
        ]}),
        None => json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true}),
    };
    Ok(json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": null,
        "pre_tokenizer": pre_tokenizer,
        "post_processor": post_processor(meta, meta.add_bos, meta.add_eos),
        "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
        "model": {
            "type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": "",
            "end_of_word_suffix": "", "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
            "vocab": vocab, "merges": pairs,
        },
    }))
}

/// BPE merges implied by a SentencePiece vocabulary and its scores (transformers' `generate_merges` with scores):
/// every split of a token into two tokens of the vocabulary is a merge ranked by the whole token's score
/// (best first, then longer left and right pieces first; ties keep vocabulary order).
fn merges_from_scores(tokens: &[String], scores: &[f32]) -> Vec<(String, String)> {
    // Python dicts: a token's id is its last occurrence, its place in iteration order its first (score: last).
    let mut id: HashMap<&str, usize> = HashMap::with_capacity(tokens.len());
    let mut order: Vec<&str> = Vec::with_capacity(tokens.len());
    let mut score: HashMap<&str, f32> = HashMap::with_capacity(tokens.len());
    for (i, (t, &s)) in tokens.iter().zip(scores).enumerate() {
        if id.insert(t, i).is_none() {
            order.push(t);
        }
        score.insert(t, s);
    }
    // (left, right, score, left chars, right chars)
    let mut merges: Vec<(&str, &str, f32, usize, usize)> = vec![];
    for merge in order {
        let s = score[merge];
        let mut local = vec![];
        for (n_left, (at, _)) in merge.char_indices().enumerate().skip(1) {
            let (l, r) = merge.split_at(at);
            if id.contains_key(l) && id.contains_key(r) {
                local.push((l, r, s, n_left, merge[at..].chars().count()));
            }
        }
        local.sort_by_key(|m| (id[m.0], id[m.1]));
        merges.extend(local);
    }
    // Descending by (score, len(left), len(right)); a stable sort keeps ties in order, as Python's reverse sort does.
    merges.sort_by(|a, b| b.2.total_cmp(&a.2).then(b.3.cmp(&a.3)).then(b.4.cmp(&a.4)));
    merges
        .into_iter()
        .map(|(l, r, ..)| (l.to_string(), r.to_string()))
        .collect()
}

/// SentencePiece-style BPE (`tokenizer.ggml.model = llama`), as transformers' `LlamaTokenizer`: byte fallback,
/// Metaspace pre-tokenizer adding a prefix space to the first word, merges recovered from the scores unless given.
fn llama_tokenizer(gguf: &GgufFile, meta: &Meta) -> Result<Value> {
    let mut vocab = Map::new();
    for (i, tok) in meta.tokens.iter().enumerate() {
        vocab.insert(tok.clone(), json!(i));
    }
    let merges: Vec<(String, String)> = if gguf.metadata().contains_key("tokenizer.ggml.merges") {
        let mut out = vec![];
        for (i, m) in gguf.get_str_array("tokenizer.ggml.merges")?.iter().enumerate() {
            let (l, r) = m
                .split_once(' ')
                .filter(|(_, r)| !r.contains(' '))
                .ok_or_else(|| Error::GgufMetadata {
                    path: gguf.path().to_path_buf(),
                    key: format!("tokenizer.ggml.merges[{i}]"),
                    expected: "two tokens separated by one space".into(),
                    found: format!("{m:?}"),
                })?;
            out.push((l.to_string(), r.to_string()));
        }
        out
    } else {
        let scores = gguf.get_f32_array("tokenizer.ggml.scores")?;
        if scores.len() != meta.tokens.len() {
            return Err(Error::GgufMetadata {
                path: gguf.path().to_path_buf(),
                key: "tokenizer.ggml.scores".into(),
                expected: format!("{} entries (one per token)", meta.tokens.len()),
                found: format!("{} entries", scores.len()),
            });
        }
        merges_from_scores(meta.tokens, &scores)
    };
    let pairs: Vec<Value> = merges.iter().map(|(l, r)| json!([l, r])).collect();
    let added = added_tokens(meta, &|_| true, &|t| vocab.contains_key(t));
    Ok(json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": null,
        "pre_tokenizer": {"type": "Metaspace", "replacement": "\u{2581}", "prepend_scheme": "first", "split": false},
        "post_processor": post_processor(meta, meta.add_bos, meta.add_eos),
        "decoder": {"type": "Sequence", "decoders": [
            {"type": "Replace", "pattern": {"String": "\u{2581}"}, "content": " "},
            {"type": "ByteFallback"},
            {"type": "Fuse"},
            {"type": "Strip", "content": " ", "start": 1, "stop": 0},
        ]},
        "model": {
            "type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
            "end_of_word_suffix": null, "fuse_unk": true, "byte_fallback": true, "ignore_merges": false,
            "vocab": vocab, "merges": pairs,
        },
    }))
}

/// Build both files and check `tokenizer.json` loads with the `tokenizers` crate.
pub fn build(gguf: &GgufFile) -> Result<TokenizerFiles> {
    let meta = read_meta(gguf)?;
    let tokenizer_json = match meta.model {
        "gpt2" => gpt2_tokenizer(gguf, &meta)?,
        "llama" => llama_tokenizer(gguf, &meta)?,
        other => {
            return Err(import_err(
                gguf,
                format!("tokenizer.ggml.model {other:?} is not supported (supported: \"gpt2\", \"llama\")"),
            ))
        }
    };
    let text = serde_json::to_string(&tokenizer_json).map_err(|e| import_err(gguf, format!("tokenizer.json: {e}")))?;
    text.parse::<tokenizers::Tokenizer>().map_err(|e| {
        import_err(
            gguf,
            format!("the tokenizer.json built from the metadata does not load: {e}"),
        )
    })?;

    let name = |id: Option<u32>| id.map(|i| meta.tokens[i as usize].clone());
    let mut config = Map::new();
    config.insert("add_bos_token".into(), json!(meta.add_bos));
    config.insert("add_eos_token".into(), json!(meta.add_eos));
    config.insert("bos_token".into(), json!(name(meta.special.bos)));
    config.insert("eos_token".into(), json!(name(meta.special.eos)));
    config.insert("unk_token".into(), json!(name(meta.special.unk)));
    config.insert("pad_token".into(), json!(name(meta.special.pad)));
    if let Some(t) = gguf.metadata().get("tokenizer.chat_template") {
        let t = t.as_str().ok_or_else(|| Error::GgufMetadata {
            path: gguf.path().to_path_buf(),
            key: "tokenizer.chat_template".into(),
            expected: "a string".into(),
            found: t.type_name().into(),
        })?;
        config.insert("chat_template".into(), json!(t));
    }
    config.insert("clean_up_tokenization_spaces".into(), json!(false));
    config.insert("tokenizer_class".into(), json!("PreTrainedTokenizerFast"));
    Ok(TokenizerFiles {
        tokenizer_json,
        tokenizer_config: Value::Object(config),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_table_is_gpt2s() {
        let t = bytes_to_unicode();
        assert_eq!(t[b'!' as usize], '!');
        assert_eq!(t[b' ' as usize], 'Ġ');
        assert_eq!(t[b'\n' as usize], 'Ċ');
        assert_eq!(t[0], 'Ā');
        let distinct: HashSet<char> = t.iter().copied().collect();
        assert_eq!(distinct.len(), 256);
    }

    #[test]
    fn split_regexes_compile() {
        for pre in ["llama3", "tekken", "qwen2", "qwen35", "gpt-4o"] {
            let re = split_regex(pre).unwrap();
            let j = json!({"type": "Split", "pattern": {"Regex": re}, "behavior": "Isolated", "invert": false});
            let p: std::result::Result<tokenizers::PreTokenizerWrapper, _> = serde_json::from_value(j);
            assert!(p.is_ok(), "{pre}: {p:?}");
        }
    }
}
