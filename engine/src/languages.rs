//! Language codes of the multilingual translation families, as their Hugging Face tokenizers spell them: the
//! source language's token goes where the tokenizer puts its default one (`NllbTokenizer`, `M2M100Tokenizer` and
//! `MBart50Tokenizer` put it first: `[lang] tokens </s>`; NLLB's legacy mode last: `tokens </s> [lang]`), and the
//! target language's token is forced as the first generated one (`forced_bos_token_id`).
//!
//! | family (`model_type`) | code | token |
//! | --- | --- | --- |
//! | mBART-50 (`mbart`) | `en_XX`, `de_DE` | the code |
//! | NLLB (`m2m_100`) | `eng_Latn`, `zho_Hans` | the code |
//! | M2M100 (`m2m_100`) | `en`, `ast` | `__en__`, `__ast__` |

use loaders::tokenizer::Tokenizer;

use crate::{Error, Result};

/// Languages listed in full in an error; past this, the first ones and the count.
const LISTED: usize = 12;

/// How a multilingual family spells its languages (see the module table).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum LanguageCodes {
    Mbart50,
    /// NLLB or M2M100: the form of the code tells which.
    M2m100,
}

/// Which end of a translation a language is for (named in errors).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Side {
    Source,
    Target,
}

impl Side {
    fn name(self) -> &'static str {
        match self {
            Side::Source => "source",
            Side::Target => "target",
        }
    }
}

/// `s` is `n` ASCII lowercase letters.
fn lower(s: &str, n: std::ops::RangeInclusive<usize>) -> bool {
    n.contains(&s.len()) && s.bytes().all(|b| b.is_ascii_lowercase())
}

/// `en_XX` (mBART-50).
fn is_mbart50(code: &str) -> bool {
    code.split_once('_')
        .is_some_and(|(l, r)| lower(l, 2..=2) && r.len() == 2 && r.bytes().all(|b| b.is_ascii_uppercase()))
}

/// `eng_Latn` (NLLB: an ISO 639-3 language, an ISO 15924 script).
fn is_nllb(code: &str) -> bool {
    code.split_once('_').is_some_and(|(l, r)| {
        let mut script = r.bytes();
        lower(l, 3..=3)
            && r.len() == 4
            && script.next().is_some_and(|b| b.is_ascii_uppercase())
            && script.all(|b| b.is_ascii_lowercase())
    })
}

/// `en`, `ast` (M2M100).
fn is_m2m100(code: &str) -> bool {
    lower(code, 2..=3)
}

impl LanguageCodes {
    /// The codes of a family (`model_type`), if it is a multilingual one.
    pub(crate) fn of(architecture: &str) -> Option<Self> {
        match architecture {
            "mbart" => Some(Self::Mbart50),
            "m2m_100" => Some(Self::M2m100),
            _ => None,
        }
    }

    /// The token that spells `code`, if `code` has one of this family's forms.
    fn token(self, code: &str) -> Option<String> {
        match self {
            Self::Mbart50 if is_mbart50(code) => Some(code.to_string()),
            Self::M2m100 if is_nllb(code) => Some(code.to_string()),
            Self::M2m100 if is_m2m100(code) => Some(format!("__{code}__")),
            _ => None,
        }
    }

    /// The code a token spells, if it is one of this family's language tokens.
    fn code(self, token: &str) -> Option<String> {
        let wrapped = token.strip_prefix("__").and_then(|t| t.strip_suffix("__"));
        match self {
            Self::Mbart50 if is_mbart50(token) => Some(token.to_string()),
            Self::M2m100 if is_nllb(token) => Some(token.to_string()),
            Self::M2m100 => wrapped.filter(|c| is_m2m100(c)).map(str::to_string),
            _ => None,
        }
    }

