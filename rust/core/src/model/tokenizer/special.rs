//! Special-token ids, `add_*_token` flags and chat templates, found the way gguf-py's
//! `SpecialVocab` finds them (`_try_load_from_tokenizer_json`, `_try_load_from_config_json`),
//! its rules followed step by step: a model converted by ryzq gets the same keys as one
//! converted by llama.cpp.
//!
//! One departure: the chat template is read from `chat_template.jinja` / `chat_template.json`
//! even without a `tokenizer_config.json`, where `SpecialVocab` returns before reading it;
//! transformers uses those files either way.

use std::path::Path;

use serde_json::{Map, Value};

use super::{SpecialToken, TOKENIZER_JSON};
use crate::error::{Error, Result};
use crate::source::folder::{CONFIG, MAX_JSON_BYTES, read_json};

pub(super) struct SpecialParts {
    pub ids: Vec<(SpecialToken, u32)>,
    pub add_bos: Option<bool>,
    pub add_eos: Option<bool>,
    pub add_sep: Option<bool>,
    pub chat_template: Option<String>,
    pub named_chat_templates: Vec<(String, String)>,
}

/// `SpecialVocab`'s special-token types. `cls` has no GGUF key but takes part in the rules.
const TYPES: [&str; 7] = ["bos", "eos", "unk", "sep", "pad", "cls", "mask"];

/// Python's truthiness of a JSON value: `None`, `null`, false, 0, "" and empty containers are
/// false.
fn truthy(value: Option<&Value>) -> bool {
    match value {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(Value::Number(n)) => n.as_f64() != Some(0.0),
        Some(Value::String(s)) => !s.is_empty(),
        Some(Value::Array(a)) => !a.is_empty(),
        Some(Value::Object(o)) => !o.is_empty(),
    }
}

/// `dict.get(key)`: a missing key and `null` are both `None`.
fn get(map: Option<&Map<String, Value>>, key: &str) -> Option<Value> {
    map.and_then(|m| m.get(key))
        .filter(|v| !v.is_null())
        .cloned()
}

/// `item.get('SpecialToken', {}).get('id')` of a `TemplateProcessing` item.
fn special_token_of(item: Option<&Value>) -> Option<Value> {
    item.and_then(|i| i.get("SpecialToken"))
        .and_then(|s| s.get("id"))
        .filter(|v| !v.is_null())
        .cloned()
}

/// `item.get('Sequence', {}).get('id')`.
fn sequence_of(item: Option<&Value>) -> Option<&str> {
    item.and_then(|i| i.get("Sequence"))
        .and_then(|s| s.get("id"))
        .and_then(Value::as_str)
}

/// Python's `list[start:stop]` for `start >= 0` and `stop` absent or negative.
fn slice(items: &[Value], start: usize, stop_from_end: Option<usize>) -> &[Value] {
    let stop = items.len().saturating_sub(stop_from_end.unwrap_or(0));
    if start >= stop {
        &[]
    } else {
        &items[start..stop]
    }
}

struct Found<'a> {
    n_vocab: usize,
    types: Vec<&'static str>,
    ids: Vec<(&'static str, u32)>,
    add: Vec<(&'static str, bool)>,
    added_tokens: &'a [Value],
}

impl Found<'_> {
    fn set_add(&mut self, typ: &'static str, value: bool) {
        match self.add.iter_mut().find(|(t, _)| *t == typ) {
            Some(slot) => slot.1 = value,
            None => self.add.push((typ, value)),
        }
    }

    /// `_set_special_token`: the first integer id found for a type wins; ids beyond the
    /// embedding are skipped, so a later source can give a usable one.
    fn set_id(&mut self, typ: &'static str, id: Option<&Value>, named_in: &Path) -> Result<()> {
        let Some(Value::Number(id)) = id else {
            return Ok(());
        };
        if let Some(negative) = id.as_i64().filter(|&i| i < 0) {
            return Err(
                Error::Format(format!("{typ} token id {negative} is negative"))
                    .in_file(named_in, None),
            );
        }
        let Some(id) = id.as_u64() else {
            return Ok(());
        };
        if id < self.n_vocab as u64 && !self.ids.iter().any(|(t, _)| *t == typ) {
            self.ids.push((typ, id as u32));
        }
        Ok(())
    }

    /// The first added token whose content is `content`.
    fn added_token_id(&self, content: &str) -> Option<&Value> {
        self.added_tokens
            .iter()
            .find(|t| t.get("content").and_then(Value::as_str) == Some(content))
            .and_then(|t| t.get("id"))
    }
}

