//! What one step of a session is: its shape, which positions get logits, and its input and output.

use crate::attention::AttnPath;
use crate::{Error, Result};

/// Which positions of a step get logits (see [`crate::Session::step`]).
///
/// ```
/// use qkv::{LogitsFor, Model};
///
/// let model = Model::load(qkv::loaders::paths::fixture("gpt2-tiny"))?;
/// let vocab = model.info().vocab_size;
/// let mut s = model.session(1, 8)?;
/// let mut every = vec![0.0; 4 * vocab]; // [n, vocab]: score a whole prompt
/// s.step(&[1, 2, 3, 4], 4, LogitsFor::All, &mut every)?;
/// let mut last = vec![0.0; vocab]; // [vocab]: what the next token needs
/// s.step(&[5], 1, LogitsFor::Last, &mut last)?;
/// # Ok::<(), qkv::Error>(())
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LogitsFor {
    /// The last position of each row: `[batch, vocab]` (what decoding needs).
    #[default]
    Last,
    /// Every position fed: `[batch, n, vocab]` (scoring a prompt, teacher forcing).
    All,
}

impl LogitsFor {
    /// Rows of logits a step of `shape` writes.
    pub(crate) fn rows(self, shape: StepShape) -> usize {
        match self {
            LogitsFor::Last => shape.batch,
            LogitsFor::All => shape.rows(),
        }
    }
}

/// The shape of one step: `batch` rows, `n` new positions each (row-major `[batch, n]` tokens).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct StepShape {
    pub(crate) batch: usize,
    pub(crate) n: usize,
}

impl StepShape {
    /// Positions fed in the step, every row together.
    pub(crate) fn rows(self) -> usize {
        self.batch * self.n
    }
}

/// One step's input and output: `tokens` (`[batch, n]`, row-major) in, the logits of the positions `which` asks
/// for out (`[which.rows(shape), vocab]`). Every network's forward takes one, so what a step may carry next (per-row
/// positions for a batch scheduler's ragged rows, an attention recorder) is added here once.
#[derive(Debug)]
pub(crate) struct StepIo<'a> {
    pub(crate) tokens: &'a [u32],
    pub(crate) n: usize,
    pub(crate) which: LogitsFor,
    pub(crate) logits: &'a mut [f32],
    /// The fused attention kernels, or the recording path.
    pub(crate) attn: AttnPath<'a>,
}

impl<'a> StepIo<'a> {
    /// `tokens` in, the logits of each row's last position out (what [`crate::Decoder::step`] asks for).
    pub(crate) fn last(tokens: &'a [u32], n: usize, logits: &'a mut [f32]) -> Self {
        Self {
            tokens,
            n,
            which: LogitsFor::Last,
            logits,
            attn: AttnPath::Fused,
        }
    }

    /// The shape of this step over `batch` rows, checked against the tokens and the logits buffer (`vocab` wide).
    pub(crate) fn shape(&self, batch: usize, vocab: usize) -> Result<StepShape> {
        let (n, tokens) = (self.n, self.tokens.len());
        if batch == 0 || n == 0 || tokens != batch * n {
            return Err(Error::Request(format!(
                "step: {tokens} tokens given, expected batch {batch} x n {n} (both > 0)"
            )));
        }
        let shape = StepShape { batch, n };
        let rows = self.which.rows(shape);
        if self.logits.len() != rows * vocab {
            return Err(Error::Request(format!(
                "step: logits buffer holds {} values, expected {rows} x vocab {vocab}",
                self.logits.len()
            )));
        }
        Ok(shape)
    }
}

/// One sequence of a ragged step ([`crate::Scheduler`]): `n` new tokens for cache row `row`, at `start` in the
/// step's flat `[total, ..]` rows, after the `pos0` positions that row already holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Span {
    pub(crate) row: usize,
    pub(crate) start: usize,
    pub(crate) n: usize,
    pub(crate) pos0: usize,
}
