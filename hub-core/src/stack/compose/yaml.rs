//! YAML read into a tree that remembers the line of every node, so that each mistake in a
//! compose file can be named with its line. Built on `yaml-rust2`'s event parser: anchors and
//! aliases are resolved here, and so are merge keys (`<<: *defaults`), which compose files use
//! widely although YAML 1.2 dropped them.

use std::collections::HashMap;

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::{Marker, TScalarStyle};

/// A YAML node and the line (1-based) it starts on.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Node {
    pub(super) line: usize,
    pub(super) value: Value,
}

/// The content of a node.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Value {
    /// `~`, `null` or nothing.
    Null,
    /// Any other scalar, as written; `plain` when it was not quoted (only plain scalars are
    /// numbers, booleans or null in YAML).
    Scalar { text: String, plain: bool },
    /// A sequence.
    Seq(Vec<Node>),
    /// A mapping, in file order; keys are scalars.
    Map(Vec<(Node, Node)>),
}

/// A YAML syntax error, or a construct compose files cannot use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct YamlError {
    pub(super) line: usize,
    pub(super) message: String,
}

impl Node {
    /// The key text of a mapping key.
    pub(super) fn key(&self) -> &str {
        match &self.value {
            Value::Scalar { text, .. } => text,
            _ => "",
        }
    }
}

/// Parses one YAML document. An empty text is an empty mapping.
pub(super) fn parse(text: &str) -> Result<Node, YamlError> {
    let mut builder = Builder::default();
    let mut parser = Parser::new_from_str(text);
    parser.load(&mut builder, false).map_err(|err| YamlError {
        line: err.marker().line(),
        message: err.info().to_owned(),
    })?;
    if let Some(error) = builder.error {
        return Err(error);
    }
    Ok(builder.root.unwrap_or(Node {
        line: 1,
        value: Value::Map(Vec::new()),
    }))
}

enum Frame {
    Seq {
        line: usize,
        anchor: usize,
        items: Vec<Node>,
    },
    Map {
        line: usize,
        anchor: usize,
        entries: Vec<(Node, Node)>,
        key: Option<Node>,
    },
}

#[derive(Default)]
struct Builder {
    stack: Vec<Frame>,
    anchors: HashMap<usize, Node>,
    root: Option<Node>,
    error: Option<YamlError>,
}

impl Builder {
    fn fail(&mut self, line: usize, message: impl Into<String>) {
        if self.error.is_none() {
            self.error = Some(YamlError {
                line,
                message: message.into(),
            });
        }
    }

    /// Adds a finished node to the collection being built (or makes it the document).
    fn push(&mut self, node: Node, anchor: usize) {
        if anchor != 0 {
            self.anchors.insert(anchor, node.clone());
        }
        match self.stack.last_mut() {
            None => {
                if self.root.is_none() {
                    self.root = Some(node);
                }
            }
            Some(Frame::Seq { items, .. }) => items.push(node),
            Some(Frame::Map { entries, key, .. }) => match key.take() {
                None => {
                    if !matches!(node.value, Value::Scalar { .. }) {
                        let line = node.line;
                        self.fail(line, "a mapping key must be a plain value");
                        return;
                    }
                    *key = Some(node);
                }
                Some(k) => entries.push((k, node)),
            },
        }
    }