pub(super) fn read(
    dir: &Path,
    tokenizer_json: Option<(&Map<String, Value>, &Path)>,
    tokenizer_config: Option<(&Map<String, Value>, &Path)>,
    config: &Map<String, Value>,
    n_vocab: usize,
) -> Result<SpecialParts> {
    let added_tokens = tokenizer_json
        .and_then(|(t, _)| t.get("added_tokens"))
        .and_then(Value::as_array)
        .map_or(&[][..], Vec::as_slice);
    let mut found = Found {
        n_vocab,
        types: TYPES.to_vec(),
        ids: Vec::new(),
        add: Vec::new(),
        added_tokens,
    };
    // The post-processor rules write into the tokenizer config, as SpecialVocab does.
    let mut tc: Option<Map<String, Value>> = tokenizer_config.map(|(c, _)| c.clone());
    let has_tc = tc.as_ref().is_some_and(|c| !c.is_empty());

    if let Some((tokenizer, _)) = tokenizer_json
        && !tokenizer.is_empty()
    {
        post_processor_rules(tokenizer, &mut tc, has_tc, &mut found);
    }

    let (chat_template, named_chat_templates) = chat_templates(dir, tc.as_ref())?;

    if has_tc {
        let tc = tc.as_ref().expect("has_tc");
        let tokenizer_path =
            tokenizer_json.map_or_else(|| dir.join(TOKENIZER_JSON), |(_, p)| p.to_path_buf());
        for typ in found.types.clone() {
            if let Some(Value::Bool(add)) = tc.get(&format!("add_{typ}_token")) {
                found.set_add(typ, *add);
            }
            let content = match tc.get(&format!("{typ}_token")) {
                Some(Value::String(s)) => s.as_str(),
                Some(Value::Object(o)) => match o.get("content") {
                    Some(Value::String(s)) => s.as_str(),
                    _ => continue,
                },
                _ => continue,
            };
            let id = found.added_token_id(content).cloned();
            found.set_id(typ, id.as_ref(), &tokenizer_path)?;
        }
    }

    let config_path = dir.join(CONFIG);
    let text_config = config.get("text_config").and_then(Value::as_object);
    for typ in found.types.clone() {
        let key = format!("{typ}_token_id");
        let id = config
            .get(&key)
            .filter(|v| !v.is_null())
            .or_else(|| text_config.and_then(|t| t.get(&key)));
        found.set_id(typ, id, &config_path)?;
    }

    let add = |typ: &str| found.add.iter().find(|(t, _)| *t == typ).map(|&(_, v)| v);
    Ok(SpecialParts {
        ids: found
            .ids
            .iter()
            .filter_map(|&(typ, id)| SpecialToken::from_name(typ).map(|t| (t, id)))
            .collect(),
        add_bos: add("bos"),
        add_eos: add("eos"),
        add_sep: add("sep"),
        chat_template,
        named_chat_templates,
    })
}

/// What `RobertaProcessing` and `TemplateProcessing` post-processors say about BOS, EOS and
/// SEP, SpecialVocab's crude reading of them ("only works with simple templates") kept as it
/// is, EOT/EOM discovery included.
/// `tokenizer_config[key] = value`, `None` as `null`.
fn write(tc: &mut Option<Map<String, Value>>, key: &str, value: Option<&Value>) {
    if let Some(tc) = tc {
        tc.insert(key.to_owned(), value.cloned().unwrap_or(Value::Null));
    }
}

