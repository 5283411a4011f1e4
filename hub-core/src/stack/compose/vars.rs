//! Compose variables: `${VAR}` interpolation with compose's operators, and `.env` / `env_file`
//! files.

use std::collections::BTreeMap;

/// Where interpolation looks names up, and what it noticed on the way.
pub(super) struct Variables {
    values: BTreeMap<String, String>,
    /// Names used but not set: compose substitutes an empty string and warns.
    pub(super) unset: Vec<String>,
}

impl Variables {
    pub(super) fn new(values: BTreeMap<String, String>) -> Self {
        Variables {
            values,
            unset: Vec::new(),
        }
    }

    pub(super) fn set(&mut self, name: String, value: String) {
        self.values.insert(name, value);
    }

    pub(super) fn get(&self, name: &str) -> Option<&str> {
        self.values.get(name).map(String::as_str)
    }

    /// Fills `$VAR`, `${VAR}`, `${VAR:-default}`, `${VAR-default}`, `${VAR:?error}`,
    /// `${VAR?error}`, `${VAR:+other}` and `${VAR+other}`; `$$` is a literal `$`. The `:` forms
    /// treat an empty value like an unset one. Defaults may themselves hold variables.
    pub(super) fn interpolate(&mut self, text: &str) -> Result<String, String> {
        if !text.contains('$') {
            return Ok(text.to_owned());
        }
        let mut out = String::with_capacity(text.len());
        let mut rest = text;
        while let Some(at) = rest.find('$') {
            out.push_str(&rest[..at]);
            let after = &rest[at + 1..];
            if let Some(tail) = after.strip_prefix('$') {
                out.push('$');
                rest = tail;
            } else if let Some(inner) = after.strip_prefix('{') {
                let end =
                    closing_brace(inner).ok_or_else(|| format!("unclosed '${{' in '{text}'"))?;
                out.push_str(&self.expression(&inner[..end], text)?);
                rest = &inner[end + 1..];
            } else {
                let len = name_length(after);
                if len == 0 {
                    // A `$` that starts no name stays as written.
                    out.push('$');
                    rest = after;
                } else {
                    out.push_str(&self.lookup(&after[..len]));
                    rest = &after[len..];
                }
            }
        }
        out.push_str(rest);
        Ok(out)
    }

    fn lookup(&mut self, name: &str) -> String {
        match self.values.get(name) {
            Some(value) => value.clone(),
            None => {
                if !self.unset.iter().any(|n| n == name) {
                    self.unset.push(name.to_owned());
                }
                String::new()
            }
        }
    }

    /// One `${…}` body.
    fn expression(&mut self, body: &str, text: &str) -> Result<String, String> {
        let len = name_length(body);
        if len == 0 {
            return Err(format!(
                "'${{{body}}}' in '{text}' does not start with a variable name"
            ));
        }
        let (name, operator) = body.split_at(len);
        let value = self.values.get(name).cloned();
        let set = value.is_some();
        let non_empty = value.as_deref().is_some_and(|v| !v.is_empty());
        let (op, argument) = match operator {
            "" => return Ok(self.lookup(name)),
            _ if operator.starts_with(":-") => (":-", &operator[2..]),
            _ if operator.starts_with(":?") => (":?", &operator[2..]),
            _ if operator.starts_with(":+") => (":+", &operator[2..]),
            _ if operator.starts_with('-') => ("-", &operator[1..]),
            _ if operator.starts_with('?') => ("?", &operator[1..]),
            _ if operator.starts_with('+') => ("+", &operator[1..]),
            _ => {
                return Err(format!(
                    "'${{{body}}}' in '{text}': expected '}}' or one of :- - :? ? :+ + after '{name}'"
                ));
            }
        };
        match op {
            ":-" if !non_empty => self.interpolate(argument),
            "-" if !set => self.interpolate(argument),
            ":?" if !non_empty => Err(required(name, argument, self)?),
            "?" if !set => Err(required(name, argument, self)?),
            ":+" if non_empty => self.interpolate(argument),
            "+" if set => self.interpolate(argument),
            ":+" | "+" => Ok(String::new()),
            _ => Ok(value.unwrap_or_default()),
        }
    }
}

