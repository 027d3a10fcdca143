//! The tokenizer as the engine uses it: text to ids, and ids to text with the special tokens skipped (what a
//! generation streams and a translation returns).

use loaders::tokenizer::Tokenizer;

use crate::Result;

/// Ids to text (special tokens skipped): what the generator needs of a tokenizer.
pub(crate) trait TokenDecoder: Send + Sync {
    fn decode_text(&self, ids: &[u32]) -> Result<String>;
}

/// A model directory's tokenizer.
pub(crate) struct Text(Box<dyn Tokenizer>);

impl Text {
    pub(crate) fn new(tokenizer: Box<dyn Tokenizer>) -> Self {
        Self(tokenizer)
    }

    pub(crate) fn tokenizer(&self) -> &dyn Tokenizer {
        self.0.as_ref()
    }

    pub(crate) fn encode(&self, text: &str) -> Result<Vec<u32>> {
        Ok(self.0.encode(text)?)
    }
}

impl TokenDecoder for Text {
    fn decode_text(&self, ids: &[u32]) -> Result<String> {
        Ok(self.0.decode(ids, /* skip_special_tokens */ true)?)
    }
}

/// A model directory without tokenizer files generates ids only: their text is empty.
pub(crate) struct NoText;

impl TokenDecoder for NoText {
    fn decode_text(&self, _ids: &[u32]) -> Result<String> {
        Ok(String::new())
    }
}
