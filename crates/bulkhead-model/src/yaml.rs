//! A YAML document as a tree that remembers where each node came from, so validation can
//! report `file:line:col` for every problem. Anchors, aliases and tags are refused: manifests
//! and tenants.yaml are plain data.

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::{Marker, TScalarStyle};

/// Where a node starts: 1-based line and column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Pos {
    pub line: usize,
    pub col: usize,
}

impl Pos {
    fn from_marker(m: Marker) -> Self {
        Self {
            line: m.line(),
            col: m.col() + 1,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Node {
    /// A scalar; `plain` is false for quoted and block scalars (always strings).
    Scalar {
        value: String,
        plain: bool,
        pos: Pos,
    },
    Seq {
        items: Vec<Node>,
        pos: Pos,
    },
    Map {
        entries: Vec<(String, Pos, Node)>,
        pos: Pos,
    },
}

impl Node {
    pub fn pos(&self) -> Pos {
        match self {
            Node::Scalar { pos, .. } | Node::Seq { pos, .. } | Node::Map { pos, .. } => *pos,
        }
    }

    /// What kind of node this is, for error messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Node::Scalar { .. } => "a scalar",
            Node::Seq { .. } => "a list",
            Node::Map { .. } => "a mapping",
        }
    }

    /// The node as JSON, reading plain scalars as YAML 1.2 core types.
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            Node::Scalar { value, plain, .. } => {
                if *plain {
                    plain_scalar_json(value)
                } else {
                    serde_json::Value::String(value.clone())
                }
            }
            Node::Seq { items, .. } => items.iter().map(Node::to_json).collect(),
            Node::Map { entries, .. } => entries
                .iter()
                .map(|(k, _, v)| (k.clone(), v.to_json()))
                .collect::<serde_json::Map<_, _>>()
                .into(),
        }
    }
}

fn plain_scalar_json(value: &str) -> serde_json::Value {
    match value {
        "null" | "~" | "" => serde_json::Value::Null,
        "true" => true.into(),
        "false" => false.into(),
        _ => {
            if let Ok(i) = value.parse::<i64>() {
                i.into()
            } else if let Ok(f) = value.parse::<f64>()
                && f.is_finite()
                && value.bytes().any(|b| b.is_ascii_digit())
            {
                serde_json::Number::from_f64(f)
                    .map(serde_json::Value::Number)
                    .unwrap_or_else(|| value.into())
            } else {
                value.into()
            }
        }
    }
}

/// A YAML syntax problem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntaxError {
    pub pos: Pos,
    pub message: String,
}

/// Parses one YAML document. Duplicate keys are reported as errors (all of them).
pub fn parse(text: &str) -> Result<Node, Vec<SyntaxError>> {
    let mut builder = Builder::default();
    let mut parser = Parser::new_from_str(text);
    if let Err(e) = parser.load(&mut builder, false) {
        return Err(vec![SyntaxError {
            pos: Pos::from_marker(*e.marker()),
            message: e.info().to_owned(),
        }]);
    }
    if !builder.errors.is_empty() {
        return Err(builder.errors);
    }
    Ok(builder.root.unwrap_or(Node::Map {
        entries: Vec::new(),
        pos: Pos { line: 1, col: 1 },
    }))
}

enum Frame {
    Seq(Vec<Node>, Pos),
    Map(Vec<(String, Pos, Node)>, Pos, Option<(String, Pos)>),
}

#[derive(Default)]
struct Builder {
    stack: Vec<Frame>,
    root: Option<Node>,
    errors: Vec<SyntaxError>,
}

impl Builder {
    fn push_node(&mut self, node: Node) {
        match self.stack.last_mut() {
            None => self.root = Some(node),
            Some(Frame::Seq(items, _)) => items.push(node),
            Some(Frame::Map(entries, _, pending)) => match pending.take() {
                None => match node {
                    Node::Scalar { value, pos, .. } => {
                        if entries.iter().any(|(k, _, _)| *k == value) {
                            self.errors.push(SyntaxError {
                                pos,
                                message: format!("duplicate key {value:?}"),
                            });
                        }
                        *pending = Some((value, pos));
                    }
                    other => {
                        self.errors.push(SyntaxError {
                            pos: other.pos(),
                            message: "mapping keys must be scalars".into(),
                        });
                        *pending = Some((String::new(), other.pos()));
                    }
                },
                Some((key, key_pos)) => entries.push((key, key_pos, node)),
            },
        }
    }
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        let pos = Pos::from_marker(mark);
        match ev {
            Event::Scalar(value, style, anchor, tag) => {
                if anchor != 0 || tag.is_some() {
                    self.errors.push(SyntaxError {
                        pos,
                        message: "anchors and tags are not supported".into(),
                    });
                }
                let plain = style == TScalarStyle::Plain;
                self.push_node(Node::Scalar { value, plain, pos });
            }
            Event::SequenceStart(anchor, ref tag) | Event::MappingStart(anchor, ref tag)
                if anchor != 0 || tag.is_some() =>
            {
                self.errors.push(SyntaxError {
                    pos,
                    message: "anchors and tags are not supported".into(),
                });
                // Keep the structure balanced: treat it as the container it opens.
                if matches!(ev, Event::SequenceStart(..)) {
                    self.stack.push(Frame::Seq(Vec::new(), pos));
                } else {
                    self.stack.push(Frame::Map(Vec::new(), pos, None));
                }
            }
            Event::SequenceStart(..) => self.stack.push(Frame::Seq(Vec::new(), pos)),
            Event::MappingStart(..) => self.stack.push(Frame::Map(Vec::new(), pos, None)),
            Event::SequenceEnd => {
                if let Some(Frame::Seq(items, pos)) = self.stack.pop() {
                    self.push_node(Node::Seq { items, pos });
                }
            }
            Event::MappingEnd => {
                if let Some(Frame::Map(entries, pos, _)) = self.stack.pop() {
                    self.push_node(Node::Map { entries, pos });
                }
            }
            Event::Alias(_) => self.errors.push(SyntaxError {
                pos,
                message: "aliases are not supported".into(),
            }),
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

    #[test]
    fn positions_are_one_based_lines_and_columns() {
        let node = parse("a: 1\nb:\n  c: x\n").unwrap();
        let Node::Map { entries, .. } = node else {
            panic!("map expected")
        };
        assert_eq!(entries[0].1, Pos { line: 1, col: 1 });
        assert_eq!(entries[1].1, Pos { line: 2, col: 1 });
        let Node::Map { entries: inner, .. } = &entries[1].2 else {
            panic!("map expected")
        };
        assert_eq!(inner[0].1, Pos { line: 3, col: 3 });
    }

    #[test]
    fn duplicate_keys_and_aliases_are_errors() {
        let errs = parse("a: 1\na: 2\n").unwrap_err();
        assert_eq!(errs[0].pos.line, 2);
        assert!(errs[0].message.contains("duplicate"));
        assert!(parse("a: &x 1\nb: *x\n").is_err());
    }

    #[test]
    fn syntax_errors_have_a_position() {
        let errs = parse("a: [1, 2\nb: 3\n").unwrap_err();
        assert!(errs[0].pos.line >= 1);
    }

    #[test]
    fn plain_scalars_become_typed_json_and_quoted_ones_stay_strings() {
        let node = parse("a: 3\nb: '3'\nc: true\nd: 2.5\ne: x\n").unwrap();
        assert_eq!(
            node.to_json(),
            serde_json::json!({"a": 3, "b": "3", "c": true, "d": 2.5, "e": "x"})
        );
    }
}
