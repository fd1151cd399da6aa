//! Issue 19: the commands the README and docs/ show are commands the binary accepts, so that
//! the two cannot drift apart again.
//!
//! Every `evstream …` line of a shell block (```sh, ```console, ```bash) and every inline
//! `` `evstream …` `` span is run as `evstream <its arguments> --help`: clap parses the
//! arguments in order before it gets to `--help`, so a subcommand, flag or value the parser
//! does not accept fails, and nothing runs (no Redis needed). Inline spans are templates:
//! `a|b` tries each alternative, `[--json]` is the flag, `…` is left out, and a placeholder
//! value (`P`, `N`) becomes an example (shell blocks are read the same way). A flag written
//! alone in the prose of a paragraph, list item or table row after an `evstream …` span
//! (e.g. "`evstream dlq list` … `--oldest-first`") must be in the `--help` of the command last
//! named.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

mod common;
use common::evstream;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// README.md and every page of docs/.
fn documents() -> Vec<PathBuf> {
    let root = workspace();
    let mut files = vec![root.join("README.md")];
    let mut docs: Vec<PathBuf> = std::fs::read_dir(root.join("docs"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|e| e == "md"))
        .collect();
    docs.sort();
    files.extend(docs);
    files
}

/// Splits `line` into words as a shell does (quotes, backslash escapes); `#` starts a comment
/// when `comments`. Operators (`|`, `&&`, `;`) stay words of their own when separated by
/// spaces, as they are in the docs.
fn words(line: &str, comments: bool) -> Vec<String> {
    let mut words = Vec::new();
    let mut word: Option<String> = None;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '#' if comments && word.is_none() => break,
            '\'' => {
                let word = word.get_or_insert_with(String::new);
                for c in chars.by_ref() {
                    if c == '\'' {
                        break;
                    }
                    word.push(c);
                }
            }
            '"' => {
                let word = word.get_or_insert_with(String::new);
                while let Some(c) = chars.next() {
                    match c {
                        '"' => break,
                        '\\' => word.extend(chars.next()),
                        c => word.push(c),
                    }
                }
            }
            '\\' => word.get_or_insert_with(String::new).extend(chars.next()),
            c if c.is_whitespace() => words.extend(word.take()),
            c => word.get_or_insert_with(String::new).push(c),
        }
    }
    words.extend(word);
    words
}

/// A command found in a document, and where.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Found {
    at: String,
    /// The arguments after `evstream`.
    args: Vec<String>,
}

/// The `evstream` commands of one shell line: each part of a pipeline or list that runs
/// `evstream` (after `VAR=value` assignments).
fn shell_commands(line: &str) -> Vec<Vec<String>> {
    let mut commands = Vec::new();
    for part in words(line, true).split(|w| matches!(w.as_str(), "|" | "||" | "&&" | ";")) {
        let mut part = part.iter().skip_while(|w| {
            w.split_once('=')
                .is_some_and(|(name, _)| !name.is_empty() && !name.starts_with('-'))
        });
        if part.next().is_some_and(|w| w == "evstream") {
            commands.push(part.cloned().collect());
        }
    }
    commands
}

/// An example for a placeholder value (`--partitions P`), the word itself otherwise.
fn example(word: &str) -> String {
    match word {
        "P" => "2",
        "N" => "10",
        "K" => "1",
        "B" => "300",
        "R" | "REASON" => "handler_error",
        _ => word,
    }
    .to_owned()
}

/// The commands an inline template (`evstream dlq list|replay [--json]`) stands for: every
/// alternative of every `a|b` word (templates have few), `[x]` as `x`, `…` left out.
fn expand(template: &[String]) -> Vec<Vec<String>> {
    let mut commands: Vec<Vec<String>> = vec![Vec::new()];
    for word in template {
        let word = word.trim_start_matches('[').trim_end_matches(']');
        if word.is_empty() || word == "…" || word == "..." {
            continue;
        }
        let alternatives: Vec<&str> = word.split('|').filter(|a| !a.is_empty()).collect();
        commands = commands
            .into_iter()
            .flat_map(|command| {
                alternatives.iter().map(move |alternative| {
                    let mut command = command.clone();
                    command.push(example(alternative));
                    command
                })
            })
            .collect();
    }
    commands
}

/// The code spans of a line of prose (a table's `\|` is a `|`).
fn code_spans(line: &str) -> Vec<String> {
    line.split('`')
        .skip(1)
        .step_by(2)
        .map(|span| span.replace("\\|", "|"))
        .collect()
}

/// What the documents show: whole commands, and flags named in the prose of a command.
#[derive(Default)]
struct Shown {
    commands: BTreeSet<Found>,
    /// (where, the commands a paragraph is about (its words up to the first flag, each
    /// alternative), the flag).
    flags: BTreeSet<(String, Vec<Vec<String>>, String)>,
}

