//! Search: how the next tokens are chosen from logits.
//!
//! | file | what |
//! | --- | --- |
//! | `beam.rs` | greedy and beam search over any [`Decoder`](crate::Decoder) ([`search`]), as transformers `generate` or CTranslate2 `translate_batch` run them ([`BeamStyle`]): what translation uses |
//! | `sampling.rs` | one token at a time: greedy or sampled with temperature, top-k, top-p, min-p and the repetition penalty ([`Sampler`]): what generation uses |
//! | `stop.rs` | stop strings: generation ends at the first one, and text that may begin one is held back |
//!
//! ```
//! use qkv::search::{SampleParams, Sampler, Strategy};
//!
//! let mut s = Sampler::new(Strategy::Sample(SampleParams { top_k: 2, seed: 1, ..Default::default() }), 1.0)?;
//! let id = s.sample(&qkv::Kernels::scalar(), &mut [0.0, 3.0, 2.5, -1.0], &[])?;
//! assert!(id == 1 || id == 2, "top-k 2 keeps the two most likely");
//! # Ok::<(), qkv::Error>(())
//! ```

mod beam;
mod sampling;
pub(crate) mod stop;

pub use beam::{search, BeamStyle, EarlyStopping, Hypothesis, LogitsRules, SearchOptions};
pub use sampling::{Rng, SampleParams, Sampler, Strategy};
