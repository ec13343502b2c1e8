//! Block-style YAML text, byte for byte what `serde_yaml` writes, without
//! its cost.
//!
//! `discover -o slices` of a 2048-VF node prints 2.6 MB of YAML. serde_yaml
//! drives libyaml's emitter, which looks at every scalar character by
//! character after serde_yaml has tried to parse each string as a null, a
//! bool, an integer and a float to decide whether it needs quotes: that was
//! most of the process's time. This writer covers what our documents hold
//! (mappings with string keys, sequences, strings, integers, booleans,
//! nulls) and makes the same choices directly. For anything else (a float,
//! an enum variant written as a YAML tag, a string with a line break or a
//! control character, a key too long for the `key: value` form) it gives
//! up, and [`to_string`] hands the whole document to serde_yaml: the text
//! is the same either way, only the time differs.
//!
//! The layout is libyaml's with serde_yaml's settings: two-space indent, a
//! sequence that is a mapping value not indented past its key, `{}` and `[]`
//! for empty collections, no line folding.

use std::fmt::{self, Display, Write as _};

use serde::ser::{self, Serialize};

/// YAML text of `value`, exactly as `serde_yaml::to_string` writes it.
pub fn to_string<T: Serialize + ?Sized>(value: &T) -> Result<String, serde_yaml::Error> {
    let mut out = String::new();
    match write(value, &mut out) {
        Ok(()) => Ok(out),
        Err(Unsupported) => serde_yaml::to_string(value),
    }
}

/// Appends the YAML text of `value` to `out`, or answers [`Unsupported`]
/// (leaving `out` with part of a document) when the value holds something
/// this writer does not cover.
pub fn write<T: Serialize + ?Sized>(value: &T, out: &mut String) -> Result<(), Unsupported> {
    value.serialize(Node {
        out,
        place: Place::Root,
    })
}

/// The value holds something only serde_yaml writes right (see the module
/// documentation); also what a `Serialize` impl's own error becomes, so
/// serde_yaml reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unsupported;

impl Display for Unsupported {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("not covered by the block YAML writer")
    }
}

impl std::error::Error for Unsupported {}

impl ser::Error for Unsupported {
    fn custom<T: Display>(_msg: T) -> Self {
        Unsupported
    }
}

/// Longest key libyaml writes as `key: value`; a longer one takes the
/// explicit `? key` form (`yaml_emitter_check_simple_key`).
const MAX_SIMPLE_KEY: usize = 128;

/// Where the next node goes, which decides what comes before it.
#[derive(Debug, Clone, Copy)]
enum Place {
    /// The document itself, at the start of a line.
    Root,
    /// A mapping value: the text so far ends with `key:`, the key at
    /// this column.
    Value(usize),
    /// A sequence item: the text so far ends with `-`, at this column.
    Item(usize),
    /// A mapping key, at its own column already.
    Key,
}

/// The serializer for one node of the document.
struct Node<'a> {
    out: &'a mut String,
    place: Place,
}

impl<'a> Node<'a> {
    fn new(out: &'a mut String, place: Place) -> Self {
        Node { out, place }
    }

    /// A scalar already in its final form.
    fn scalar(self, text: &str) -> Result<(), Unsupported> {
        match self.place {
            Place::Root => {
                self.out.push_str(text);
                self.out.push('\n');
            }
            Place::Value(_) | Place::Item(_) => {
                self.out.push(' ');
                self.out.push_str(text);
                self.out.push('\n');
            }
            // Scalars other than strings as keys are left to serde_yaml.
            Place::Key => return Err(Unsupported),
        }
        Ok(())
    }

    fn string(self, s: &str) -> Result<(), Unsupported> {
        if !s.chars().all(fits_one_line) {
            return Err(Unsupported);
        }
        let quote = reads_back_as_non_string(s) || !plain_allowed(s);
        if let Place::Key = self.place {
            if s.len() > MAX_SIMPLE_KEY {
                return Err(Unsupported);
            }
            write_string(self.out, s, quote);
            self.out.push(':');
            return Ok(());
        }
        match self.place {
            Place::Root => {}
            _ => self.out.push(' '),
        }
        write_string(self.out, s, quote);
        self.out.push('\n');
        Ok(())
    }

    fn integer(self, v: impl Display) -> Result<(), Unsupported> {
        if let Place::Key = self.place {
            return Err(Unsupported);
        }
        if !matches!(self.place, Place::Root) {
            self.out.push(' ');
        }
        // Writing to a String cannot fail.
        let _ = write!(self.out, "{v}");
        self.out.push('\n');
        Ok(())
    }