fn post_processor_rules(
    tokenizer: &Map<String, Value>,
    tc: &mut Option<Map<String, Value>>,
    has_tc: bool,
    found: &mut Found<'_>,
) {
    let mut bos = get(tc.as_ref(), "bos_token");
    let mut cls = get(tc.as_ref(), "cls_token");
    let mut eos = get(tc.as_ref(), "eos_token");
    let mut sep = get(tc.as_ref(), "sep_token");
    if !truthy(bos.as_ref()) && truthy(cls.as_ref()) && has_tc {
        bos.clone_from(&cls);
        write(tc, "bos_token", bos.as_ref());
    }
    if !truthy(eos.as_ref()) && truthy(sep.as_ref()) && has_tc {
        eos.clone_from(&sep);
        write(tc, "eos_token", eos.as_ref());
    }
    let Some(post) = tokenizer.get("post_processor").filter(|p| truthy(Some(p))) else {
        return;
    };
    let processors: Vec<&Value> = match post.get("processors") {
        None => vec![post],
        Some(Value::Array(list)) => list.iter().collect(),
        Some(_) => Vec::new(),
    };
    for processor in processors {
        match processor.get("type").and_then(Value::as_str) {
            Some("RobertaProcessing") => {
                found.set_add("bos", true);
                found.set_add("eos", true);
                found.set_add("sep", true);
                if !truthy(cls.as_ref()) && has_tc {
                    cls = match processor.get("cls") {
                        Some(pair) => pair.get(0).filter(|v| !v.is_null()).cloned(),
                        None => bos.clone(),
                    };
                    write(tc, "cls_token", cls.as_ref());
                }
                if !truthy(sep.as_ref()) && has_tc {
                    sep = match processor.get("sep") {
                        Some(pair) => pair.get(0).filter(|v| !v.is_null()).cloned(),
                        None => eos.clone(),
                    };
                    write(tc, "sep_token", sep.as_ref());
                }
            }
            Some("TemplateProcessing") => {
                let list = |key: &str| {
                    processor
                        .get(key)
                        .and_then(Value::as_array)
                        .map_or(&[][..], Vec::as_slice)
                };
                let (single, pair) = (list("single"), list("pair"));
                let mut first = None;
                let mut last = None;
                if single.len() > 1 {
                    first = special_token_of(single.first());
                    if truthy(first.as_ref()) {
                        if !has_tc {
                            bos.clone_from(&first);
                        }
                        found.set_add("bos", first == bos || first == cls);
                    }
                    last = special_token_of(single.last());
                    if truthy(last.as_ref()) {
                        if !has_tc {
                            eos.clone_from(&last);
                        } else if last != eos {
                            // The template ends with another token than eos_token: that one
                            // becomes EOS, and eos_token the end of turn (or of message).
                            if !found.types.contains(&"eot") {
                                found.types.push("eot");
                                write(tc, "eot_token", eos.as_ref());
                            } else if !found.types.contains(&"eom") {
                                found.types.push("eom");
                                write(tc, "eom_token", eos.as_ref());
                            }
                            eos.clone_from(&last);
                            write(tc, "eos_token", eos.as_ref());
                        }
                        found.set_add("eos", last == eos);
                    }
                }
                if pair.is_empty() {
                    continue;
                }
                let start =
                    usize::from(truthy(first.as_ref()) && special_token_of(pair.first()) == first);
                let stop =
                    (truthy(last.as_ref()) && special_token_of(pair.last()) == last).then_some(1);
                let pair = slice(pair, start, stop);
                if pair.is_empty()
                    || sequence_of(pair.first()) != Some("A")
                    || sequence_of(pair.last()) != Some("B")
                {
                    continue;
                }
                // A [sep] [eos] B
                let middle = slice(pair, 1, Some(1));
                if middle.is_empty() {
                    continue;
                }
                let mut add_sep = false;
                let entry = special_token_of(middle.first());
                if truthy(entry.as_ref())
                    && (entry == sep || entry == eos)
                    && !truthy(last.as_ref())
                {
                    add_sep = true;
                }
                if middle.len() == 2 {
                    let entry = special_token_of(middle.get(1));
                    if truthy(entry.as_ref()) && (entry == sep || entry == eos) {
                        add_sep = true;
                    }
                }
                found.set_add("sep", add_sep);
                if add_sep && !truthy(sep.as_ref()) && has_tc {
                    write(tc, "sep_token", eos.as_ref());
                }
            }
            _ => {}
        }
    }
}

/// The default chat template and the named others.
type ChatTemplates = (Option<String>, Vec<(String, String)>);

