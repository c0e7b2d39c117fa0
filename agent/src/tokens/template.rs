//! A package's own chat template (`chat_template` in `tokenizer_config.json`), rendered with
//! minijinja the way transformers and vLLM render it with Jinja2: `trim_blocks` and
//! `lstrip_blocks` on, Python string methods available (`.strip()`, `.split()`, ...),
//! `raise_exception` defined, `tojson` as Python's `json.dumps` (no HTML escaping, unlike
//! Jinja2's and minijinja's own filter, which transformers replaces too), the special tokens (`bos_token`, `eos_token`, ...) in the
//! context, `tools` and `documents` none, and `add_generation_prompt` true. `strftime_now`
//! is not defined, so templates that print today's date use their built-in default date
//! (the same number of tokens).

use std::collections::BTreeMap;

use minijinja::syntax::SyntaxConfig;
use minijinja::value::Kwargs;
use minijinja::{Environment, Error, ErrorKind, Value};
use serde_json::Value as Json;

use super::chat::ChatMessage;

/// The name the template is stored under; no extension, so nothing is auto-escaped.
const NAME: &str = "chat_template";

/// A compiled chat template with the package's special tokens.
pub(crate) struct HfChatTemplate {
    env: Environment<'static>,
    special_tokens: BTreeMap<String, String>,
}

impl std::fmt::Debug for HfChatTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HfChatTemplate")
            .field("special_tokens", &self.special_tokens)
            .finish_non_exhaustive()
    }
}

impl HfChatTemplate {
    /// The template of a parsed `tokenizer_config.json`: `None` when it has none, otherwise
    /// the compiled template or minijinja's error.
    pub(crate) fn from_tokenizer_config(config: &Json) -> Option<Result<Self, Error>> {
        let source = template_source(config.get("chat_template")?)?;
        Some(Self::compile(source, special_tokens(config)))
    }

    /// Compiles `source`.
    pub(crate) fn compile(
        source: String,
        special_tokens: BTreeMap<String, String>,
    ) -> Result<Self, Error> {
        let mut env = Environment::new();
        env.set_syntax(
            SyntaxConfig::builder()
                .trim_blocks(true)
                .lstrip_blocks(true)
                .build()?,
        );
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", raise_exception);
        env.add_filter("tojson", tojson);
        env.add_template_owned(NAME, source)?;
        Ok(Self {
            env,
            special_tokens,
        })
    }

    /// The prompt for `messages`, ending with the assistant's generation prompt.
    pub(crate) fn render(&self, messages: &[ChatMessage]) -> Result<String, Error> {
        let mut context: BTreeMap<&str, Value> = self
            .special_tokens
            .iter()
            .map(|(name, token)| (name.as_str(), Value::from(token.as_str())))
            .collect();
        context.insert("messages", messages.iter().map(message_value).collect());
        context.insert("add_generation_prompt", Value::from(true));
        context.insert("tools", Value::from(()));
        context.insert("documents", Value::from(()));
        self.env.get_template(NAME)?.render(Value::from(context))
    }
}

/// A message as the template sees it: `role`, `content`, and `name` only when there is one
/// (templates test `message.name is defined`).
fn message_value(message: &ChatMessage) -> Value {
    // Insertion order, as the request's JSON object has it (visible through `tojson`).
    let name = message.name.as_deref().map(|name| ("name", name));
    Value::from_pairs(
        [
            ("role", message.role.as_str()),
            ("content", message.content.as_str()),
        ]
        .into_iter()
        .chain(name),
    )
}

/// The template text: a string, or the `default` entry of a list of named templates.
fn template_source(value: &Json) -> Option<String> {
    match value {
        Json::String(source) => Some(source.clone()),
        Json::Array(named) => named
            .iter()
            .find(|entry| entry.get("name").and_then(Json::as_str) == Some("default"))
            .and_then(|entry| entry.get("template")?.as_str().map(str::to_owned)),
        _ => None,
    }
}

/// Every `*_token` entry of the config: a string, or an `AddedToken` object's `content`.
pub(crate) fn special_tokens(config: &Json) -> BTreeMap<String, String> {
    let Some(entries) = config.as_object() else {
        return BTreeMap::new();
    };
    entries
        .iter()
        .filter(|(name, _)| name.ends_with("_token"))
        .filter_map(|(name, value)| {
            let token = match value {
                Json::String(token) => token.as_str(),
                Json::Object(added) => added.get("content")?.as_str()?,
                _ => return None,
            };
            Some((name.clone(), token.to_owned()))
        })
        .collect()
}

