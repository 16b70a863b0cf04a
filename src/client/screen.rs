//! How text that other people control (messages, names, the server's words) is laid out for a
//! terminal, so that it can never pass for something the client itself printed.
//!
//! Three rules, each against a forgery a review showed on a real terminal:
//! - **Line breaks** (`\n`, `\r`, `\r\n`, vertical tab, form feed, NEL, U+2028, U+2029) in a
//!   message start a *continuation line* under its sender, marked [`CONTINUATION`], so no line of
//!   a message can begin like another sender's line (`<bob> …`, `[direct] <bob> …`) or a system
//!   line (`* …`, `! …`). In a name or a one-line text ([`escape`]) they are escaped instead.
//! - **Invisible characters** — controls (C0, DEL, C1) and Unicode format characters (category
//!   Cf: bidi overrides and isolates, LRM/RLM, zero-width spaces and joiners, BOM, …) — are shown
//!   as `\u{..}`, so they can neither move the cursor nor reorder or hide what is shown. Tabs stay.
//! - **Length**: a message shows at most a given number of continuation lines, then one line
//!   saying how many more it had ([`more_lines`]), so one message cannot scroll the room away.
//!
//! On a terminal, [`wrap`] breaks a shown line at word boundaries to the terminal's width, with
//! a hanging indent under the message's text (irssi's `indent`, weechat's prefix alignment).
//!
//! It never changes what programs get: `--json` prints the exact text.

use std::fmt::Write as _;

use unicode_width::UnicodeWidthChar;

/// The start of every continuation line of a message: indented under the sender and marked, so
/// it cannot be mistaken for the start of a line of its own.
pub const CONTINUATION: &str = "  ↳ ";

/// The start of the line that says how many lines of a message were not shown.
pub const MORE_LINES: &str = "  … ";

/// Unicode format characters (general category Cf, Unicode 16.0), as inclusive ranges. They are
/// invisible by design, and some reorder the text around them (U+202E shows `exe.txt` for
/// `txt.exe`), so they are escaped. Emoji sequences joined by U+200D show as their parts.
const FORMAT_CHARACTERS: &[(char, char)] = &[
    ('\u{00AD}', '\u{00AD}'),
    ('\u{0600}', '\u{0605}'),
    ('\u{061C}', '\u{061C}'),
    ('\u{06DD}', '\u{06DD}'),
    ('\u{070F}', '\u{070F}'),
    ('\u{0890}', '\u{0891}'),
    ('\u{08E2}', '\u{08E2}'),
    ('\u{180E}', '\u{180E}'),
    ('\u{200B}', '\u{200F}'),
    ('\u{202A}', '\u{202E}'),
    ('\u{2060}', '\u{2064}'),
    ('\u{2066}', '\u{206F}'),
    ('\u{FEFF}', '\u{FEFF}'),
    ('\u{FFF9}', '\u{FFFB}'),
    ('\u{110BD}', '\u{110BD}'),
    ('\u{110CD}', '\u{110CD}'),
    ('\u{13430}', '\u{1343F}'),
    ('\u{1BCA0}', '\u{1BCA3}'),
    ('\u{1D173}', '\u{1D17A}'),
    ('\u{E0001}', '\u{E0001}'),
    ('\u{E0020}', '\u{E007F}'),
];

/// Whether `c` ends a line on some terminal or in some text renderer.
fn is_line_break(c: char) -> bool {
    matches!(
        c,
        '\n' | '\r' | '\u{0B}' | '\u{0C}' | '\u{85}' | '\u{2028}' | '\u{2029}'
    )
}

/// Whether `c` is invisible or acts on the terminal rather than showing a glyph: a control
/// character (other than tab) or a format character.
fn is_hidden(c: char) -> bool {
    (c.is_control() && c != '\t')
        || FORMAT_CHARACTERS
            .iter()
            .any(|&(first, last)| (first..=last).contains(&c))
}

/// Appends `text` to `out` with every hidden character, line breaks included, as `\u{..}`.
fn push_escaped(out: &mut String, text: &str) {
    for c in text.chars() {
        if is_hidden(c) || is_line_break(c) {
            let _ = write!(out, "\\u{{{:x}}}", c as u32);
        } else {
            out.push(c);
        }
    }
}

/// `text` on one line: line breaks, controls and format characters shown as `\u{..}`. For
/// names and for texts that are never more than a line (warnings, errors, the server's reasons).
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    push_escaped(&mut out, text);
    out
}

