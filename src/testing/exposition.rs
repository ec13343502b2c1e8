//! Reads the Prometheus text exposition of `/metrics` as a scraper does,
//! for tests that check what the driver counted.

use std::collections::HashMap;

/// Every sample's series (`name{label="value",…}`, as printed) and value.
///
/// Panics on what a scraper would refuse: a body without the closing
/// `# EOF`, a line that is not a sample or a comment, a bad metric name
/// or value.
pub fn parse(body: &str) -> HashMap<String, f64> {
    let text = body.trim_end();
    assert!(text.ends_with("# EOF"), "no `# EOF` at the end of:\n{body}");
    let mut out = HashMap::new();
    for line in text.lines().filter(|l| !l.is_empty()) {
        if line.starts_with("# HELP ") || line.starts_with("# TYPE ") || line.starts_with("# UNIT ")
        {
            continue;
        }
        if line == "# EOF" {
            continue;
        }
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("not a sample: {line}"));
        let name_end = series.find('{').unwrap_or(series.len());
        assert!(
            !series[..name_end].is_empty()
                && series[..name_end]
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "bad metric name in {line}"
        );
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("bad value in {line}"));
        out.insert(series.to_string(), value);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_are_keyed_by_name_and_labels_as_printed() {
        let body = "# HELP x_total Things.\n# TYPE x counter\n\
                    x_total{kind=\"a\"} 3\nx_total{kind=\"b\"} 1\n# EOF\n";
        let samples = parse(body);
        assert_eq!(samples[r#"x_total{kind="a"}"#], 3.0);
        assert_eq!(samples.len(), 2);
    }

    #[test]
    #[should_panic(expected = "# EOF")]
    fn a_cut_off_body_is_refused() {
        parse("x_total 1\n");
    }
}
