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
    fn missing_variable_is_an_error_naming_it_without_values() {
        let err = expand_env("${NOPE}", &env()).unwrap_err();
        assert!(err.contains("NOPE"), "{err}");
        assert!(expand_env("${SECRET", &env()).is_err());
        assert!(expand_env("${}", &env()).is_err());
        assert!(expand_env("${A B}", &env()).is_err());
    }
}