    /// A collection (mapping or sequence) placed here.
    fn collection(self, kind: Kind) -> Result<Collection<'a>, Unsupported> {
        let (indent, first) = match (kind, self.place) {
            (_, Place::Key) => return Err(Unsupported),
            (_, Place::Root) => (0, Prefix::Nothing),
            (Kind::Mapping, Place::Value(key)) => (key + 2, Prefix::NewLine),
            // libyaml does not indent a sequence that is a mapping value.
            (Kind::Sequence, Place::Value(key)) => (key, Prefix::NewLine),
            (_, Place::Item(dash)) => (dash + 2, Prefix::Space),
        };
        Ok(Collection {
            out: self.out,
            kind,
            root: matches!(self.place, Place::Root),
            indent,
            first,
            entries: 0,
        })
    }
}

/// Whether the character can be written on one line as it is: printable in
/// libyaml's sense (`IS_PRINTABLE`) and not a line break (`IS_BREAK`). The
/// others (tabs, control characters, breaks, a BOM) take double quotes and
/// escapes or a literal block, which only serde_yaml writes.
fn fits_one_line(c: char) -> bool {
    matches!(c, ' '..='~')
        || (matches!(c, '\u{A0}'..='\u{FFFD}')
            && !matches!(c, '\u{2028}' | '\u{2029}' | '\u{FEFF}'))
        || c >= '\u{10000}'
}

/// Whether serde_yaml quotes `s` because, written plain, it would read
/// back as a null, a bool or a number; or because it is digits with a
/// leading zero, which YAML 1.2 reads as a string but YAML 1.1 tools do not.
///
/// serde_yaml's resolution (`de.rs`, `visit_untagged_scalar`): nulls are
/// `~`, `null`, `Null`, `NULL` and the empty string; bools `true`/`false`
/// in lower, title and upper case; integers an optional sign, then decimal
/// digits or `0x`/`0o`/`0b` and digits of that radix, within 128 bits;
/// floats whatever Rust's `f64` parser reads as a finite number, and
/// `.inf`, `-.inf`, `.nan` in the same three cases.
fn reads_back_as_non_string(s: &str) -> bool {
    match s.as_bytes().first() {
        None => return true,
        // Every number starts with one of these; the words are checked whole.
        Some(b'0'..=b'9' | b'+' | b'-' | b'.') => {}
        Some(_) => {
            return matches!(
                s,
                "~" | "null"
                    | "Null"
                    | "NULL"
                    | "true"
                    | "True"
                    | "TRUE"
                    | "false"
                    | "False"
                    | "FALSE"
            );
        }
    }
    leading_zero_digits(s) || is_integer(s) || is_float(s)
}

/// `0` followed by more digits, after an optional sign.
fn leading_zero_digits(s: &str) -> bool {
    let unsigned = s.strip_prefix(['+', '-']).unwrap_or(s);
    unsigned.len() > 1 && unsigned.starts_with('0') && unsigned.bytes().all(|b| b.is_ascii_digit())
}

fn is_integer(s: &str) -> bool {
    let (negative, unsigned) = match s.as_bytes()[0] {
        b'-' => (true, &s[1..]),
        b'+' => (false, &s[1..]),
        _ => (false, s),
    };
    for (prefix, radix) in [("0x", 16), ("0o", 8), ("0b", 2)] {
        if let Some(digits) = unsigned.strip_prefix(prefix) {
            // A sign after the radix prefix makes it a string, not decimal.
            if digits.starts_with(['+', '-']) {
                return false;
            }
            let fits = if negative {
                i128::from_str_radix(&format!("-{digits}"), radix).is_ok()
            } else {
                u128::from_str_radix(digits, radix).is_ok()
            };
            if fits {
                return true;
            }
            // Not of that radix: the decimal reading below fails too.
        }
    }
    !unsigned.is_empty()
        && unsigned.bytes().all(|b| b.is_ascii_digit())
        && if negative {
            s.parse::<i128>().is_ok()
        } else {
            unsigned.parse::<u128>().is_ok()
        }
}

fn is_float(s: &str) -> bool {
    let unsigned = match s.strip_prefix('+') {
        Some(rest) if rest.starts_with(['+', '-']) => return false,
        Some(rest) => rest,
        None => s,
    };
    matches!(unsigned, ".inf" | ".Inf" | ".INF")
        || matches!(s, "-.inf" | "-.Inf" | "-.INF" | ".nan" | ".NaN" | ".NAN")
        || unsigned.parse::<f64>().is_ok_and(f64::is_finite)
}

