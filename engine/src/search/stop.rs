//! Stop strings: generation ends at the first complete stop string, which is not returned, and text that may
//! still grow into one is held back until it is known.

/// What a stream may emit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Emit {
    /// What is known not to change: hold back text that may begin a stop string (or an incomplete character).
    Settled,
    /// Everything: the generation has ended.
    All,
}

/// What a push lets out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Pushed {
    /// Text that can be emitted; the generation goes on.
    Text(String),
    /// A stop string was reached: the text before it, and the generation ends.
    Stopped(String),
}

/// Text not yet emitted because it might begin a stop string.
#[derive(Debug, Default)]
pub(crate) struct StopFilter {
    stops: Vec<String>,
    pending: String,
}

impl StopFilter {
    /// A filter for `stops` (empty strings are ignored).
    pub(crate) fn new(stops: &[String]) -> Self {
        Self {
            stops: stops.iter().filter(|s| !s.is_empty()).cloned().collect(),
            pending: String::new(),
        }
    }

    /// Add `delta`; return what can be emitted, and whether a stop string was reached.
    pub(crate) fn push(&mut self, delta: &str, emit: Emit) -> Pushed {
        self.pending.push_str(delta);
        // The earliest complete stop string ends generation; text before it is emitted.
        if let Some(at) = self.stops.iter().filter_map(|s| self.pending.find(s.as_str())).min() {
            let out = self.pending[..at].to_string();
            self.pending.clear();
            return Pushed::Stopped(out);
        }
        // Hold back the longest tail that could still grow into a stop string.
        let hold = match emit {
            Emit::All => 0,
            Emit::Settled => (1..=self.pending.len())
                .filter(|&n| self.pending.is_char_boundary(self.pending.len() - n))
                .filter(|&n| {
                    let tail = &self.pending[self.pending.len() - n..];
                    self.stops.iter().any(|s| s.len() > n && s.starts_with(tail))
                })
                .max()
                .unwrap_or(0),
        };
        let out = self.pending[..self.pending.len() - hold].to_string();
        self.pending.drain(..self.pending.len() - hold);
        Pushed::Text(out)
    }
}
