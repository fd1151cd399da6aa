//! `docs/configuration.md` is the configuration's reference (and the `config` module's
//! rustdoc): its example must be a valid file showing every option with its default, and
//! every option must have a row in a table. A new option without docs, or a default changed
//! in the code but not in the docs, fails here.

use std::collections::BTreeMap;

use evstream::Config;
use serde_json::Value;

fn read(path: &str) -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(path);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The first ```toml block of the page.
fn example(page: &str) -> &str {
    let start = page.find("```toml\n").expect("a ```toml example") + "```toml\n".len();
    let end = start + page[start..].find("```").expect("the example's end");
    &page[start..end]
}

/// `section.option` → value, for every option of the configuration (options without a
/// default are `null`).
fn options(config: &Config) -> BTreeMap<String, Value> {
    let Value::Object(sections) = serde_json::to_value(config).unwrap() else {
        panic!("a configuration serializes to an object");
    };
    let mut options = BTreeMap::new();
    for (section, fields) in sections {
        let Value::Object(fields) = fields else {
            panic!("[{section}] serializes to an object");
        };
        for (name, value) in fields {
            options.insert(format!("{section}.{name}"), value);
        }
    }
    options
}

/// The lines of `page` from the heading that starts with `heading` to the next heading of the
/// same or a higher level.
fn section<'a>(page: &'a str, heading: &str) -> &'a str {
    let start = page
        .find(heading)
        .unwrap_or_else(|| panic!("no heading {heading:?}"));
    let level = heading.chars().take_while(|&c| c == '#').count();
    let body = &page[start + heading.len()..];
    let end = body
        .match_indices("\n#")
        .find(|(i, _)| {
            let hashes = body[i + 1..].chars().take_while(|&c| c == '#').count();
            hashes <= level && body[i + 1 + hashes..].starts_with(' ')
        })
        .map_or(body.len(), |(i, _)| i);
    &body[..end]
}

#[test]
fn the_example_parses_and_shows_every_default() {
    let page = read("docs/configuration.md");
    let example = example(&page);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("evstream.toml");
    std::fs::write(&file, example).unwrap();
    let parsed = Config::from_file(&file).unwrap_or_else(|e| panic!("the example: {e}"));

    let defaults = options(&Config::default());
    let shown = options(&parsed);
    for (option, default) in &defaults {
        let name = option.split_once('.').unwrap().1;
        let named = example.lines().any(|line| {
            let line = line.trim_start_matches(['#', ' ']);
            line.strip_prefix(name)
                .is_some_and(|rest| rest.trim_start().starts_with('='))
        });
        assert!(
            named,
            "{option} is not in the example of docs/configuration.md"
        );
        if !default.is_null() {
            assert_eq!(
                &shown[option], default,
                "the example shows {option} = {} but its default is {default}",
                shown[option]
            );
        }
    }
}

#[test]
fn every_option_has_a_row_in_a_table() {
    let configuration = read("docs/configuration.md");
    let operations = read("docs/operations.md");
    for option in options(&Config::default()).keys() {
        let (section_name, name) = option.split_once('.').unwrap();
        let table = if section_name == "ops" {
            // The ops loop's options are documented beside its alerts.
            section(&operations, "### Configuration: `[ops]`")
        } else {
            section(&configuration, &format!("## `[{section_name}]`"))
        };
        let row = table.lines().any(|line| {
            line.starts_with("| ")
                && line
                    .split('|')
                    .nth(1)
                    .is_some_and(|cell| cell.contains(&format!("`{name}`")))
        });
        assert!(row, "{option} has no row in the table of [{section_name}]");
    }
}

#[test]
fn the_section_helper_stops_at_the_next_heading() {
    let page = "# A\n## `[x]`\n| `a` |\n### sub\n| `b` |\n## `[y]`\n| `c` |\n";
    let x = section(page, "## `[x]`");
    assert!(
        x.contains("`a`") && x.contains("`b`") && !x.contains("`c`"),
        "{x:?}"
    );
}