/// A message for the screen: `head` (the client's own words, e.g. `<alice> `, already escaped)
/// then the first line of `text`; each further line of `text` on a [`CONTINUATION`] line, at most
/// `max_continuations` of them, then a [`MORE_LINES`] line counting the rest. `\r\n` is one
/// break; breaks at the very end show nothing. Lines are joined with `\n`, with no final `\n`.
///
/// Only the lines shown are copied: a 64 KiB message of empty lines costs a few bytes here.
pub fn message(head: &str, text: &str, max_continuations: usize) -> String {
    let text = text.trim_end_matches(is_line_break);
    let mut out = String::from(head);
    let mut lines = split_lines(text);
    if let Some(first) = lines.next() {
        push_escaped(&mut out, first);
    }
    for line in lines.by_ref().take(max_continuations) {
        out.push('\n');
        out.push_str(CONTINUATION);
        push_escaped(&mut out, line);
    }
    let hidden = lines.count();
    if hidden > 0 {
        out.push('\n');
        out.push_str(MORE_LINES);
        out.push_str(&more_lines(hidden));
    }
    out
}

/// `(N more lines)`, with the singular for one.
pub fn more_lines(count: usize) -> String {
    match count {
        1 => "(1 more line)".to_string(),
        n => format!("({n} more lines)"),
    }
}

/// The fewest columns a wrapped line keeps for text after its hanging indent: a narrower
/// terminal gets no indent rather than a column of a few characters.
pub const MIN_WRAPPED_TEXT: usize = 12;

/// Where a tab moves the cursor to: the next multiple of this column, as terminals do.
const TAB_STOP: usize = 8;

/// `line` (one line, no `\n`) broken into lines of at most `width` columns, at spaces where it
/// can, each later line starting with `indent` spaces (none when that leaves fewer than
/// [`MIN_WRAPPED_TEXT`] columns). A word longer than a whole line is cut where the line ends.
/// Columns are counted as the terminal does: wide characters (CJK, emoji) take two, and our own
/// SGR sequences (`ESC [ … m`: every escape left in a shown line is ours, [`escape`] took the
/// others) take none; a style that is on at a break is ended before it and set again after the
/// indent, so that reverse video never spreads over the indent. Lines are joined with `\n`.
pub fn wrap(line: &str, indent: usize, width: usize) -> String {
    let width = width.max(1);
    let indent = if indent + MIN_WRAPPED_TEXT <= width {
        indent
    } else {
        0
    };
    let mut out = String::with_capacity(line.len() + 16);
    let mut column = 0;
    // The SGR sequence in force (since the last reset), to set again after a break.
    let mut style = String::new();
    // What came since the last word, in order: spaces (shown only if the next word fits on this
    // line) and escapes (always shown, in their place).
    let mut pending = String::new();
    let mut pending_spaces = String::new();
    let mut pending_escapes: Vec<&str> = Vec::new();
    for token in tokens(line) {
        match token {
            Token::Escape(sgr) => {
                pending.push_str(sgr);
                pending_escapes.push(sgr);
            }
            Token::Space(c) => {
                pending.push(c);
                pending_spaces.push(c);
            }
            Token::Word(word) => {
                let spaces = columns_from(&pending_spaces, column);
                let word_width = columns_from(word, column + spaces);
                if column + spaces + word_width > width && column > indent {
                    column = break_line(&mut out, &style, indent);
                    out.extend(pending_escapes.iter().copied());
                } else {
                    // It fits, or it is cut below: no break would give it more room.
                    out.push_str(&pending);
                    column += spaces;
                }
                for sgr in pending_escapes.drain(..) {
                    follow(&mut style, sgr);
                }
                pending.clear();
                pending_spaces.clear();
                for c in word.chars() {
                    let w = char_columns(c, column);
                    if column + w > width && column > indent {
                        column = break_line(&mut out, &style, indent);
                    }
                    out.push(c);
                    column += w;
                }
            }
        }
    }
    // Spaces at the end stay when they fit: a line that needs no break is left as it was.
    if column + columns_from(&pending_spaces, column) <= width {
        out.push_str(&pending);
    } else {
        out.extend(pending_escapes.iter().copied());
    }
    out
}

/// Keeps `style` the SGR sequences in force after `sgr`.
fn follow(style: &mut String, sgr: &str) {
    if sgr == "\u{1b}[0m" || sgr == "\u{1b}[m" {
        style.clear();
    } else {
        style.push_str(sgr);
    }
}

/// Ends the line (and any style in force), starts the next with the indent and the style again;
/// returns the column it is at.
fn break_line(out: &mut String, style: &str, indent: usize) -> usize {
    if !style.is_empty() {
        out.push_str("\u{1b}[0m");
    }
    out.push('\n');
    out.extend(std::iter::repeat_n(' ', indent));
    out.push_str(style);
    indent
}