/// Whether libyaml may write `s` (one line, printable) as a plain scalar in
/// block context (`yaml_emitter_analyze_scalar`, `block_plain_allowed`):
/// no space at either end, no document marker at the start, no indicator
/// character first, and no `: ` or ` #` inside.
fn plain_allowed(s: &str) -> bool {
    let bytes = s.as_bytes();
    let Some(&first) = bytes.first() else {
        return true;
    };
    // "Followed by whitespace" counts the end of the string.
    let blank_after = |i: usize| matches!(bytes.get(i + 1), None | Some(b' '));
    if first == b' ' || bytes.last() == Some(&b' ') {
        return false;
    }
    if s.starts_with("---") || s.starts_with("...") {
        return false;
    }
    match first {
        b'#' | b',' | b'[' | b']' | b'{' | b'}' | b'&' | b'*' | b'!' | b'|' | b'>' | b'\''
        | b'"' | b'%' | b'@' | b'`' => return false,
        b'?' | b'-' if blank_after(0) => return false,
        _ => {}
    }
    bytes.iter().enumerate().all(|(i, &b)| match b {
        b':' => !blank_after(i),
        b'#' => i == 0 || bytes[i - 1] != b' ',
        _ => true,
    })
}

/// `s` plain, or in single quotes with each quote doubled.
fn write_string(out: &mut String, s: &str, quote: bool) {
    if !quote {
        out.push_str(s);
        return;
    }
    out.push('\'');
    for (i, part) in s.split('\'').enumerate() {
        if i > 0 {
            out.push_str("''");
        }
        out.push_str(part);
    }
    out.push('\'');
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Mapping,
    Sequence,
}

/// What goes before a collection's first entry.
#[derive(Debug, Clone, Copy)]
enum Prefix {
    /// At the start of a line already (the document's own collection).
    Nothing,
    /// After `key:`: the entries start on the next line.
    NewLine,
    /// After `-`: the first entry shares the dash's line.
    Space,
}

/// A mapping or sequence being written.
struct Collection<'a> {
    out: &'a mut String,
    kind: Kind,
    root: bool,
    /// Column of its keys or dashes.
    indent: usize,
    first: Prefix,
    entries: usize,
}

impl Collection<'_> {
    /// Starts an entry: the line break and indent before it.
    fn start_entry(&mut self) {
        if self.entries == 0 {
            match self.first {
                Prefix::Nothing => {}
                Prefix::NewLine => {
                    self.out.push('\n');
                    indent(self.out, self.indent);
                }
                Prefix::Space => self.out.push(' '),
            }
        } else {
            indent(self.out, self.indent);
        }
        self.entries += 1;
    }

    fn key(&mut self, key: &str) -> Result<(), Unsupported> {
        self.start_entry();
        Node::new(self.out, Place::Key).string(key)
    }

    fn value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Unsupported> {
        value.serialize(Node::new(self.out, Place::Value(self.indent)))
    }

    fn item<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Unsupported> {
        self.start_entry();
        self.out.push('-');
        value.serialize(Node::new(self.out, Place::Item(self.indent)))
    }

    fn finish(self) -> Result<(), Unsupported> {
        if self.entries == 0 {
            if !self.root {
                self.out.push(' ');
            }
            self.out.push_str(match self.kind {
                Kind::Mapping => "{}\n",
                Kind::Sequence => "[]\n",
            });
        }
        Ok(())
    }
}

fn indent(out: &mut String, columns: usize) {
    out.extend(std::iter::repeat_n(' ', columns));
}

/// Accepts only a string key: anything else is [`Unsupported`].
struct KeyOnly<'c, 'a>(&'c mut Collection<'a>);

impl<'a> ser::Serializer for Node<'a> {
    type Ok = ();
    type Error = Unsupported;
    type SerializeSeq = Collection<'a>;
    type SerializeTuple = Collection<'a>;
    type SerializeTupleStruct = Collection<'a>;
    type SerializeTupleVariant = ser::Impossible<(), Unsupported>;
    type SerializeMap = Collection<'a>;
    type SerializeStruct = Collection<'a>;
    type SerializeStructVariant = ser::Impossible<(), Unsupported>;

