//! Step-by-step decoding: a [`Session`] is a model and the state of a batch of sequences (KV caches, and for an
//! encoder-decoder model the encoded sources), fed a step at a time.
//!
//! [`crate::Model::generate`] and [`crate::Model::translate`] run on sessions; use one directly to score a
//! prompt (logits at every position, [`LogitsFor::All`]), to run your own search, or to drive many sequences
//! from one loop (a batch scheduler owns sessions; an attention recorder observes their steps).

use crate::decoder::Decoder;
use crate::generate::Feed;
use crate::models::{Network, State};
use crate::search::{search, Hypothesis, SearchOptions};
use crate::step::{LogitsFor, StepIo};
use crate::Result;

/// A batch of sequences being decoded by one model: made by [`crate::Model::session`] (decoder-only) or
/// [`crate::Model::encode`] (encoder-decoder). `Send`: a session can move to the thread that runs it.
///
/// ```
/// use qkv::{LoadOptions, LogitsFor, Model};
///
/// // A random GPT-2 of the test fixtures, on the scalar kernels.
/// let opts = LoadOptions { kernels: Some(qkv::Kernels::scalar()), ..Default::default() };
/// let model = Model::load_with(qkv::loaders::paths::fixture("gpt2-tiny"), &opts)?;
/// let vocab = model.info().vocab_size;
/// // Two sequences of up to 8 positions; a prefill of 3 tokens each, logits at every position.
/// let mut s = model.session(2, 8)?;
/// let mut all = vec![0.0; 2 * 3 * vocab];
/// s.step(&[1, 2, 3, 4, 5, 6], 3, LogitsFor::All, &mut all)?;
/// // One more token per row, logits of that position; then row 0 continues as a copy of row 1.
/// let mut last = vec![0.0; 2 * vocab];
/// s.step(&[7, 8], 1, LogitsFor::Last, &mut last)?;
/// s.reorder(&[1, 1])?;
/// assert_eq!((s.batch(), s.len(), s.capacity()), (2, 4, 8));
/// # Ok::<(), qkv::Error>(())
/// ```
pub struct Session<'m> {
    net: &'m Network,
    state: State,
}

/// The sizes, not the caches (which hold megabytes of floats).
impl std::fmt::Debug for Session<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("batch", &self.batch())
            .field("len", &self.len())
            .field("capacity", &self.capacity())
            .field("encoder", &self.encoder().map(|e| e.src_lens().to_vec()))
            .finish()
    }
}

impl<'m> Session<'m> {
    pub(crate) fn new(net: &'m Network, state: State) -> Self {
        Self { net, state }
    }

    /// Rows (sequences) decoded together.
    pub fn batch(&self) -> usize {
        match &self.state {
            State::DecoderOnly(c) => c.batch(),
            State::EncoderDecoder(s) => s.batch(),
        }
    }

    /// Positions already fed to every row (for an encoder-decoder model: decoder positions).
    pub fn len(&self) -> usize {
        self.net.cached_len(&self.state)
    }

    /// Whether nothing was fed yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The most positions a row can hold.
    pub fn capacity(&self) -> usize {
        match &self.state {
            State::DecoderOnly(c) => c.capacity(),
            State::EncoderDecoder(s) => s.capacity(),
        }
    }

    /// Bytes of the self-attention KV caches of every layer as allocated now: `capacity` positions per row, except
    /// in a layer whose every attention slides over a window (Mistral, Gemma's local layers), which keeps about two
    /// windows' worth however long the sequence.
    pub fn kv_bytes(&self) -> usize {
        match &self.state {
            State::DecoderOnly(c) => c.kv_bytes(),
            State::EncoderDecoder(s) => s.self_kv_bytes(),
        }
    }

    /// Width of a row of logits.
    pub fn vocab_size(&self) -> usize {
        self.net.vocab_size()
    }