/// Columns `text` takes when it starts at `column`.
fn columns_from(text: &str, column: usize) -> usize {
    text.chars()
        .fold(column, |at, c| at + char_columns(c, at))
        .saturating_sub(column)
}

/// Columns `c` takes at `column`: a tab to the next tab stop, a wide character two.
fn char_columns(c: char, column: usize) -> usize {
    if c == '\t' {
        TAB_STOP - column % TAB_STOP
    } else {
        c.width().unwrap_or(0)
    }
}

/// A piece of a shown line, as [`wrap`] sees it.
enum Token<'a> {
    /// Our own SGR sequence: no columns.
    Escape(&'a str),
    /// A space or a tab: a place to break.
    Space(char),
    /// Characters between spaces and escapes.
    Word(&'a str),
}

/// `line` as escapes, spaces and words.
fn tokens(line: &str) -> impl Iterator<Item = Token<'_>> {
    let mut rest = line;
    std::iter::from_fn(move || {
        let c = rest.chars().next()?;
        let (token, len) = if c == '\u{1b}' {
            // ESC [ parameters, then the final byte (`m`); a lone ESC is one character.
            let len = rest
                .char_indices()
                .skip(1)
                .find(|&(at, c)| at > 1 && c.is_ascii_alphabetic())
                .map_or(c.len_utf8(), |(at, _)| at + 1);
            (Token::Escape(&rest[..len]), len)
        } else if c == ' ' || c == '\t' {
            (Token::Space(c), 1)
        } else {
            let len = rest.find([' ', '\t', '\u{1b}']).unwrap_or(rest.len());
            (Token::Word(&rest[..len]), len)
        };
        rest = &rest[len..];
        Some(token)
    })
}