    fn forms(self) -> &'static str {
        match self {
            Self::Mbart50 => "mBART-50 codes look like en_XX",
            Self::M2m100 => "NLLB codes look like eng_Latn, M2M100 codes like en",
        }
    }

    /// Every language the tokenizer has a token for, in id order.
    pub(crate) fn languages(self, tokenizer: &dyn Tokenizer) -> Vec<String> {
        (0..tokenizer.vocab_size() as u32)
            .filter_map(|id| tokenizer.id_to_token(id).and_then(|t| self.code(&t)))
            .collect()
    }

    /// Whether `id` is one of this family's language tokens.
    pub(crate) fn is_language_token(self, tokenizer: &dyn Tokenizer, id: u32) -> bool {
        tokenizer.id_to_token(id).is_some_and(|t| self.code(&t).is_some())
    }

    /// The id of `code`'s token, or an error naming the code and the languages there are.
    pub(crate) fn id(self, tokenizer: &dyn Tokenizer, side: Side, code: &str) -> Result<u32> {
        if let Some(id) = self.token(code).and_then(|t| tokenizer.token_to_id(&t)) {
            return Ok(id);
        }
        let why = match self.token(code) {
            Some(t) => format!("the tokenizer has no token {t}"),
            None => format!("not a language code of this family ({})", self.forms()),
        };
        let langs = self.languages(tokenizer);
        let listed = if langs.len() > LISTED {
            format!("{}, ... ({} in all)", langs[..LISTED].join(", "), langs.len())
        } else {
            langs.join(", ")
        };
        Err(Error::Request(format!(
            "unknown {} language {code:?}: {why}; the model's languages: {listed} (all of them: `qkv translate \
             --model DIR --list-languages`, or Model::languages)",
            side.name()
        )))
    }
}

/// `ids` (a source as the tokenizer encoded it, with its special tokens) with the source language `lang`: in place
/// of the tokenizer's default language token, first or last, where `is_lang` finds it; else first.
pub(crate) fn with_source_language(mut ids: Vec<u32>, lang: u32, is_lang: impl Fn(u32) -> bool) -> Vec<u32> {
    if let Some(first) = ids.first_mut().filter(|id| is_lang(**id)) {
        *first = lang;
    } else if let Some(last) = ids.last_mut().filter(|id| is_lang(**id)) {
        *last = lang;
    } else {
        ids.insert(0, lang);
    }
    ids
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_forms() {
        let m = LanguageCodes::M2m100;
        assert_eq!(m.token("eng_Latn").as_deref(), Some("eng_Latn"));
        assert_eq!(m.token("en").as_deref(), Some("__en__"));
        assert_eq!(m.token("ast").as_deref(), Some("__ast__"));
        assert_eq!(m.token("en_XX"), None);
        assert_eq!(m.token("English"), None);
        assert_eq!(m.code("__fr__").as_deref(), Some("fr"));
        assert_eq!(m.code("zho_Hans").as_deref(), Some("zho_Hans"));
        assert_eq!(m.code("__mask__"), None, "four letters: not an M2M100 code");
        assert_eq!(m.code("<s>"), None);
        let b = LanguageCodes::Mbart50;
        assert_eq!(b.token("de_DE").as_deref(), Some("de_DE"));
        assert_eq!(b.token("eng_Latn"), None);
        assert_eq!(b.code("en_XX").as_deref(), Some("en_XX"));
        assert_eq!(b.code("__en__"), None);
        assert_eq!(LanguageCodes::of("t5"), None);
    }

    #[test]
    fn source_language_replaces_the_default_or_goes_first() {
        let is_lang = |id: u32| (4..7).contains(&id);
        assert_eq!(with_source_language(vec![4, 9, 2], 5, is_lang), [5, 9, 2]);
        assert_eq!(
            with_source_language(vec![9, 2, 4], 5, is_lang),
            [9, 2, 5],
            "legacy NLLB"
        );
        assert_eq!(with_source_language(vec![9, 2], 5, is_lang), [5, 9, 2]);
        assert_eq!(with_source_language(vec![], 5, is_lang), [5]);
    }
}
