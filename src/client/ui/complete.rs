//! Tab completion for the line being typed: command names after a leading `/` (from the command
//! table, [`command::completions`]), the names of who is online after a command that takes one
//! (`/msg `, `/verify `, `/trust `: [`command::takes_a_name`]) and after `@`
//! (`@b<Tab>` at the start of a line gives `@bob: `, ready for the text; elsewhere `@bob `), and
//! a name at the start of a line (`b<Tab>` gives `bob: `, irssi's habit: a room line that
//! addresses bob, and names him so he is highlighted).
//! Names match in any case and are put in as the server spells them; the person's own name is
//! never offered. After `/send NAME `, Tab completes a path (the rest of the line is the path,
//! spaces and all; `~/` is the home folder), as a shell does; `/send`, `/accept`, `/decline`,
//! `/cancel` and `/resume` complete the name first.
//!
//! [`complete`] is the whole rule, a pure function; [`ChatHelper`] hands it to the line editor.

use rustyline::completion::Completer;
use rustyline::highlight::Highlighter;
use rustyline::hint::Hinter;
use rustyline::validate::Validator;
use rustyline::{Context, Helper};

use super::style::Names;
use crate::client::command;

/// What completing the text before the cursor offers: where the word being completed starts (a
/// byte offset), and the candidates that replace it, sorted.
pub fn complete(before_cursor: &str, others: &[String]) -> (usize, Vec<String>) {
    let word_start = before_cursor.rfind(char::is_whitespace).map_or(0, |at| {
        at + before_cursor[at..].chars().next().map_or(1, char::len_utf8)
    });
    let word = &before_cursor[word_start..];

    if word_start == 0 && word.starts_with('/') {
        let candidates = command::completions()
            .into_iter()
            .filter(|command| starts_with_ignore_case(command, word))
            .map(|command| format!("{command} "))
            .collect();
        return (0, candidates);
    }
    if is_msg_name(&before_cursor[..word_start]) {
        return (word_start, matching(others, word, "", " "));
    }
    if let Some(partial) = word.strip_prefix('@') {
        let end = if word_start == 0 { ": " } else { " " };
        return (word_start, matching(others, partial, "@", end));
    }
    // Not an empty line: Tab there offers nothing rather than everyone.
    if word_start == 0 && !word.is_empty() {
        return (0, matching(others, word, "", ": "));
    }
    (word_start, Vec::new())
}

/// Whether `before_word` is a command that takes a name (`/msg`, `/verify`, …) and spaces: the
/// word after it is the name.
fn is_msg_name(before_word: &str) -> bool {
    let mut words = before_word.split_whitespace();
    matches!(
        (words.next(), words.next()),
        (Some(command), None) if command::takes_a_name(command)
    ) && before_word.ends_with(char::is_whitespace)
}

/// Where the path of `/send NAME PATH` starts, when the cursor is in it (the path is the rest
/// of the line, spaces and all).
pub fn send_path_start(before_cursor: &str) -> Option<usize> {
    let command_end = before_cursor.find(char::is_whitespace)?;
    if !before_cursor[..command_end].eq_ignore_ascii_case("/send") {
        return None;
    }
    let after_command = &before_cursor[command_end..];
    let name_at = command_end + after_command.find(|c: char| !c.is_whitespace())?;
    let name_end = name_at + before_cursor[name_at..].find(char::is_whitespace)?;
    let rest = &before_cursor[name_end..];
    let path_at = rest
        .find(|c: char| !c.is_whitespace())
        .map_or(before_cursor.len(), |at| name_end + at);
    Some(path_at)
}

/// Most entries of one folder offered: a folder of a million files must not stall the editor.
const MAX_PATH_CANDIDATES: usize = 1_000;

/// The paths that complete `partial` (as typed: `~/` stands for the home folder): the entries
/// of its folder whose names start with its last part, folders ending in `/`, hidden ones only
/// when the part starts with `.`.
pub fn complete_path(partial: &str) -> Vec<String> {
    let (folder, start) = match partial.rfind('/') {
        Some(at) => (&partial[..=at], &partial[at + 1..]),
        None => ("", partial),
    };
    let listed = match folder {
        "" => std::path::PathBuf::from("."),
        folder => command::expand_home(folder),
    };
    let Ok(entries) = std::fs::read_dir(&listed) else {
        return Vec::new();
    };
    let mut found: Vec<String> = entries
        .filter_map(Result::ok)
        .take(MAX_PATH_CANDIDATES)
        .filter_map(|entry| {
            let name = entry.file_name().into_string().ok()?;
            if !name.starts_with(start) || (name.starts_with('.') && !start.starts_with('.')) {
                return None;
            }
            // Followed through a link: a link to a folder completes as a folder.
            let is_folder = std::fs::metadata(entry.path()).is_ok_and(|m| m.is_dir());
            Some(format!(
                "{folder}{name}{}",
                if is_folder { "/" } else { "" }
            ))
        })
        .collect();
    found.sort();
    found
}