/// The error of a `${VAR:?message}` whose variable is missing.
fn required(name: &str, message: &str, vars: &mut Variables) -> Result<String, String> {
    let message = vars.interpolate(message)?;
    Ok(if message.is_empty() {
        format!("required variable {name} is not set")
    } else {
        format!("required variable {name} is not set: {message}")
    })
}

/// Length of the variable name at the start of `text` (`[A-Za-z_][A-Za-z0-9_]*`), or 0.
fn name_length(text: &str) -> usize {
    let mut len = 0;
    for (i, c) in text.char_indices() {
        let ok = c == '_' || c.is_ascii_alphabetic() || (i > 0 && c.is_ascii_digit());
        if !ok {
            break;
        }
        len = i + c.len_utf8();
    }
    len
}

/// Index of the `}` that closes a `${`, counting nested `${…}` in defaults.
fn closing_brace(text: &str) -> Option<usize> {
    let mut depth = 0usize;
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'$' if bytes.get(i + 1) == Some(&b'{') => {
                depth += 1;
                i += 1;
            }
            b'}' if depth == 0 => return Some(i),
            b'}' => depth -= 1,
            _ => {}
        }
        i += 1;
    }
    None
}

/// One `KEY=value` line of an env file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct EnvEntry {
    /// Its line (1-based).
    pub(super) line: usize,
    /// The variable.
    pub(super) key: String,
    /// Its value; `None` for a bare `KEY` line.
    pub(super) value: Option<String>,
    /// Single-quoted: taken as written, never interpolated.
    pub(super) literal: bool,
}

/// Reads an env file the way compose does: `KEY=value` lines, `#` comments, an optional
/// `export ` prefix, single quotes taken literally, double quotes with `\n`, `\t`, `\"` and
/// `\\` escapes, and ` #` starting a comment after an unquoted value. A bare `KEY` line names
/// a variable without a value. Entries come in file order.
pub(super) fn parse_env_file(text: &str) -> Result<Vec<EnvEntry>, (usize, String)> {
    let mut entries = Vec::new();
    let mut lines = text.lines().enumerate();
    while let Some((index, raw)) = lines.next() {
        let number = index + 1;
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").map_or(line, str::trim_start);
        let (key, value) = match line.split_once('=') {
            Some((key, value)) => (key.trim(), Some(value.trim_start())),
            None => (line, None),
        };
        if name_length(key) != key.len() || key.is_empty() {
            return Err((number, format!("'{key}' is not a variable name")));
        }
        let Some(value) = value else {
            entries.push(EnvEntry {
                line: number,
                key: key.to_owned(),
                value: None,
                literal: false,
            });
            continue;
        };
        let literal = value.starts_with('\'');
        let value = if let Some(body) = value.strip_prefix('\'') {
            match body.find('\'') {
                Some(end) => body[..end].to_owned(),
                None => return Err((number, format!("unclosed ' in the value of {key}"))),
            }
        } else if let Some(body) = value.strip_prefix('"') {
            // A double-quoted value may run over several lines.
            let mut text = body.to_owned();
            loop {
                if let Some(end) = unescaped_quote(&text) {
                    break unescape(&text[..end]);
                }
                match lines.next() {
                    Some((_, more)) => {
                        text.push('\n');
                        text.push_str(more);
                    }
                    None => return Err((number, format!("unclosed \" in the value of {key}"))),
                }
            }
        } else {
            let value = match value.find(" #") {
                Some(comment) => &value[..comment],
                None => value,
            };
            value.trim_end().to_owned()
        };
        entries.push(EnvEntry {
            line: number,
            key: key.to_owned(),
            value: Some(value),
            literal,
        });
    }
    Ok(entries)
}

