//! Properties of greedy and beam search on a deterministic toy decoder (the token-level agreement with
//! transformers and CTranslate2 is checked on real models in marian_*.rs and aren_ct2.rs).

use kernels::reference::log_softmax;
use qkv::search::{search, BeamStyle, EarlyStopping, Hypothesis, LogitsRules, SearchOptions};
use qkv::{Decoder, Result};

/// Max |reported score - score recomputed from the toy's log-probs|.
const SCORE_TOL: f32 = 1e-5;

const VOCAB: usize = 11;
const EOS: u32 = 0;

/// Logits are a hash of the whole history (start token included); EOS grows likelier with length.
struct Toy;

/// One row per sequence: its token history.
struct Rows(Vec<Vec<u32>>);

fn toy_logits(history: &[u32], out: &mut [f32]) {
    let mut h: u64 = 0xcbf29ce484222325;
    for &t in history {
        h = (h ^ t as u64).wrapping_mul(0x100000001b3);
    }
    for (v, o) in out.iter_mut().enumerate() {
        let mut z = h ^ (v as u64).wrapping_mul(0x9e3779b97f4a7c15);
        z = (z ^ (z >> 29)).wrapping_mul(0xbf58476d1ce4e5b9);
        z ^= z >> 32;
        *o = (z % 1000) as f32 / 250.0;
    }
    out[EOS as usize] += 0.4 * history.len() as f32 - 2.0;
}

impl Decoder for Toy {
    type Cache = Rows;

    fn vocab_size(&self) -> usize {
        VOCAB
    }

    fn step(&self, cache: &mut Rows, tokens: &[u32], n: usize, logits: &mut [f32]) -> Result<()> {
        assert_eq!(tokens.len(), cache.0.len() * n);
        for (r, row) in cache.0.iter_mut().enumerate() {
            row.extend_from_slice(&tokens[r * n..(r + 1) * n]);
            toy_logits(row, &mut logits[r * VOCAB..(r + 1) * VOCAB]);
        }
        Ok(())
    }

    fn reorder(&self, cache: &mut Rows, src: &[usize]) -> Result<()> {
        cache.0 = src.iter().map(|&s| cache.0[s].clone()).collect();
        Ok(())
    }

    fn cached_len(&self, cache: &Rows) -> usize {
        cache.0.first().map_or(0, |r| r.len())
    }
}

fn opts(num_beams: usize, style: BeamStyle) -> SearchOptions {
    SearchOptions {
        num_beams,
        max_new_tokens: 12,
        min_new_tokens: 2,
        length_penalty: 1.0,
        num_return_sequences: num_beams.min(3),
        style,
        rules: LogitsRules {
            eos: vec![EOS],
            bad_words: vec![vec![7], vec![3, 4]],
            forced_eos: None,
            renormalize: true,
            ..Default::default()
        },
    }
}

const STYLES: [BeamStyle; 4] = [
    BeamStyle::HuggingFace {
        early_stopping: EarlyStopping::Heuristic,
    },
    BeamStyle::HuggingFace {
        early_stopping: EarlyStopping::Eager,
    },
    BeamStyle::HuggingFace {
        early_stopping: EarlyStopping::Never,
    },
    BeamStyle::CTranslate2 { patience: 1.0 },
];

fn run(starts: &[u32], o: &SearchOptions) -> Vec<Vec<Hypothesis>> {
    let mut cache = Rows(starts.iter().map(|_| Vec::new()).collect());
    search(&Toy, &mut cache, starts, o).unwrap()
}

/// The score of `tokens` after `start` recomputed step by step with the same rules.
fn rescore(start: u32, tokens: &[u32], o: &SearchOptions) -> f32 {
    let mut hist = vec![start];
    let mut sum = 0.0f32;
    let mut row = [0.0f32; VOCAB];
    for (step, &t) in tokens.iter().enumerate() {
        toy_logits(&hist, &mut row);
        let ban = |row: &mut [f32]| {
            row[7] = f32::NEG_INFINITY;
            if hist.last() == Some(&3) {
                row[4] = f32::NEG_INFINITY;
            }
            if step < o.min_new_tokens {
                row[EOS as usize] = f32::NEG_INFINITY;
            }
        };
        match o.style {
            BeamStyle::HuggingFace { .. } => {
                log_softmax(&mut row);
                ban(&mut row);
                log_softmax(&mut row);
            }
            BeamStyle::CTranslate2 { .. } => {
                ban(&mut row);
                log_softmax(&mut row);
            }
        }
        sum += row[t as usize];
        hist.push(t);
    }
    sum / (tokens.len() as f32).powf(o.length_penalty)
}

