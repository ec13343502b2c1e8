use super::*;
use std::collections::BTreeMap;

use proptest::prelude::*;
use serde_yaml::{Mapping, Value};

/// The text this writer gives, which must be there (not a fallback).
fn ours<T: Serialize + ?Sized>(value: &T) -> String {
    let mut out = String::new();
    write(value, &mut out).expect("covered by the block writer");
    out
}

fn one_entry(value: &str) -> BTreeMap<&str, &str> {
    BTreeMap::from([("k", value)])
}

#[test]
fn strings_that_would_read_back_as_something_else_are_quoted() {
    for (value, written) in [
        // What slices hold: addresses, hex IDs, names stay plain.
        ("0000:3b:02.1", "0000:3b:02.1"),
        ("101d", "101d"),
        (
            "MT2892 Family [ConnectX-6 Dx]",
            "MT2892 Family [ConnectX-6 Dx]",
        ),
        ("pci0000:3a", "pci0000:3a"),
        // Nulls, bools and numbers in every form serde_yaml reads.
        ("", "''"),
        ("~", "'~'"),
        ("null", "'null'"),
        ("True", "'True'"),
        ("FALSE", "'FALSE'"),
        ("1015", "'1015'"),
        ("-7", "'-7'"),
        ("+0x1F", "'+0x1F'"),
        ("0o17", "'0o17'"),
        ("-0b101", "'-0b101'"),
        ("1e5", "'1e5'"),
        ("1.", "'1.'"),
        (".5", "'.5'"),
        ("-.inf", "'-.inf'"),
        (".NaN", "'.NaN'"),
        // Leading zeros: a string to YAML 1.2, an octal number to YAML 1.1.
        ("0123", "'0123'"),
        // Look numeric but are not numbers to serde_yaml: plain.
        ("0x", "0x"),
        ("0xZZ", "0xZZ"),
        ("1e400", "1e400"),
        ("nan", "nan"),
        ("inf", "inf"),
        ("yes", "yes"),
        // YAML syntax: indicators first, `: ` and ` #` inside, blanks at the ends.
        ("- x", "'- x'"),
        ("-x", "-x"),
        ("-", "'-'"),
        ("? x", "'? x'"),
        (":x", ":x"),
        ("a: b", "'a: b'"),
        ("a:", "'a:'"),
        ("a:b", "a:b"),
        ("a #b", "'a #b'"),
        ("a#b", "a#b"),
        ("#b", "'#b'"),
        ("---x", "'---x'"),
        ("...", "'...'"),
        ("*x", "'*x'"),
        ("@x", "'@x'"),
        (" x", "' x'"),
        ("x ", "'x '"),
        ("it's", "it's"),
        ("'q'", "'''q'''"),
        ("ünïcode ✓", "ünïcode ✓"),
    ] {
        let text = ours(&one_entry(value));
        assert_eq!(text, format!("k: {written}\n"), "{value:?}");
        assert_eq!(text, serde_yaml::to_string(&one_entry(value)).unwrap());
        let back: BTreeMap<String, String> = serde_yaml::from_str(&text).unwrap();
        assert_eq!(back["k"], value);
    }
}

#[test]
fn layout_matches_serde_yaml() {
    let doc: Value = serde_yaml::from_str(
        r#"
a: 1
b: [x, [], {}, [y, z], {c: d, e: [f]}, null]
g: {}
h: {i: {j: true}, k: []}
"#,
    )
    .unwrap();
    let text = ours(&doc);
    assert_eq!(text, serde_yaml::to_string(&doc).unwrap());
    assert_eq!(
        text,
        "a: 1\nb:\n- x\n- []\n- {}\n- - y\n  - z\n- c: d\n  e:\n  - f\n- null\ng: {}\nh:\n  i:\n    j: true\n  k: []\n"
    );
}

#[test]
fn what_it_does_not_cover_goes_to_serde_yaml_unchanged() {
    #[derive(serde::Serialize)]
    enum E {
        Tagged(u8),
    }
    let long_key = "k".repeat(MAX_SIMPLE_KEY + 1);
    let mut out = String::new();
    assert_eq!(write(&1.5f64, &mut out), Err(Unsupported));
    assert_eq!(write(&E::Tagged(1), &mut String::new()), Err(Unsupported));
    assert_eq!(
        write(&one_entry("two\nlines"), &mut String::new()),
        Err(Unsupported)
    );
    assert_eq!(
        write(&one_entry("tab\there"), &mut String::new()),
        Err(Unsupported)
    );
    assert_eq!(
        write(
            &BTreeMap::from([(long_key.as_str(), 1)]),
            &mut String::new()
        ),
        Err(Unsupported)
    );
    assert_eq!(
        write(&BTreeMap::from([(1, 2)]), &mut String::new()),
        Err(Unsupported)
    );
    for text in [
        to_string(&BTreeMap::from([("f", 1.5)])).unwrap(),
        to_string(&E::Tagged(1)).unwrap(),
        to_string(&one_entry("two\nlines")).unwrap(),
        to_string(&BTreeMap::from([(long_key.as_str(), 1)])).unwrap(),
    ] {
        assert!(!text.is_empty());
    }
    assert_eq!(
        to_string(&one_entry("two\nlines")).unwrap(),
        serde_yaml::to_string(&one_entry("two\nlines")).unwrap()
    );
}