    fn serialize_bool(self, v: bool) -> Result<(), Unsupported> {
        self.scalar(if v { "true" } else { "false" })
    }
    fn serialize_i8(self, v: i8) -> Result<(), Unsupported> {
        self.integer(v)
    }
    fn serialize_i16(self, v: i16) -> Result<(), Unsupported> {
        self.integer(v)
    }
    fn serialize_i32(self, v: i32) -> Result<(), Unsupported> {
        self.integer(v)
    }
    fn serialize_i64(self, v: i64) -> Result<(), Unsupported> {
        self.integer(v)
    }
    fn serialize_i128(self, v: i128) -> Result<(), Unsupported> {
        self.integer(v)
    }
    fn serialize_u8(self, v: u8) -> Result<(), Unsupported> {
        self.integer(v)
    }
    fn serialize_u16(self, v: u16) -> Result<(), Unsupported> {
        self.integer(v)
    }
    fn serialize_u32(self, v: u32) -> Result<(), Unsupported> {
        self.integer(v)
    }
    fn serialize_u64(self, v: u64) -> Result<(), Unsupported> {
        self.integer(v)
    }
    fn serialize_u128(self, v: u128) -> Result<(), Unsupported> {
        self.integer(v)
    }
    /// serde_yaml's float formatting (ryu, `.inf`, `.nan`) is not repeated here.
    fn serialize_f32(self, _: f32) -> Result<(), Unsupported> {
        Err(Unsupported)
    }
    fn serialize_f64(self, _: f64) -> Result<(), Unsupported> {
        Err(Unsupported)
    }
    /// serde_yaml asks for single quotes for a char, whatever it is.
    fn serialize_char(self, _: char) -> Result<(), Unsupported> {
        Err(Unsupported)
    }
    fn serialize_str(self, v: &str) -> Result<(), Unsupported> {
        self.string(v)
    }
    /// serde_yaml reads a `!` first as a tag in some places: left to it.
    fn collect_str<T: Display + ?Sized>(self, value: &T) -> Result<(), Unsupported> {
        let text = value.to_string();
        if text.starts_with('!') {
            return Err(Unsupported);
        }
        self.string(&text)
    }
    fn serialize_bytes(self, _: &[u8]) -> Result<(), Unsupported> {
        Err(Unsupported)
    }
    fn serialize_none(self) -> Result<(), Unsupported> {
        self.scalar("null")
    }
    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<(), Unsupported> {
        value.serialize(self)
    }
    fn serialize_unit(self) -> Result<(), Unsupported> {
        self.scalar("null")
    }
    fn serialize_unit_struct(self, _: &'static str) -> Result<(), Unsupported> {
        self.scalar("null")
    }
    fn serialize_unit_variant(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
    ) -> Result<(), Unsupported> {
        self.string(variant)
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        value: &T,
    ) -> Result<(), Unsupported> {
        value.serialize(self)
    }
    /// Written as a YAML tag by serde_yaml.
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: &T,
    ) -> Result<(), Unsupported> {
        Err(Unsupported)
    }
    fn serialize_seq(self, _: Option<usize>) -> Result<Collection<'a>, Unsupported> {
        self.collection(Kind::Sequence)
    }
    fn serialize_tuple(self, _: usize) -> Result<Collection<'a>, Unsupported> {
        self.collection(Kind::Sequence)
    }
    fn serialize_tuple_struct(
        self,
        _: &'static str,
        _: usize,
    ) -> Result<Collection<'a>, Unsupported> {
        self.collection(Kind::Sequence)
    }
    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleVariant, Unsupported> {
        Err(Unsupported)
    }
    fn serialize_map(self, _: Option<usize>) -> Result<Collection<'a>, Unsupported> {
        self.collection(Kind::Mapping)
    }
    fn serialize_struct(self, _: &'static str, _: usize) -> Result<Collection<'a>, Unsupported> {
        self.collection(Kind::Mapping)
    }
    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeStructVariant, Unsupported> {
        Err(Unsupported)
    }
}

impl ser::SerializeSeq for Collection<'_> {
    type Ok = ();
    type Error = Unsupported;
    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Unsupported> {
        self.item(value)
    }
    fn end(self) -> Result<(), Unsupported> {
        self.finish()
    }
}

impl ser::SerializeTuple for Collection<'_> {
    type Ok = ();
    type Error = Unsupported;
    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Unsupported> {
        self.item(value)
    }
    fn end(self) -> Result<(), Unsupported> {
        self.finish()
    }
}

impl ser::SerializeTupleStruct for Collection<'_> {
    type Ok = ();
    type Error = Unsupported;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Unsupported> {
        self.item(value)
    }
    fn end(self) -> Result<(), Unsupported> {
        self.finish()
    }
}