/// `tojson`: minijinja's filter (Python's separators and indentation) without its HTML
/// escaping of `<`, `>`, `&` and `'`, which transformers' `json.dumps` does not do either.
fn tojson(value: &Value, indent: Option<Value>, kwargs: Kwargs) -> Result<Value, Error> {
    let html_safe = minijinja::filters::tojson(value, indent, kwargs)?;
    Ok(Value::from(unescape_html(&html_safe.to_string())))
}

/// Turns the `\u003c`, `\u003e`, `\u0026` and `\u0027` escapes of a JSON text back into
/// characters; other escapes (including an escaped backslash before `u003c`) stay.
fn unescape_html(json: &str) -> String {
    let mut out = String::with_capacity(json.len());
    let mut rest = json;
    while let Some(at) = rest.find('\\') {
        out.push_str(&rest[..at]);
        let escape = &rest[at..];
        let html = ["<", ">", "&", "'"]
            .into_iter()
            .zip(["\\u003c", "\\u003e", "\\u0026", "\\u0027"])
            .find(|(_, code)| escape.starts_with(code));
        let (text, len) = match html {
            Some((character, code)) => (character, code.len()),
            // Any other escape is two characters (`\\`, `\"`, `\n`) or six (`\u001f`); copying
            // the backslash and the next character keeps `\\` pairs together.
            None => (
                escape.get(..2).unwrap_or(escape),
                escape.get(..2).map_or(escape.len(), str::len),
            ),
        };
        out.push_str(text);
        rest = &escape[len..];
    }
    out.push_str(rest);
    out
}

/// `raise_exception(message)`, which Hugging Face templates call to reject a conversation.
fn raise_exception(message: String) -> Result<Value, Error> {
    Err(Error::new(ErrorKind::InvalidOperation, message))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn renders_with_special_tokens_and_python_methods() {
        let config = json!({
            "bos_token": {"__type": "AddedToken", "content": "<s>"},
            "eos_token": "</s>",
            "model_max_length": 10,
            "chat_template": "{{ bos_token }}{% for m in messages %}\n  {% if m.content.startswith('x') %}{{ m.content.split(' ')[-1] }}{% else %}{{ m.content.strip() }}{% endif %}\n{% endfor %}{% if add_generation_prompt %}>{% endif %}{% if tools %}T{% endif %}{{ messages[0].name is defined }}{{ messages[1] | tojson }}"
        });
        let template = HfChatTemplate::from_tokenizer_config(&config)
            .expect("has a template")
            .expect("compiles");
        let rendered = template
            .render(&[
                ChatMessage::new("user", "x y z"),
                ChatMessage::new("user", " a <b> & 'c' ").with_name("n"),
            ])
            .expect("renders");
        assert_eq!(
            rendered,
            r#"<s>za <b> & 'c'>False{"role": "user", "content": " a <b> & 'c' ", "name": "n"}"#
        );
    }

    #[test]
    fn tojson_is_pythons_json_dumps() {
        let config = json!({"chat_template": "{{ messages[0].content | tojson }}|{{ messages | tojson(indent=2) }}"});
        let template = HfChatTemplate::from_tokenizer_config(&config)
            .expect("has a template")
            .expect("compiles");
        let content = r#"<a href='x'>&amp; \u003c "q" 日本"#;
        let rendered = template
            .render(&[ChatMessage::new("user", content)])
            .expect("renders");
        let dumped = r#""<a href='x'>&amp; \\u003c \"q\" 日本""#;
        assert_eq!(
            rendered,
            format!(
                "{dumped}|[\n  {{\n    \"role\": \"user\",\n    \"content\": {dumped}\n  }}\n]"
            )
        );
    }

    #[test]
    fn named_templates_use_default_and_raise_exception_fails() {
        let config = json!({"chat_template": [
            {"name": "tool_use", "template": "tools"},
            {"name": "default", "template": "{{ raise_exception('roles must alternate') }}"}
        ]});
        let template = HfChatTemplate::from_tokenizer_config(&config)
            .expect("has a template")
            .expect("compiles");
        let error = template.render(&[]).expect_err("raises");
        assert!(
            error.to_string().contains("roles must alternate"),
            "{error}"
        );
        assert!(HfChatTemplate::from_tokenizer_config(&json!({})).is_none());
    }
}