#[test]
fn every_fixture_renders_as_serde_yaml_would() {
    use crate::config::NodeConfig;
    use crate::inventory::NodeInventory;
    use crate::kube::slices::{SliceParams, render};
    use sriov::fixture::Fixture;

    for f in [
        Fixture::ConnectX6Dx,
        Fixture::E810,
        Fixture::ConnectX7Ib,
        Fixture::Virtio,
        Fixture::Scale2048,
    ] {
        let dir = tempfile::tempdir_in(sriov::fixture::scratch_base()).unwrap();
        f.build(dir.path()).unwrap();
        let mut inv = NodeInventory::discover(dir.path()).unwrap();
        for yaml in ["", "offerPfs: true"] {
            let config = NodeConfig::parse(yaml, "test").unwrap();
            for s in render(&inv, &config, &SliceParams::new(&config, "node-a")) {
                assert_eq!(ours(&s), serde_yaml::to_string(&s).unwrap(), "{f}");
            }
        }
        inv.read_rdma_details().unwrap();
        assert_eq!(ours(&inv), serde_yaml::to_string(&inv).unwrap(), "{f}");
    }
}

/// Strings made of the characters YAML gives meaning to, numbers' pieces
/// and the words it resolves, so quoting decisions are hit often; plus
/// arbitrary ones.
fn tricky_string() -> impl Strategy<Value = String> {
    let pieces = prop::sample::select(vec![
        "0",
        "1",
        "9",
        "0x",
        "0o",
        "0b",
        "e",
        "E",
        "+",
        "-",
        ".",
        "_",
        ":",
        "#",
        " ",
        "'",
        "\"",
        "~",
        "!",
        "?",
        "|",
        ">",
        "&",
        "*",
        "%",
        "@",
        "`",
        ",",
        "[",
        "]",
        "{",
        "}",
        "a",
        "f",
        "inf",
        "nan",
        ".inf",
        ".NaN",
        "null",
        "Null",
        "true",
        "FALSE",
        "---",
        "...",
        "\t",
        " #",
        ": ",
        "- ",
        "? ",
        "0x1",
        "1e",
        "\n",
        "\r",
        "\u{85}",
        "\u{A0}",
        "\u{2028}",
        "\u{FEFF}",
        "\u{1F600}",
        "é",
    ]);
    prop_oneof![
        3 => prop::collection::vec(pieces, 0..6).prop_map(|p| p.concat()),
        1 => any::<String>(),
        1 => "[ -~]{0,12}",
        2 => "[-+ #:'?.0-9a-z]{0,8}",
        2 => "[-+]?(0[xob])?[-+0-9a-fA-F._]{0,6}([eE][-+]?[0-9]{1,3})?",
        1 => "[-+]{0,2}0[xob][-+]?[0-9a-f]{0,3}",
    ]
}

/// Documents of mappings, sequences and scalars, a few levels deep.
fn document() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        tricky_string().prop_map(Value::String),
        any::<i64>().prop_map(|i| Value::Number(i.into())),
        any::<bool>().prop_map(Value::Bool),
        Just(Value::Null),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Sequence),
            prop::collection::vec((tricky_string(), inner), 0..5).prop_map(|entries| {
                Value::Mapping(
                    entries
                        .into_iter()
                        .map(|(k, v)| (Value::String(k), v))
                        .collect::<Mapping>(),
                )
            }),
        ]
    })
}

/// Whether every string in `doc` is one this writer covers.
fn covered(doc: &Value) -> bool {
    let line = |s: &str| s.chars().all(fits_one_line);
    match doc {
        Value::String(s) => line(s),
        Value::Sequence(items) => items.iter().all(covered),
        Value::Mapping(m) => m.iter().all(|(k, v)| {
            k.as_str()
                .is_some_and(|k| line(k) && k.len() <= MAX_SIMPLE_KEY)
                && covered(v)
        }),
        _ => true,
    }
}

proptest! {
    /// A string as a value and as a key: the same text as serde_yaml, which
    /// reads it back as the same string.
    #[test]
    fn any_string_is_written_as_serde_yaml_writes_it(s in tricky_string()) {
        let as_value = one_entry(&s);
        let as_key = BTreeMap::from([(s.as_str(), "v")]);
        for doc in [&as_value, &as_key] {
            let want = serde_yaml::to_string(doc).unwrap();
            let mut got = String::new();
            match write(doc, &mut got) {
                Ok(()) => prop_assert_eq!(&got, &want),
                Err(Unsupported) => prop_assert!(
                    !s.chars().all(fits_one_line) || s.len() > MAX_SIMPLE_KEY,
                    "{:?} should be covered", s
                ),
            }
            prop_assert_eq!(to_string(doc).unwrap(), want);
        }
        let back: BTreeMap<String, String> = serde_yaml::from_str(&to_string(&as_value).unwrap()).unwrap();
        prop_assert_eq!(&back["k"], &s);
        let back: BTreeMap<String, String> = serde_yaml::from_str(&to_string(&as_key).unwrap()).unwrap();
        prop_assert_eq!(back.keys().next(), Some(&s));
    }

    /// Nested documents: the same text as serde_yaml, read back the same.
    #[test]
    fn any_document_is_written_as_serde_yaml_writes_it(doc in document()) {
        let want = serde_yaml::to_string(&doc).unwrap();
        let mut ours = String::new();
        match write(&doc, &mut ours) {
            Ok(()) => prop_assert_eq!(&ours, &want),
            Err(Unsupported) => prop_assert!(!covered(&doc), "{:?} should be covered", doc),
        }
        let text = to_string(&doc).unwrap();
        prop_assert_eq!(&text, &want);
        let back: Value = serde_yaml::from_str(&text).unwrap();
        prop_assert_eq!(back, doc);
    }
}