fn scan(path: &Path, shown: &mut Shown) {
    let name = path
        .strip_prefix(workspace())
        .unwrap_or(path)
        .display()
        .to_string();
    let text = std::fs::read_to_string(path).unwrap();
    let mut block: Option<String> = None;
    let mut pending = String::new();
    // The command a paragraph (or table row) is about, and where it began.
    let mut subject: Option<Vec<Vec<String>>> = None;
    for (index, line) in text.lines().enumerate() {
        let at = format!("{name}:{}", index + 1);
        let trimmed = line.trim_start();
        if let Some(fence) = trimmed.strip_prefix("```") {
            block = match block {
                None => Some(fence.trim().to_owned()),
                Some(_) => None,
            };
            subject = None;
            continue;
        }
        if let Some(language) = &block {
            if !matches!(language.as_str(), "sh" | "console" | "bash" | "shell") {
                continue;
            }
            let line = trimmed.strip_prefix("$ ").unwrap_or(trimmed);
            if let Some(continued) = line.strip_suffix('\\') {
                pending.push_str(continued);
                continue;
            }
            pending.push_str(line);
            for template in shell_commands(&std::mem::take(&mut pending)) {
                for args in expand(&template) {
                    shown.commands.insert(Found {
                        at: at.clone(),
                        args,
                    });
                }
            }
            continue;
        }
        let item = ["- ", "* "]
            .iter()
            .any(|bullet| trimmed.starts_with(bullet));
        if trimmed.is_empty() || item || trimmed.starts_with(['|', '#']) {
            subject = None; // a new paragraph, list item or table row
        }
        for span in code_spans(line) {
            let template = words(&span, false);
            match template.first().map(String::as_str) {
                Some("evstream") => {
                    let args: Vec<String> = template[1..]
                        .split(|w| w == "|")
                        .next()
                        .unwrap_or_default()
                        .to_vec();
                    for args in expand(&args) {
                        shown.commands.insert(Found {
                            at: at.clone(),
                            args,
                        });
                    }
                    let command: Vec<String> = template[1..]
                        .iter()
                        .take_while(|w| w.chars().all(|c| c.is_ascii_lowercase() || c == '|'))
                        .cloned()
                        .collect();
                    if !command.is_empty() {
                        subject = Some(expand(&command)); // the command last named
                    }
                }
                Some(flag) if flag.starts_with("--") && flag.len() > 2 => {
                    if let Some(command) = &subject {
                        let flag = flag.split('=').next().unwrap_or(flag).to_owned();
                        shown.flags.insert((at.clone(), command.clone(), flag));
                    }
                }
                _ => {}
            }
        }
    }
}

#[test]
fn issue_19_every_documented_command_is_accepted_by_the_parser() {
    let mut shown = Shown::default();
    for document in documents() {
        scan(&document, &mut shown);
    }
    assert!(
        shown.commands.len() > 20,
        "too few commands found, is the scan broken? {:?}",
        shown.commands
    );
    let mut refused = Vec::new();
    for Found { at, args } in &shown.commands {
        let output = evstream().args(args).arg("--help").output().unwrap();
        if !output.status.success() {
            let stderr = String::from_utf8_lossy(&output.stderr);
            refused.push(format!(
                "{at}: evstream {}\n    {}",
                args.join(" "),
                stderr.lines().next().unwrap_or_default()
            ));
        }
    }
    let mut helps = std::collections::HashMap::new();
    let mut help = |command: &Vec<String>| -> String {
        helps
            .entry(command.clone())
            .or_insert_with(|| {
                let output = evstream().args(command).arg("--help").output().unwrap();
                String::from_utf8_lossy(&output.stdout).into_owned()
            })
            .clone()
    };
    for (at, commands, flag) in &shown.flags {
        let known = commands.iter().any(|command| {
            help(command)
                .split(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
                .any(|word| word == flag)
        });
        if !known {
            let commands: Vec<String> = commands.iter().map(|c| c.join(" ")).collect();
            refused.push(format!(
                "{at}: {flag} is not an option of evstream {}",
                commands.join(" | ")
            ));
        }
    }
    assert!(
        refused.is_empty(),
        "documented but refused by the binary:\n{}",
        refused.join("\n")
    );
}

#[test]
fn the_scan_reads_shell_lines_and_templates() {
    assert_eq!(
        shell_commands(
            r#"echo '{"a":1}' | EVSTREAM_LOG=info evstream schema migrate --type T  # x"#
        ),
        [vec!["schema", "migrate", "--type", "T"]]
    );
    assert_eq!(
        words(r#"evstream consume --consumer "$(hostname)-2""#, false),
        ["evstream", "consume", "--consumer", "$(hostname)-2"]
    );
    let template = words("dlq list|replay [--json] --partitions P …", false);
    assert_eq!(
        expand(&template),
        [
            vec!["dlq", "list", "--json", "--partitions", "2"],
            vec!["dlq", "replay", "--json", "--partitions", "2"],
        ]
    );
    assert_eq!(
        code_spans(r"| `evstream dlq list\|replay` | the dead letters (`--reason`) |"),
        ["evstream dlq list|replay", "--reason"]
    );
}