impl ser::SerializeMap for Collection<'_> {
    type Ok = ();
    type Error = Unsupported;
    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result<(), Unsupported> {
        key.serialize(KeyOnly(self))
    }
    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Unsupported> {
        self.value(value)
    }
    fn end(self) -> Result<(), Unsupported> {
        self.finish()
    }
}

impl ser::SerializeStruct for Collection<'_> {
    type Ok = ();
    type Error = Unsupported;
    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<(), Unsupported> {
        self.key(key)?;
        self.value(value)
    }
    fn end(self) -> Result<(), Unsupported> {
        self.finish()
    }
}

impl ser::Serializer for KeyOnly<'_, '_> {
    type Ok = ();
    type Error = Unsupported;
    type SerializeSeq = ser::Impossible<(), Unsupported>;
    type SerializeTuple = ser::Impossible<(), Unsupported>;
    type SerializeTupleStruct = ser::Impossible<(), Unsupported>;
    type SerializeTupleVariant = ser::Impossible<(), Unsupported>;
    type SerializeMap = ser::Impossible<(), Unsupported>;
    type SerializeStruct = ser::Impossible<(), Unsupported>;
    type SerializeStructVariant = ser::Impossible<(), Unsupported>;

    fn serialize_str(self, v: &str) -> Result<(), Unsupported> {
        self.0.key(v)
    }
    fn collect_str<T: Display + ?Sized>(self, value: &T) -> Result<(), Unsupported> {
        let text = value.to_string();
        if text.starts_with('!') {
            return Err(Unsupported);
        }
        self.0.key(&text)
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        value: &T,
    ) -> Result<(), Unsupported> {
        value.serialize(self)
    }
    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<(), Unsupported> {
        value.serialize(self)
    }
    fn serialize_unit_variant(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
    ) -> Result<(), Unsupported> {
        self.0.key(variant)
    }
    fn serialize_bool(self, _: bool) -> Result<(), Unsupported> {
        Err(Unsupported)
    }
    fn serialize_i8(self, _: i8) -> Result<(), Unsupported> {
        Err(Unsupported)
    }
    fn serialize_i16(self, _: i16) -> Result<(), Unsupported> {
        Err(Unsupported)
    }
    fn serialize_i32(self, _: i32) -> Result<(), Unsupported> {
        Err(Unsupported)
    }
    fn serialize_i64(self, _: i64) -> Result<(), Unsupported> {
        Err(Unsupported)
    }
    fn serialize_u8(self, _: u8) -> Result<(), Unsupported> {
        Err(Unsupported)
    }
    fn serialize_u16(self, _: u16) -> Result<(), Unsupported> {
        Err(Unsupported)
    }
    fn serialize_u32(self, _: u32) -> Result<(), Unsupported> {
        Err(Unsupported)
    }
    fn serialize_u64(self, _: u64) -> Result<(), Unsupported> {
        Err(Unsupported)
    }
    fn serialize_f32(self, _: f32) -> Result<(), Unsupported> {
        Err(Unsupported)
    }
    fn serialize_f64(self, _: f64) -> Result<(), Unsupported> {
        Err(Unsupported)
    }
    fn serialize_char(self, _: char) -> Result<(), Unsupported> {
        Err(Unsupported)
    }
    fn serialize_bytes(self, _: &[u8]) -> Result<(), Unsupported> {
        Err(Unsupported)
    }
    fn serialize_none(self) -> Result<(), Unsupported> {
        Err(Unsupported)
    }
    fn serialize_unit(self) -> Result<(), Unsupported> {
        Err(Unsupported)
    }
    fn serialize_unit_struct(self, _: &'static str) -> Result<(), Unsupported> {
        Err(Unsupported)
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: &T,
    ) -> Result<(), Unsupported> {
        Err(Unsupported)
    }
    fn serialize_seq(self, _: Option<usize>) -> Result<Self::SerializeSeq, Unsupported> {
        Err(Unsupported)
    }
    fn serialize_tuple(self, _: usize) -> Result<Self::SerializeTuple, Unsupported> {
        Err(Unsupported)
    }
    fn serialize_tuple_struct(
        self,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleStruct, Unsupported> {
        Err(Unsupported)
    }
    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleVariant, Unsupported> {
        Err(Unsupported)
    }
    fn serialize_map(self, _: Option<usize>) -> Result<Self::SerializeMap, Unsupported> {
        Err(Unsupported)
    }
    fn serialize_struct(
        self,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeStruct, Unsupported> {
        Err(Unsupported)
    }
    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeStructVariant, Unsupported> {
        Err(Unsupported)
    }
}

#[cfg(test)]
#[path = "block_yaml_tests.rs"]
mod tests;