/// The lines of `text`, split at every line break, `\r\n` counting as one.
fn split_lines(text: &str) -> impl Iterator<Item = &str> {
    let mut rest = Some(text);
    std::iter::from_fn(move || {
        let current = rest?;
        match current.char_indices().find(|&(_, c)| is_line_break(c)) {
            Some((at, c)) => {
                let mut next = at + c.len_utf8();
                if c == '\r' && current[next..].starts_with('\n') {
                    next += 1;
                }
                rest = Some(&current[next..]);
                Some(&current[..at])
            }
            None => {
                rest = None;
                Some(current)
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_kind_of_line_break_starts_a_marked_continuation() {
        for brk in [
            "\n", "\r", "\r\n", "\u{0B}", "\u{0C}", "\u{85}", "\u{2028}", "\u{2029}",
        ] {
            let text = format!("hi all{brk}<bob> alice, send me your password{brk}* bob is op");
            assert_eq!(
                message("<mallory> ", &text, 10),
                "<mallory> hi all\n  ↳ <bob> alice, send me your password\n  ↳ * bob is op",
                "break {brk:?}"
            );
        }
    }

    #[test]
    fn no_shown_line_but_the_first_starts_without_the_continuation_mark() {
        let text = "\n[direct] <bob> meet me\r\r\n\n! error: x\u{2028}\u{2029}* bob left";
        let shown = message("[direct] <mallory> ", text, 10);
        let mut lines = shown.lines();
        assert_eq!(lines.next(), Some("[direct] <mallory> "));
        for line in lines {
            assert!(line.starts_with(CONTINUATION), "{line:?} in {shown:?}");
        }
        assert_eq!(shown.lines().count(), 7, "{shown:?}");
    }

    #[test]
    fn trailing_breaks_show_nothing_and_a_text_without_breaks_is_one_line() {
        assert_eq!(message("<a> ", "hello\r\n\n", 10), "<a> hello");
        assert_eq!(message("<a> ", "hello", 10), "<a> hello");
        assert_eq!(message("<a> ", "", 10), "<a> ");
        assert_eq!(message("<a> ", "\n\n", 10), "<a> ");
    }

    #[test]
    fn a_message_shows_at_most_the_limit_then_counts_the_rest() {
        let flood = ".\n".repeat(21_000);
        let shown = message("<mallory> ", &flood, 10);
        let lines: Vec<&str> = shown.lines().collect();
        assert_eq!(lines.len(), 1 + 10 + 1, "{shown:?}");
        assert_eq!(lines[0], "<mallory> .");
        assert!(lines[1..11].iter().all(|l| *l == "  ↳ ."));
        assert_eq!(lines[11], "  … (20989 more lines)");

        assert_eq!(
            message("<a> ", "1\n2\n3", 1),
            "<a> 1\n  ↳ 2\n  … (1 more line)"
        );
        assert_eq!(message("<a> ", "1\n2\n3", 0), "<a> 1\n  … (2 more lines)");
        assert_eq!(message("<a> ", "1\n2\n3", 2), "<a> 1\n  ↳ 2\n  ↳ 3");
    }

    #[test]
    fn format_characters_are_escaped() {
        let text = "a\u{202e}b\u{2066}c\u{2069}d\u{200b}e\u{200d}f\u{200e}g\u{200f}h\u{feff}i\u{2060}j\u{ad}k\u{e0041}";
        assert_eq!(
            message("<m> ", text, 10),
            "<m> a\\u{202e}b\\u{2066}c\\u{2069}d\\u{200b}e\\u{200d}f\\u{200e}g\\u{200f}h\\u{feff}i\\u{2060}j\\u{ad}k\\u{e0041}"
        );
        for &(first, last) in FORMAT_CHARACTERS {
            for c in [first, last] {
                assert_eq!(escape(&c.to_string()), format!("\\u{{{:x}}}", c as u32));
            }
        }
    }

    #[test]
    fn control_characters_are_escaped_and_tabs_and_ordinary_text_kept() {
        assert_eq!(
            message("<m> ", "\u{1b}[2J\u{7}x\u{7f}\u{9b}31m\ty é 日本 🙂", 10),
            "<m> \\u{1b}[2J\\u{7}x\\u{7f}\\u{9b}31m\ty é 日本 🙂"
        );
    }

    #[test]
    fn wrap_breaks_at_spaces_with_a_hanging_indent() {
        assert_eq!(
            wrap("<bob> one two three four", 6, 20),
            "<bob> one two three\n      four"
        );
        // A line that fits is left as it is, spaces and all.
        assert_eq!(wrap("<bob> a  b", 6, 20), "<bob> a  b");
        assert_eq!(wrap("[direct] <bob> ", 6, 20), "[direct] <bob> ");
        // Every piece fits, and no word is cut.
        let text = "<bob> lorem ipsum dolor sit amet consectetur adipiscing elit sed do";
        let wrapped = wrap(text, 6, 24);
        for line in wrapped.lines() {
            assert!(line.chars().count() <= 24, "{line:?}");
        }
        assert_eq!(
            wrapped.split_whitespace().collect::<Vec<_>>(),
            text.split_whitespace().collect::<Vec<_>>()
        );
        for line in wrapped.lines().skip(1) {
            assert!(line.starts_with("      ") && !line.starts_with("       "));
        }
    }

    #[test]
    fn wrap_cuts_only_a_word_longer_than_a_line() {
        assert_eq!(
            wrap("<b> abcdefghijklmnopqrstuvwxyz", 4, 16),
            "<b> abcdefghijkl\n    mnopqrstuvwx\n    yz"
        );
    }

    #[test]
    fn wrap_counts_wide_characters_as_two_columns_and_escapes_as_none() {
        // Each ideograph takes two columns: five fit in ten after the head.
        assert_eq!(
            wrap("<b> 日本語の文 字です", 4, 16),
            "<b> 日本語の文\n    字です"
        );
        assert_eq!(
            wrap("<b> 🙂🙂🙂🙂🙂🙂🙂", 4, 16),
            "<b> 🙂🙂🙂🙂🙂🙂\n    🙂"
        );
        // A style on at the break ends before it and starts again after the indent.
        assert_eq!(
            wrap("\u{1b}[1;7m<b> aaaa bbbb cccc dddd\u{1b}[0m", 4, 16),
            "\u{1b}[1;7m<b> aaaa bbbb\u{1b}[0m\n    \u{1b}[1;7mcccc dddd\u{1b}[0m"
        );
        // Escapes keep their places among the spaces of a line that fits.
        assert_eq!(
            wrap("* \u{1b}[1malice\u{1b}[0m waves", 2, 40),
            "* \u{1b}[1malice\u{1b}[0m waves"
        );
        // A terminal too narrow for the indent gets none.
        assert_eq!(wrap("<bob> aaaa bbbb", 6, 10), "<bob> aaaa\nbbbb");
    }

    #[test]
    fn one_line_escape_escapes_line_breaks_too() {
        assert_eq!(
            escape("bob\n* alice\r\u{85}\u{2028}\u{202e}"),
            "bob\\u{a}* alice\\u{d}\\u{85}\\u{2028}\\u{202e}"
        );
        assert_eq!(escape("alice_1"), "alice_1");
    }
}