/// The chat template: `tokenizer_config.json`'s `chat_template` (a string, or a list of
/// `{name, template}`), else `chat_template.jinja` (with `additional_chat_templates/*.jinja`
/// as named ones), else `chat_template.json`'s `chat_template`. Returns the default template
/// and the named others, as gguf-py's `add_chat_template` writes them.
fn chat_templates(dir: &Path, tc: Option<&Map<String, Value>>) -> Result<ChatTemplates> {
    let template = match tc.and_then(|c| c.get("chat_template")) {
        Some(given) => given.clone(),
        None => template_files(dir)?,
    };
    let templates = match template {
        Value::String(s) => return Ok((Some(s), Vec::new())),
        Value::Array(list) => list,
        // Null is no template; any other type SpecialVocab ignores.
        _ => return Ok((None, Vec::new())),
    };
    let mut default = None;
    let mut named: Vec<(String, String)> = Vec::new();
    for choice in &templates {
        let name: String = choice
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect();
        let Some(text) = choice.get("template").and_then(Value::as_str) else {
            continue;
        };
        if name.is_empty() {
            continue;
        }
        if name == "default" {
            default = Some(text.to_owned());
        } else if !named.iter().any(|(n, _)| *n == name) {
            named.push((name, text.to_owned()));
        }
    }
    Ok((default, named))
}

/// The template of `chat_template.jinja` or `chat_template.json`, as a JSON value.
fn template_files(dir: &Path) -> Result<Value> {
    let jinja = dir.join("chat_template.jinja");
    let json = dir.join("chat_template.json");
    if jinja.is_file() {
        let default = read_text(&jinja)?;
        let extra_dir = dir.join("additional_chat_templates");
        let mut extra: Vec<std::path::PathBuf> = match std::fs::read_dir(&extra_dir) {
            Ok(entries) => entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.is_file() && p.extension().is_some_and(|x| x == "jinja"))
                .collect(),
            Err(_) => Vec::new(),
        };
        if extra.is_empty() {
            return Ok(Value::String(default));
        }
        extra.sort();
        let mut list = vec![serde_json::json!({"name": "default", "template": default})];
        for path in extra {
            let name = path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            list.push(serde_json::json!({"name": name, "template": read_text(&path)?}));
        }
        return Ok(Value::Array(list));
    }
    if json.is_file() {
        return match read_json(&json, "a chat template file")? {
            Value::Object(o) => Ok(o.get("chat_template").cloned().unwrap_or(Value::Null)),
            _ => Err(
                Error::Format("a chat template file that is not a JSON object".into())
                    .in_file(&json, None),
            ),
        };
    }
    Ok(Value::Null)
}

fn read_text(path: &Path) -> Result<String> {
    let size = std::fs::metadata(path)
        .map_err(|e| Error::io(path, e))?
        .len();
    if size > MAX_JSON_BYTES {
        return Err(Error::Format(format!(
            "a chat template of {size} bytes, over the {MAX_JSON_BYTES} bytes ryzq reads"
        ))
        .in_file(path, None));
    }
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    String::from_utf8(bytes).map_err(|e| {
        Error::Format(format!("a chat template that is not UTF-8 ({e})")).in_file(path, None)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn truthiness_is_pythons() {
        for falsy in [
            json!(null),
            json!(false),
            json!(0),
            json!(""),
            json!([]),
            json!({}),
        ] {
            assert!(!truthy(Some(&falsy)), "{falsy}");
        }
        for truthy_value in [
            json!(true),
            json!(1),
            json!("a"),
            json!([0]),
            json!({"a": 0}),
        ] {
            assert!(truthy(Some(&truthy_value)), "{truthy_value}");
        }
        assert!(!truthy(None));
    }

    #[test]
    fn slices_are_pythons() {
        let items: Vec<Value> = (0..4).map(|i| json!(i)).collect();
        assert_eq!(slice(&items, 1, None), &items[1..]);
        assert_eq!(slice(&items, 1, Some(1)), &items[1..3]);
        assert!(slice(&items[..1], 1, Some(1)).is_empty());
        assert!(slice(&items[..2], 1, Some(1)).is_empty());
    }
}