fn matching(names: &[String], partial: &str, before: &str, after: &str) -> Vec<String> {
    let mut found: Vec<String> = names
        .iter()
        .filter(|name| starts_with_ignore_case(name, partial))
        .map(|name| format!("{before}{name}{after}"))
        .collect();
    found.sort();
    found
}

fn starts_with_ignore_case(text: &str, prefix: &str) -> bool {
    text.len() >= prefix.len()
        && text.is_char_boundary(prefix.len())
        && text[..prefix.len()].eq_ignore_ascii_case(prefix)
}

/// The line editor's helper: completion from [`complete`] over who is online now; no hints, no
/// highlighting, every line accepted as typed.
pub struct ChatHelper {
    names: Names,
}

impl ChatHelper {
    pub fn new(names: Names) -> ChatHelper {
        ChatHelper { names }
    }
}

impl Completer for ChatHelper {
    type Candidate = String;

    fn complete(
        &self,
        line: &str,
        pos: usize,
        _: &Context<'_>,
    ) -> rustyline::Result<(usize, Vec<String>)> {
        if let Some(start) = send_path_start(&line[..pos]) {
            return Ok((start, complete_path(&line[start..pos])));
        }
        Ok(complete(&line[..pos], &self.names.others()))
    }
}

impl Hinter for ChatHelper {
    type Hint = String;
}

impl Highlighter for ChatHelper {}

impl Validator for ChatHelper {}

impl Helper for ChatHelper {}

#[cfg(test)]
mod tests {
    use super::*;

    fn names() -> Vec<String> {
        vec!["bill".into(), "bob".into(), "Carol".into()]
    }

    #[test]
    fn at_a_name_at_the_start_of_a_line_completes_to_a_direct_message() {
        assert_eq!(complete("@bo", &names()), (0, vec!["@bob: ".into()]));
        assert_eq!(
            complete("@b", &names()),
            (0, vec!["@bill: ".into(), "@bob: ".into()])
        );
        assert_eq!(complete("@c", &names()), (0, vec!["@Carol: ".into()]));
        assert_eq!(complete("@z", &names()), (0, vec![]));
    }

    #[test]
    fn at_a_name_inside_a_line_completes_to_the_name() {
        assert_eq!(complete("ask @bo", &names()), (4, vec!["@bob ".into()]));
    }

    #[test]
    fn msg_completes_the_name_only() {
        assert_eq!(
            complete("/msg b", &names()),
            (5, vec!["bill ".into(), "bob ".into()])
        );
        assert_eq!(complete("/MSG  bo", &names()), (6, vec!["bob ".into()]));
        assert_eq!(complete("/msg bob hel", &names()), (9, vec![]));
        assert_eq!(complete("/verify bo", &names()).1, ["bob "]);
        assert_eq!(complete("/TRUST bo", &names()).1, ["bob "]);
    }

    #[test]
    fn a_slash_at_the_start_completes_commands() {
        assert_eq!(complete("/p", &names()), (0, vec!["/peers ".into()]));
        assert_eq!(complete("/Q", &names()), (0, vec!["/quit ".into()]));
        assert_eq!(
            complete("/", &names()).1.len(),
            command::completions().len()
        );
        assert_eq!(complete("/m", &names()).1, ["/me ", "/msg "]);
        assert_eq!(complete("a /p", &names()), (2, vec![]));
    }

    #[test]
    fn a_name_at_the_start_of_a_line_completes_to_an_address() {
        assert_eq!(complete("bo", &names()), (0, vec!["bob: ".into()]));
        assert_eq!(
            complete("B", &names()),
            (0, vec!["bill: ".into(), "bob: ".into()])
        );
        assert_eq!(complete("car", &names()), (0, vec!["Carol: ".into()]));
        assert_eq!(complete("zed", &names()), (0, vec![]));
        // A vim-style command is not a name.
        assert_eq!(complete(":l", &names()), (0, vec![]));
    }

    #[test]
    fn send_completes_a_name_then_a_path() {
        assert_eq!(complete("/send b", &names()).1, ["bill ", "bob "]);
        assert_eq!(complete("/accept Ca", &names()).1, ["Carol "]);
        assert_eq!(send_path_start("/send bob "), Some(10));
        assert_eq!(send_path_start("/send bob  /tm"), Some(11));
        assert_eq!(send_path_start("/send bob"), None);
        assert_eq!(send_path_start("/msg bob x"), None);
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("report one.pdf"), b"x").unwrap();
        std::fs::write(dir.path().join(".hidden"), b"x").unwrap();
        std::fs::create_dir(dir.path().join("reports")).unwrap();
        let base = format!("{}/", dir.path().display());
        assert_eq!(
            complete_path(&format!("{base}rep")),
            [format!("{base}report one.pdf"), format!("{base}reports/")]
        );
        assert_eq!(
            complete_path(&format!("{base}.h")),
            [format!("{base}.hidden")]
        );
        assert_eq!(complete_path(&format!("{base}zzz")), Vec::<String>::new());
    }

    #[test]
    fn plain_words_complete_nothing() {
        assert_eq!(complete("hello b", &names()), (6, vec![]));
        assert_eq!(complete("", &names()), (0, vec![]));
        assert_eq!(complete("é @b", &names()).0, 3);
    }
}
