//! The documentation kept true to the tree, so that it cannot rot unseen: docs/architecture.md's
//! source map names every file under `src/` and no file that is gone, every path it names in
//! backticks exists, and every relative link in README.md and docs/*.md reaches a file (and, with
//! `#anchor`, a heading of it).
//!
//! A source map without this test lost about ten files in two weeks; a link to a moved section
//! fails quietly for the reader. Each check is a pure function over text, tested below on small
//! inputs where it must fail, then run on the real files.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

/// The repository's root (where Cargo.toml is).
fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The heading that starts the source map in docs/architecture.md; it runs to the next `## `.
const SOURCE_MAP: &str = "## Source map";

/// Where the paths named in backticks must exist: the repository's own folders.
const CHECKED_FOLDERS: [&str; 5] = ["src/", "tests/", "docs/", "ci/", "fixtures/"];

/// Every `.rs` file under `dir`, as a path relative to `root` with `/` separators, sorted.
fn rust_files(root: &Path, dir: &Path) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let mut folders = vec![dir.to_path_buf()];
    while let Some(folder) = folders.pop() {
        for entry in fs::read_dir(&folder).expect("read a source folder") {
            let path = entry.expect("a folder entry").path();
            if path.is_dir() {
                folders.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let relative = path.strip_prefix(root).expect("under the root");
                found.insert(relative.to_string_lossy().replace('\\', "/"));
            }
        }
    }
    found
}

/// The files the source map lists: the first backticked path of each bullet (`- \`src/x.rs\`: …`)
/// between [`SOURCE_MAP`] and the next second-level heading. A file listed twice is an error.
fn map_entries(doc: &str) -> Result<BTreeSet<String>, String> {
    let start = doc
        .find(SOURCE_MAP)
        .ok_or_else(|| format!("no {SOURCE_MAP:?} heading"))?;
    let section = &doc[start + SOURCE_MAP.len()..];
    let section = section.find("\n## ").map_or(section, |end| &section[..end]);
    let mut entries = BTreeSet::new();
    for line in section.lines() {
        let Some(rest) = line.strip_prefix("- `") else {
            continue;
        };
        let Some(path) = rest.split('`').next().filter(|p| p.ends_with(".rs")) else {
            continue;
        };
        if !entries.insert(path.to_string()) {
            return Err(format!("{path} is listed twice"));
        }
    }
    Ok(entries)
}

/// What is wrong between the source map's entries and the files there are: files the map
/// misses, then entries for files that do not exist. Empty when they agree.
fn map_problems(entries: &BTreeSet<String>, files: &BTreeSet<String>) -> Vec<String> {
    let missing = files
        .difference(entries)
        .map(|f| format!("{f} is not in docs/architecture.md's source map: add a line for it"));
    let gone = entries
        .difference(files)
        .map(|f| format!("docs/architecture.md's source map names {f}, which does not exist"));
    missing.chain(gone).collect()
}

/// Every backticked text that is a path in one of [`CHECKED_FOLDERS`] (`src/broker.rs`,
/// `tests/load/`), without anything after a space (`src/trace/` (feature …) stays a path).
fn named_paths(doc: &str) -> Vec<String> {
    doc.split('`')
        .skip(1)
        .step_by(2)
        .filter(|quoted| CHECKED_FOLDERS.iter().any(|f| quoted.starts_with(f)))
        .filter(|quoted| !quoted.contains(char::is_whitespace) && !quoted.contains('*'))
        .map(str::to_string)
        .collect()
}

/// GitHub's anchor for a heading: lower case, letters, digits, `-` and `_` kept, spaces to `-`,
/// everything else (punctuation, backticks) dropped.
fn anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

/// The anchors of every heading of a markdown text (outside code blocks).
fn anchors(doc: &str) -> BTreeSet<String> {
    let mut in_code = false;
    let mut found = BTreeSet::new();
    for line in doc.lines() {
        if line.starts_with("```") {
            in_code = !in_code;
        } else if !in_code && line.starts_with('#') {
            found.insert(anchor(line.trim_start_matches('#')));
        }
    }
    found
}

/// The targets of the markdown links `[text](target)` of a text, outside code blocks and code
/// spans, that are not web addresses.
fn relative_links(doc: &str) -> Vec<String> {
    let mut in_code = false;
    let mut links = Vec::new();
    for line in doc.lines() {
        if line.starts_with("```") {
            in_code = !in_code;
            continue;
        }
        if in_code {
            continue;
        }
        // Code spans are the odd pieces between backticks: a `[a](b)` there is not a link.
        let prose: String = line.split('`').step_by(2).collect::<Vec<_>>().join(" ");
        let mut rest = prose.as_str();
        while let Some(at) = rest.find("](") {
            rest = &rest[at + 2..];
            let Some(end) = rest.find(')') else { break };
            let target = &rest[..end];
            if !target.contains("://") && !target.starts_with("mailto:") {
                links.push(target.to_string());
            }
            rest = &rest[end..];
        }
    }
    links
}

/// What is wrong with the relative links of the markdown file `file` (text `doc`): a target file
/// that does not exist, or an anchor no heading of the target has.
fn link_problems(file: &Path, doc: &str) -> Vec<String> {
    let folder = file.parent().expect("a file in a folder");
    let mut problems = Vec::new();
    for link in relative_links(doc) {
        let (target, fragment) = match link.split_once('#') {
            Some((target, fragment)) => (target, Some(fragment)),
            None => (link.as_str(), None),
        };
        if target.is_empty() {
            // A heading of this file itself.
            if let Some(fragment) = fragment.filter(|f| !anchors(doc).contains(*f)) {
                problems.push(format!(
                    "{}: the link to #{fragment} names no heading of it",
                    file.display()
                ));
            }
            continue;
        }
        let target_file = folder.join(target);
        if !target_file.exists() {
            problems.push(format!(
                "{}: the link to {link} reaches no file",
                file.display()
            ));
            continue;
        }
        if let Some(fragment) = fragment {
            let text = fs::read_to_string(&target_file).unwrap_or_default();
            if !anchors(&text).contains(fragment) {
                problems.push(format!(
                    "{}: the link to {link} names no heading of {}",
                    file.display(),
                    target_file.display()
                ));
            }
        }
    }
    problems
}

