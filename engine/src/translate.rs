//! Translation with an encoder-decoder model: sentences (or source ids) in, translations out, the sources
//! sorted by length into batches (so a batch pads little), each batch encoded once and searched, the results
//! back in input order. [`crate::Model::translate`] is the front door; this module is the driver behind it.
//!
//! Search defaults come from the model (see [`crate::Model::search_defaults`]); [`TranslateOptions`] overrides
//! them per call.

use crate::models::seq2seq::{Room, Seq2Seq};
use crate::search::{search, Hypothesis, SearchOptions};
use crate::text::{Text, TokenDecoder};
use crate::{Error, Result};

/// Per-call translation options; `None` keeps the model's default.
///
/// ```
/// use qkv::TranslateOptions;
///
/// // Greedy, at most 64 tokens per sentence, 8 sentences per batch.
/// let opts = TranslateOptions { beam_size: Some(1), max_length: Some(64), batch_size: 8, ..Default::default() };
/// assert_eq!(opts.num_hypotheses, 1);
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct TranslateOptions {
    /// 1 = greedy search.
    pub beam_size: Option<usize>,
    /// Most tokens generated per sentence, EOS included.
    pub max_length: Option<usize>,
    /// Fewest tokens generated before EOS is allowed.
    pub min_length: Option<usize>,
    pub length_penalty: Option<f32>,
    /// Hypotheses returned per sentence by [`crate::Model::translate_n_best`] (at most `beam_size`).
    pub num_hypotheses: usize,
    /// Sentences encoded and decoded together (sorted by length first, to limit padding).
    pub batch_size: usize,
    /// The language of the sentences (multilingual models: mBART-50 `en_XX`, NLLB `eng_Latn`, M2M100 `en`): its
    /// token replaces the tokenizer's default language token, where the family's tokenizer puts it (see
    /// [`crate::Model::languages`]). `None`: the tokenizer's default. Text only: source ids carry their own.
    pub source_lang: Option<String>,
    /// The language to translate into (multilingual models, codes as `source_lang`): its token is forced as the
    /// first generated one (`forced_bos_token_id`). `None`: the model's generation config.
    pub target_lang: Option<String>,
}

impl Default for TranslateOptions {
    fn default() -> Self {
        Self {
            beam_size: None,
            max_length: None,
            min_length: None,
            length_penalty: None,
            num_hypotheses: 1,
            batch_size: 32,
            source_lang: None,
            target_lang: None,
        }
    }
}

impl TranslateOptions {
    /// The search options of a call: `defaults` (the model's) overridden by these.
    pub(crate) fn search_options(&self, defaults: &SearchOptions) -> SearchOptions {
        let mut s = defaults.clone();
        if let Some(b) = self.beam_size {
            s.num_beams = b;
        }
        if let Some(m) = self.max_length {
            s.max_new_tokens = m;
        }
        if let Some(m) = self.min_length {
            s.min_new_tokens = m;
        }
        if let Some(lp) = self.length_penalty {
            s.length_penalty = lp;
        }
        s.num_return_sequences = self.num_hypotheses;
        s
    }
}

/// One translation ([`crate::Model::translate`]).
///
/// ```no_run
/// use qkv::{Model, TranslateOptions};
///
/// let model = Model::load("models/opus-mt-en-de")?;
/// let opts = TranslateOptions { beam_size: Some(4), num_hypotheses: 2, ..Default::default() };
/// for hyps in model.translate_n_best(&["Hello world"], &opts)? {
///     for t in hyps {
///         println!("{} ({} tokens, score {:.3})", t.text, t.tokens.len(), t.score);
///     }
/// }
/// # Ok::<(), qkv::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct Translation {
    /// Decoded text (special tokens skipped).
    pub text: String,
    /// Generated target ids (EOS included when emitted).
    pub tokens: Vec<u32>,
    /// Length-normalised log-probability (see [`crate::search`]).
    pub score: f32,
}

/// One translation call: the network, the search, how sources are batched and the cap on each batch's caches.
pub(crate) struct Job<'a> {
    pub(crate) net: &'a Seq2Seq,
    pub(crate) search: &'a SearchOptions,
    pub(crate) batch_size: usize,
    pub(crate) max_cache_bytes: usize,
}

impl Job<'_> {
    /// Search every source, `batch_size` sources at a time: up to `num_return_sequences` hypotheses per source,
    /// best first, in input order.
    pub(crate) fn ids(&self, sources: &[Vec<u32>]) -> Result<Vec<Vec<Hypothesis>>> {
        if self.batch_size == 0 {
            return Err(Error::Request("batch_size must be at least 1".into()));
        }
        // longest first: the first batch shows memory problems early
        let mut order: Vec<usize> = (0..sources.len()).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(sources[i].len()));
        let mut out: Vec<Option<Vec<Hypothesis>>> = vec![None; sources.len()];
        let start = self.net.config().decoder_start_token_id;
        for chunk in order.chunks(self.batch_size) {
            let batch: Vec<&[u32]> = chunk.iter().map(|&i| sources[i].as_slice()).collect();
            let room = Room {
                max_rows: batch.len().saturating_mul(self.search.num_beams),
                max_new_tokens: self.search.max_new_tokens,
            };
            let mut state = self.net.start(&batch, room, self.max_cache_bytes, Default::default())?;
            let hyps = search(self.net, &mut state, &vec![start; batch.len()], self.search)?;
            for (&i, h) in chunk.iter().zip(hyps) {
                out[i] = Some(h);
            }
        }
        Ok(out.into_iter().map(|h| h.unwrap_or_default()).collect())
    }

    /// Translate sentences (`sources`: as `text`'s tokenizer encoded them) and decode with it: the hypotheses of
    /// each, best first, in input order.
    pub(crate) fn texts(&self, text: &Text, sources: &[Vec<u32>]) -> Result<Vec<Vec<Translation>>> {
        self.ids(sources)?
            .into_iter()
            .map(|hyps| {
                hyps.into_iter()
                    .map(|h| {
                        Ok(Translation {
                            text: text.decode_text(&h.tokens)?,
                            tokens: h.tokens,
                            score: h.score,
                        })
                    })
                    .collect()
            })
            .collect()
    }
}