    /// Feed `tokens` (`[batch, n]`, row-major: `n` new tokens for every row) after the positions already fed,
    /// and write the logits of the positions `which` asks for into `logits` (`[batch, vocab]` for
    /// [`LogitsFor::Last`], `[batch, n, vocab]` for [`LogitsFor::All`]). An error for a bad shape, an id outside
    /// the vocabulary or a step past the capacity leaves the session as it was.
    pub fn step(&mut self, tokens: &[u32], n: usize, which: LogitsFor, logits: &mut [f32]) -> Result<()> {
        let io = StepIo {
            tokens,
            n,
            which,
            logits,
            attn: Default::default(),
        };
        match (self.net, &mut self.state) {
            (Network::DecoderOnly(m), State::DecoderOnly(c)) => m.forward(c, io),
            (Network::EncoderDecoder { net, .. }, State::EncoderDecoder(s)) => net.forward(s, io),
            // the constructors pair a network with its own kind of state
            (_, state) => self.net.step(state, io.tokens, io.n, io.logits),
        }
    }

    /// Make row `i` a copy of old row `rows[i]`; the batch becomes `rows.len()` (at most the rows the session
    /// was made for). Beam search follows its surviving beams this way; a scheduler drops finished rows.
    pub fn reorder(&mut self, rows: &[usize]) -> Result<()> {
        self.net.reorder(&mut self.state, rows)
    }

    /// Greedy or beam search from here: row `i` starts with token `start[i]` (for a translation, the decoder
    /// start token). Returns, per row, up to `opts.num_return_sequences` hypotheses, best first.
    pub fn search(&mut self, start: &[u32], opts: &SearchOptions) -> Result<Vec<Vec<Hypothesis>>> {
        search(self.net, &mut self.state, start, opts)
    }

    /// The encoded sources of an encoder-decoder session (`None` for a decoder-only one).
    pub fn encoder(&self) -> Option<Encoded<'_>> {
        match &self.state {
            State::EncoderDecoder(s) => Some(Encoded { state: s }),
            State::DecoderOnly(_) => None,
        }
    }
}

/// What the encoder made of a session's sources ([`Session::encoder`]).
///
/// ```
/// use qkv::Model;
///
/// let model = Model::load(qkv::loaders::paths::fixture("marian-tiny"))?;
/// let mut s = model.encode(&[&[3, 4, 5, 0], &[6, 0]], 4, 8)?;
/// s.reorder(&[0, 0, 1, 1])?; // two beams per source
/// let e = s.encoder().unwrap();
/// assert_eq!((e.src_len(), e.src_lens(), e.row_sources()), (4, &[4, 2][..], &[0, 0, 1, 1][..]));
/// assert_eq!(e.output().len(), 2 * 4 * model.info().hidden_size);
/// # Ok::<(), qkv::Error>(())
/// ```
#[derive(Clone, Copy)]
pub struct Encoded<'s> {
    state: &'s crate::models::seq2seq::Seq2SeqState,
}

impl std::fmt::Debug for Encoded<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Encoded")
            .field("src_lens", &self.src_lens())
            .field("row_sources", &self.row_sources())
            .finish()
    }
}

impl Encoded<'_> {
    /// The encoder output `[n_sources, src_len, d_model]` (positions past a source's own length are padding).
    pub fn output(&self) -> &[f32] {
        self.state.encoder_output()
    }

    /// The padded source length (`src_len` of [`Encoded::output`]).
    pub fn src_len(&self) -> usize {
        self.state.src_len()
    }

    /// Each source's own length.
    pub fn src_lens(&self) -> &[usize] {
        self.state.src_lens()
    }

    /// The source each decoder row reads (rows of one source are its beams).
    pub fn row_sources(&self) -> &[usize] {
        self.state.row_sources()
    }

    /// Bytes of the cross-attention keys and values, projected once per source and shared by its beams.
    pub fn cross_kv_bytes(&self) -> usize {
        self.state.cross_kv_bytes()
    }
}

impl Feed for Session<'_> {
    fn vocab_size(&self) -> usize {
        Session::vocab_size(self)
    }

    fn feed(&mut self, tokens: &[u32], logits: &mut [f32]) -> Result<()> {
        self.step(tokens, tokens.len(), LogitsFor::Last, logits)
    }
}
