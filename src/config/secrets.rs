//! Expands `${NAME}` references in config values from the environment. A missing variable is an
//! error that names the variable, never a silent empty string: an empty secret would let every
//! request through. Expanded values are never echoed back in errors.

use std::collections::HashMap;

/// Replaces every `${NAME}` in `text`. `$$` stands for a literal `$`.
pub fn expand_env(text: &str, env: &HashMap<String, String>) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(tail) = after.strip_prefix('{') {
            let end = tail
                .find('}')
                .ok_or_else(|| "unclosed \"${\" (write $$ for a literal $)".to_string())?;
            let name = &tail[..end];
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(format!("{name:?} is not an environment variable name"));
            }
            let value = env
                .get(name)
                .ok_or_else(|| format!("environment variable {name} is not set"))?;
            out.push_str(value);
            rest = &tail[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// The variable names `text` refers to (`${NAME}`), in order.
pub fn referenced_names(text: &str) -> Vec<&str> {
    let mut names = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find("${") {
        let tail = &rest[at + 2..];
        let Some(end) = tail.find('}') else { break };
        names.push(&tail[..end]);
        rest = &tail[end + 1..];
    }
    names
}

/// Puts `${NAME}` back wherever an expanded value appears in `message`, so an error about a
/// value that came from the environment never shows the value itself. Values shorter than three
/// characters are left alone: they are no secrets, and replacing them would garble the message.
pub fn scrub(message: &str, expanded: &[(String, String)]) -> String {
    let mut pairs: Vec<&(String, String)> = expanded.iter().filter(|(_, v)| v.len() >= 3).collect();
    pairs.sort_by_key(|(_, v)| std::cmp::Reverse(v.len()));
    let mut out = message.to_string();
    for (name, value) in pairs {
        out = out.replace(value.as_str(), &format!("${{{name}}}"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env() -> HashMap<String, String> {
        HashMap::from([("SECRET".to_string(), "s3cr3t".to_string())])
    }

    #[test]
    fn expands_braced_names_and_keeps_other_text() {
        assert_eq!(expand_env("a-${SECRET}-b", &env()).unwrap(), "a-s3cr3t-b");
        assert_eq!(expand_env("no vars", &env()).unwrap(), "no vars");
        assert_eq!(expand_env("cost $5", &env()).unwrap(), "cost $5");
        assert_eq!(expand_env("$${SECRET}", &env()).unwrap(), "${SECRET}");
    }

    #[test]
    fn scrub_puts_the_reference_back_in_place_of_the_value() {
        let expanded = vec![
            ("SECRET".to_string(), "s3cr3t".to_string()),
            ("X".to_string(), "1".to_string()),
        ];
        assert_eq!(
            scrub("\"s3cr3t:443\" is not an address (line 1)", &expanded),
            "\"${SECRET}:443\" is not an address (line 1)"
        );
        assert_eq!(referenced_names("a ${A} b ${B_2}"), ["A", "B_2"]);
    }

    #[test]
    fn missing_variable_is_an_error_naming_it_without_values() {
        let err = expand_env("${NOPE}", &env()).unwrap_err();
        assert!(err.contains("NOPE"), "{err}");
        assert!(expand_env("${SECRET", &env()).is_err());
        assert!(expand_env("${}", &env()).is_err());
        assert!(expand_env("${A B}", &env()).is_err());
    }
}
