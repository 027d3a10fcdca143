//! Chat templates: the Jinja template of `tokenizer_config.json`, rendered with `minijinja` as
//! `transformers`' `apply_chat_template(..., add_generation_prompt=True)` renders it.

use std::path::Path;

use minijinja::{context, Environment, Error as JinjaError, ErrorKind};
use serde::Serialize;

use crate::{Error, Result};

/// One message of a conversation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub(crate) struct Message {
    /// `system`, `user` or `assistant`.
    pub(crate) role: String,
    pub(crate) content: String,
}

impl Message {
    pub(crate) fn new(role: &str, content: &str) -> Self {
        Self {
            role: role.to_string(),
            content: content.to_string(),
        }
    }
}

/// Whether the assistant header that starts the model's answer is appended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum GenerationPrompt {
    Add,
    #[cfg_attr(not(test), allow(dead_code))]
    Omit,
}

/// The special-token strings templates refer to.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct SpecialTokens {
    pub(crate) bos_token: String,
    pub(crate) eos_token: String,
}

/// A compiled chat template.
#[derive(Debug)]
pub(crate) struct ChatTemplate {
    env: Environment<'static>,
}

/// `raise_exception(msg)`: templates call it to refuse a conversation.
fn raise_exception(msg: String) -> std::result::Result<String, JinjaError> {
    Err(JinjaError::new(ErrorKind::InvalidOperation, msg))
}

/// A template that cannot render this conversation (it raised, or it is broken at run time).
fn template_error(what: &str, e: JinjaError) -> Error {
    Error::Request(format!("chat template: {what}: {e:#}"))
}

impl ChatTemplate {
    /// Compile `source` (an error, not a panic, on bad syntax: [`Error::InvalidConfig`] naming `dir`, the model
    /// directory the template comes from).
    pub(crate) fn new(source: &str, dir: &Path) -> Result<Self> {
        let mut env = Environment::new();
        // Python string methods (`.strip()`, `.startswith()`, ...) that HF templates use.
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", raise_exception);
        // HF renders with trim_blocks and lstrip_blocks.
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.add_template_owned("chat", source.to_string())
            .map_err(|e| Error::InvalidConfig {
                file: dir.to_path_buf(),
                field: "chat_template".into(),
                reason: format!("cannot compile: {e:#}"),
            })?;
        Ok(Self { env })
    }

    /// Render `messages`.
    pub(crate) fn render(
        &self,
        messages: &[Message],
        special: &SpecialTokens,
        prompt: GenerationPrompt,
    ) -> Result<String> {
        let t = self
            .env
            .get_template("chat")
            .map_err(|e| template_error("missing", e))?;
        t.render(context! {
            messages => messages,
            add_generation_prompt => prompt == GenerationPrompt::Add,
            bos_token => special.bos_token,
            eos_token => special.eos_token,
        })
        .map_err(|e| template_error("cannot render", e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SmolLM2-Instruct's template (from its tokenizer_config.json).
    const CHATML: &str = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

    #[test]
    fn renders_chatml_with_generation_prompt() {
        let t = ChatTemplate::new(CHATML, Path::new("test")).unwrap();
        let out = t
            .render(
                &[Message::new("user", "Hi")],
                &SpecialTokens::default(),
                GenerationPrompt::Add,
            )
            .unwrap();
        assert_eq!(
            out,
            "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n\
             <|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
        );
    }

    #[test]
    fn python_methods_and_exceptions() {
        let t = ChatTemplate::new(
            "{% if messages[0]['role'] == 'bad' %}{{ raise_exception('no') }}{% endif %}{{ bos_token }}{{ messages[0]['content'].strip() }}",
            Path::new("test"),
        )
        .unwrap();
        let sp = SpecialTokens {
            bos_token: "<s>".into(),
            eos_token: "</s>".into(),
        };
        assert_eq!(
            t.render(&[Message::new("user", "  x ")], &sp, GenerationPrompt::Omit)
                .unwrap(),
            "<s>x"
        );
        let e = t
            .render(&[Message::new("bad", "")], &sp, GenerationPrompt::Omit)
            .unwrap_err();
        assert!(e.to_string().contains("no"), "{e}");
        assert!(ChatTemplate::new("{% if %}", Path::new("test")).is_err());
    }
}