#[test]
fn hypotheses_respect_the_rules_and_their_scores() {
    let starts = [1u32, 2, 5, 6, 8, 9, 10];
    for style in STYLES {
        for beams in [1, 2, 4] {
            let o = opts(beams, style);
            for (s, hyps) in starts.iter().zip(run(&starts, &o)) {
                assert!(!hyps.is_empty() && hyps.len() <= o.num_return_sequences);
                for w in hyps.windows(2) {
                    assert!(w[0].score >= w[1].score, "{style:?}: not sorted");
                }
                for h in &hyps {
                    let t = &h.tokens;
                    assert!(t.len() <= o.max_new_tokens);
                    assert!(
                        !t.contains(&7) && !t.windows(2).any(|w| w == [3, 4]),
                        "bad word in {t:?}"
                    );
                    assert!(!t[..o.min_new_tokens].contains(&EOS), "EOS before min length: {t:?}");
                    // EOS only at the end; a hypothesis without EOS has the maximum length
                    assert!(!t[..t.len() - 1].contains(&EOS));
                    assert!(t.last() == Some(&EOS) || t.len() == o.max_new_tokens);
                    let want = rescore(*s, t, &o);
                    assert!(
                        (h.score - want).abs() < SCORE_TOL,
                        "{style:?} beams {beams}: {} vs {want}",
                        h.score
                    );
                }
            }
        }
    }
}

#[test]
fn sources_are_independent_of_their_batch() {
    let starts = [1u32, 2, 5, 6, 8, 9, 10];
    for style in STYLES {
        for beams in [1, 3, 4] {
            let o = opts(beams, style);
            let batched = run(&starts, &o);
            for (i, &s) in starts.iter().enumerate() {
                assert_eq!(run(&[s], &o)[0], batched[i], "{style:?} beams {beams} source {i}");
            }
        }
    }
}

#[test]
fn forced_eos_ends_every_hypothesis_at_max_length() {
    let mut o = opts(3, STYLES[0]);
    o.rules.forced_eos = Some(EOS);
    o.max_new_tokens = 4;
    for hyps in run(&[1, 2, 5], &o) {
        for h in hyps {
            assert_eq!(h.tokens.last(), Some(&EOS), "{:?}", h.tokens);
        }
    }
}

#[test]
fn invalid_options_are_errors() {
    let mut cache = Rows(vec![Vec::new()]);
    for bad in [
        SearchOptions {
            num_beams: 0,
            ..opts(1, STYLES[0])
        },
        SearchOptions {
            num_return_sequences: 5,
            ..opts(4, STYLES[0])
        },
        SearchOptions {
            max_new_tokens: 0,
            ..opts(2, STYLES[3])
        },
        SearchOptions {
            rules: LogitsRules {
                eos: vec![VOCAB as u32],
                ..LogitsRules::default()
            },
            ..opts(2, STYLES[3])
        },
    ] {
        assert!(search(&Toy, &mut cache, &[1], &bad).is_err());
    }
}

/// A decoder whose every logit is NaN (broken weights).
struct NanToy;

impl Decoder for NanToy {
    type Cache = Rows;

    fn vocab_size(&self) -> usize {
        VOCAB
    }

    fn step(&self, cache: &mut Rows, tokens: &[u32], n: usize, logits: &mut [f32]) -> Result<()> {
        Toy.step(cache, tokens, n, logits)?;
        logits.fill(f32::NAN);
        Ok(())
    }

    fn reorder(&self, cache: &mut Rows, src: &[usize]) -> Result<()> {
        Toy.reorder(cache, src)
    }

    fn cached_len(&self, cache: &Rows) -> usize {
        Toy.cached_len(cache)
    }
}

#[test]
fn nan_scores_are_errors_or_values_never_panics() {
    for style in STYLES {
        let o = opts(3, style);
        let mut cache = Rows(vec![Vec::new(); 2]);
        // garbage in, but a value (hypotheses for every source) or an error out
        if let Ok(out) = search(&NanToy, &mut cache, &[1, 2], &o) {
            assert!(out.len() == 2 && out.iter().all(|h| !h.is_empty()), "{style:?}");
        }
        // without rules every candidate is NaN: no hypothesis at all is an error
        let bare = SearchOptions {
            min_new_tokens: 0,
            rules: LogitsRules {
                eos: vec![EOS],
                ..LogitsRules::default()
            },
            ..o.clone()
        };
        let mut cache = Rows(vec![Vec::new(); 2]);
        assert!(search(&NanToy, &mut cache, &[1, 2], &bare).is_err(), "{style:?}");
        let g = SearchOptions {
            num_return_sequences: 1,
            ..opts(1, style)
        };
        let mut cache = Rows(vec![Vec::new(); 2]);
        let out = search(&NanToy, &mut cache, &[1, 2], &g).unwrap();
        assert_eq!(out.len(), 2);
    }
}