fn unescaped_quote(text: &str) -> Option<usize> {
    let mut escaped = false;
    for (i, c) in text.char_indices() {
        match c {
            '\\' if !escaped => escaped = true,
            '"' if !escaped => return Some(i),
            _ => escaped = false,
        }
    }
    None
}

fn unescape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('t') => out.push('\t'),
            Some('r') => out.push('\r'),
            Some(other) => out.push(other),
            None => out.push('\\'),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars() -> Variables {
        Variables::new(BTreeMap::from([
            ("SET".to_owned(), "value".to_owned()),
            ("EMPTY".to_owned(), String::new()),
            ("PORT".to_owned(), "8010".to_owned()),
        ]))
    }

    #[test]
    fn every_operator_of_compose() {
        let mut v = vars();
        let cases = [
            ("plain", "plain"),
            ("$SET/${SET}", "value/value"),
            ("${SET:-d}|${EMPTY:-d}|${NOPE:-d}", "value|d|d"),
            ("${SET-d}|${EMPTY-d}|${NOPE-d}", "value||d"),
            ("${SET:+alt}|${EMPTY:+alt}|${NOPE:+alt}", "alt||"),
            ("${SET+alt}|${EMPTY+alt}|${NOPE+alt}", "alt|alt|"),
            ("$$SET costs $$5", "$SET costs $5"),
            (
                "${NOPE:-http://localhost:${PORT}/x}",
                "http://localhost:8010/x",
            ),
            ("a $ b $1", "a $ b $1"),
            ("${SET:?}", "value"),
        ];
        for (text, expected) in cases {
            assert_eq!(v.interpolate(text).unwrap(), expected, "{text}");
        }
        // Only a name used without a default is reported as unset.
        assert!(v.unset.is_empty(), "{:?}", v.unset);
        assert_eq!(v.interpolate("[$NOPE][${NOPE}]").unwrap(), "[][]");
        assert_eq!(v.unset, ["NOPE"]);
    }

    #[test]
    fn malformed_and_required_variables_are_errors() {
        let mut v = vars();
        let err = v.interpolate("${NOPE:?set NOPE in .env}").unwrap_err();
        assert!(
            err.contains("NOPE") && err.contains("set NOPE in .env"),
            "{err}"
        );
        assert!(v.interpolate("${EMPTY?x}").is_ok());
        assert!(v.interpolate("${EMPTY:?x}").is_err());
        assert!(v.interpolate("${SET").unwrap_err().contains("unclosed"));
        assert!(v.interpolate("${}").is_err());
        assert!(v.interpolate("${SET!x}").is_err());
    }

    #[test]
    fn env_files_read_like_compose_reads_them() {
        let text = "# comment\n\nA=1\nexport B = two words # note\nC='$not ${interpolated}'\n\
                    D=\"line\\none \\\"q\\\"\"\nE=\"multi\nline\"\nF\nG=\nH=a#b\n";
        let entries = parse_env_file(text).unwrap();
        let got: Vec<(&str, Option<&str>)> = entries
            .iter()
            .map(|e| (e.key.as_str(), e.value.as_deref()))
            .collect();
        assert_eq!(
            got,
            [
                ("A", Some("1")),
                ("B", Some("two words")),
                ("C", Some("$not ${interpolated}")),
                ("D", Some("line\none \"q\"")),
                ("E", Some("multi\nline")),
                ("F", None),
                ("G", Some("")),
                ("H", Some("a#b")),
            ]
        );
        assert_eq!(entries[5].line, 9);
        assert!(entries[2].literal && !entries[3].literal);
        assert_eq!(parse_env_file("OK=1\n1BAD=2\n").unwrap_err().0, 2);
        assert_eq!(parse_env_file("A=\"open\n").unwrap_err().0, 1);
    }
}