    fn finish_map(&mut self, line: usize, entries: Vec<(Node, Node)>) -> Node {
        let mut own: Vec<(Node, Node)> = Vec::with_capacity(entries.len());
        let mut merged: Vec<(Node, Node)> = Vec::new();
        for (key, value) in entries {
            let is_merge =
                matches!(&key.value, Value::Scalar { text, plain: true } if text == "<<");
            if is_merge {
                let sources = match value.value {
                    Value::Map(_) => vec![value],
                    Value::Seq(items) => items,
                    _ => {
                        self.fail(key.line, "'<<' merges a mapping or a list of mappings");
                        Vec::new()
                    }
                };
                for source in sources {
                    match source.value {
                        // Earlier sources win over later ones, as the merge key type says.
                        Value::Map(pairs) => {
                            for (k, v) in pairs {
                                if !merged.iter().any(|(m, _)| m.key() == k.key()) {
                                    merged.push((k, v));
                                }
                            }
                        }
                        _ => self.fail(source.line, "'<<' merges a mapping or a list of mappings"),
                    }
                }
                continue;
            }
            if let Some((first, _)) = own.iter().find(|(k, _)| k.key() == key.key()) {
                let message = format!(
                    "key '{}' appears twice in this mapping (first on line {})",
                    key.key(),
                    first.line
                );
                self.fail(key.line, message);
            }
            own.push((key, value));
        }
        // Keys written out in the mapping override merged ones.
        for (k, v) in merged {
            if !own.iter().any(|(o, _)| o.key() == k.key()) {
                own.push((k, v));
            }
        }
        Node {
            line,
            value: Value::Map(own),
        }
    }
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, event: Event, mark: Marker) {
        if self.error.is_some() {
            return;
        }
        let line = mark.line();
        match event {
            Event::Scalar(text, style, anchor, tag) => {
                if let Some(tag) = tag {
                    self.fail(
                        line,
                        format!("YAML tag '{}{}' is not supported", tag.handle, tag.suffix),
                    );
                    return;
                }
                let plain = style == TScalarStyle::Plain;
                let value = if plain && matches!(text.as_str(), "" | "~" | "null" | "Null" | "NULL")
                {
                    Value::Null
                } else {
                    Value::Scalar { text, plain }
                };
                self.push(Node { line, value }, anchor);
            }
            Event::SequenceStart(anchor, tag) | Event::MappingStart(anchor, tag)
                if tag.is_some() =>
            {
                let _ = anchor;
                let tag = tag.map_or_else(String::new, |t| format!("{}{}", t.handle, t.suffix));
                self.fail(line, format!("YAML tag '{tag}' is not supported"));
            }
            Event::SequenceStart(anchor, _) => self.stack.push(Frame::Seq {
                line,
                anchor,
                items: Vec::new(),
            }),
            Event::MappingStart(anchor, _) => self.stack.push(Frame::Map {
                line,
                anchor,
                entries: Vec::new(),
                key: None,
            }),
            Event::SequenceEnd => {
                if let Some(Frame::Seq {
                    line,
                    anchor,
                    items,
                }) = self.stack.pop()
                {
                    self.push(
                        Node {
                            line,
                            value: Value::Seq(items),
                        },
                        anchor,
                    );
                }
            }
            Event::MappingEnd => {
                if let Some(Frame::Map {
                    line,
                    anchor,
                    entries,
                    ..
                }) = self.stack.pop()
                {
                    let node = self.finish_map(line, entries);
                    self.push(node, anchor);
                }
            }
            Event::Alias(id) => match self.anchors.get(&id).cloned() {
                Some(node) => self.push(Node { line, ..node }, 0),
                None => self.fail(line, "alias of an unknown anchor"),
            },
            Event::Nothing
            | Event::StreamStart
            | Event::StreamEnd
            | Event::DocumentStart
            | Event::DocumentEnd => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(node: &Node) -> Vec<(&str, &Node)> {
        match &node.value {
            Value::Map(entries) => entries.iter().map(|(k, v)| (k.key(), v)).collect(),
            other => panic!("not a map: {other:?}"),
        }
    }

    #[test]
    fn nodes_know_their_lines() {
        let root = parse("a: 1\nb:\n  - x\n  - 'y'\nc: ~\n").unwrap();
        let entries = map(&root);
        assert_eq!(entries[0].1.line, 1);
        assert_eq!(entries[1].1.line, 3);
        let Value::Seq(items) = &entries[1].1.value else {
            panic!()
        };
        assert_eq!(items[1].line, 4);
        assert_eq!(
            items[1].value,
            Value::Scalar {
                text: "y".into(),
                plain: false
            }
        );
        assert_eq!(entries[2].1.value, Value::Null);
    }

    #[test]
    fn anchors_aliases_and_merge_keys_resolve() {
        let root = parse(
            "x-base: &base\n  image: one\n  restart: always\nweb:\n  <<: *base\n  image: two\nlist: &l [1, 2]\nagain: *l\n",
        )
        .unwrap();
        let entries = map(&root);
        let web = map(entries[1].1);
        assert_eq!(web.len(), 2);
        let image = web.iter().find(|(k, _)| *k == "image").unwrap().1;
        assert!(matches!(&image.value, Value::Scalar { text, .. } if text == "two"));
        assert!(web.iter().any(|(k, _)| *k == "restart"));
        assert_eq!(entries[3].1.value, entries[2].1.value);
    }

    #[test]
    fn errors_carry_their_line() {
        assert_eq!(parse("a: 1\na: 2\n").unwrap_err().line, 2);
        assert_eq!(parse("a: 1\nb: [unclosed\n").unwrap_err().line, 3);
        let err = parse("a: !reset []\n").unwrap_err();
        assert!(err.message.contains("!reset"), "{err:?}");
        assert_eq!(parse("").unwrap().value, Value::Map(Vec::new()));
    }
}