/// README.md and every markdown file in docs/.
fn markdown_files() -> Vec<PathBuf> {
    let mut files = vec![root().join("README.md")];
    for entry in fs::read_dir(root().join("docs")).expect("read docs/") {
        let path = entry.expect("a docs entry").path();
        if path.extension().is_some_and(|e| e == "md") {
            files.push(path);
        }
    }
    files.sort();
    files
}

#[test]
fn the_source_map_names_every_file_under_src_and_nothing_else() {
    let doc =
        fs::read_to_string(root().join("docs/architecture.md")).expect("docs/architecture.md");
    let entries = map_entries(&doc).unwrap_or_else(|why| panic!("docs/architecture.md: {why}"));
    let files = rust_files(&root(), &root().join("src"));
    assert!(
        files.len() > 50,
        "src/ holds {} .rs files: not the tree",
        files.len()
    );
    let problems = map_problems(&entries, &files);
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn every_path_architecture_md_names_exists() {
    let doc =
        fs::read_to_string(root().join("docs/architecture.md")).expect("docs/architecture.md");
    let named = named_paths(&doc);
    assert!(named.len() > 50, "only {} paths found", named.len());
    let gone: Vec<_> = named
        .iter()
        .filter(|path| !root().join(path).exists())
        .collect();
    assert!(
        gone.is_empty(),
        "docs/architecture.md names paths that do not exist: {gone:?}"
    );
}

#[test]
fn every_relative_link_in_readme_and_docs_reaches_a_file_and_heading() {
    let files = markdown_files();
    assert!(files.len() >= 5, "{files:?}");
    let mut checked = 0;
    let mut problems = Vec::new();
    for file in &files {
        let doc = fs::read_to_string(file).expect("read a markdown file");
        checked += relative_links(&doc).len();
        problems.extend(link_problems(file, &doc));
    }
    assert!(
        checked > 5,
        "only {checked} links found: the parser misses them"
    );
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

// ---- The checks themselves, where they must fail ----

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

const SMALL_MAP: &str = "# A\n\nprose naming `src/c.rs`\n\n## Source map\n\n### `src/`\n\n\
    - `src/a.rs`: owns a.\n- `src/b.rs`: owns b, beside `src/c.rs`.\n\n## Tests\n\n- `src/d.rs`: not the map.\n";

#[test]
fn a_file_missing_from_the_map_or_a_map_entry_without_a_file_is_reported() {
    let entries = map_entries(SMALL_MAP).unwrap();
    assert_eq!(entries, set(&["src/a.rs", "src/b.rs"]));
    assert!(map_problems(&entries, &set(&["src/a.rs", "src/b.rs"])).is_empty());
    let problems = map_problems(&entries, &set(&["src/a.rs", "src/b.rs", "src/new.rs"]));
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(problems[0].contains("src/new.rs is not in"), "{problems:?}");
    let problems = map_problems(&entries, &set(&["src/a.rs"]));
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(problems[0].contains("src/b.rs, which does not exist"));
}

#[test]
fn a_file_listed_twice_or_a_doc_without_a_map_is_an_error() {
    let twice = "## Source map\n- `src/a.rs`: one.\n- `src/a.rs`: again.\n";
    assert!(map_entries(twice).unwrap_err().contains("twice"));
    assert!(map_entries("# nothing here\n").is_err());
}

#[test]
fn named_paths_are_the_backticked_paths_of_the_repository() {
    let text = "`src/a.rs` and `tests/load/` and `src/trace/` (feature `trace`), `cargo test`, \
                `tests/*.rs`, `docs/x.md#part`";
    assert_eq!(
        named_paths(text),
        ["src/a.rs", "tests/load/", "src/trace/", "docs/x.md#part"]
    );
}

#[test]
fn anchors_follow_githubs_rule() {
    assert_eq!(anchor(" Direct messages (UDP)"), "direct-messages-udp");
    assert_eq!(
        anchor(" The lab: `just lab` and `p2pchat-trace`"),
        "the-lab-just-lab-and-p2pchat-trace"
    );
    assert_eq!(anchor(" Exit codes"), "exit-codes");
}

#[test]
fn a_link_to_a_missing_file_or_heading_is_reported_and_code_is_not_a_link() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("target.md");
    fs::write(
        &target,
        "# Title\n\n## Some part\n\n```\n## not a heading\n```\n",
    )
    .unwrap();
    let file = dir.path().join("README.md");
    let good = "[a](target.md) [b](target.md#some-part) [c](#here) [d](https://example.org/x)\n\n## Here\n\
                `[e](nothing.md)`\n```\n[f](nothing.md)\n```\n";
    assert!(
        link_problems(&file, good).is_empty(),
        "{:?}",
        link_problems(&file, good)
    );
    let bad = "[a](gone.md) [b](target.md#not-a-heading) [c](#nowhere)\n";
    let problems = link_problems(&file, bad);
    assert_eq!(problems.len(), 3, "{problems:?}");
    assert!(problems[0].contains("reaches no file"));
    assert!(problems[1].contains("names no heading"));
    assert!(problems[2].contains("#nowhere names no heading"));
}
