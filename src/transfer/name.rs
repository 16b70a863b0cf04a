//! A file name a peer offered, made safe to create in the download folder: the name alone (no
//! folders), nothing invisible or misleading in it, no leading dot (not hidden, not `..`), no
//! name Windows reserves, short enough for every file system with room for the partial file's
//! and ` (N)`'s additions. What a mature browser's download manager does, for the same reasons:
//! the name is chosen by someone else.

/// Longest safe name, in bytes: 255 (the common file-name limit) less what the partial file's name
/// adds (a dot, a dot and the 32-digit transfer id, `.p2pchat-part`) and room for ` (999)`.
pub const MAX_NAME_BYTES: usize = 200;

/// The name given when nothing of the offered one survives.
pub const DEFAULT_NAME: &str = "download";

/// Longest extension kept whole when a long name is shortened.
const MAX_KEPT_EXTENSION_BYTES: usize = 16;

/// Names Windows reserves for devices, with or without an extension (`con.txt` too): harmless
/// here, but the file would be lost on a copy to a Windows share or a USB stick.
const WINDOWS_RESERVED: [&str; 22] = [
    "con", "prn", "aux", "nul", "com1", "com2", "com3", "com4", "com5", "com6", "com7", "com8",
    "com9", "lpt1", "lpt2", "lpt3", "lpt4", "lpt5", "lpt6", "lpt7", "lpt8", "lpt9",
];

/// Characters replaced by `_`: what Windows file systems refuse (a copy would fail), besides the
/// separators, which never reach here.
const REFUSED_ON_WINDOWS: [char; 7] = ['<', '>', ':', '"', '|', '?', '*'];

/// Whether `c` is invisible or changes how text around it reads: control characters (C0, C1,
/// DEL), Unicode format characters (bidirectional embeddings, overrides and isolates, zero-width
/// characters, the byte-order mark, soft hyphen, tags) and the line and paragraph separators.
/// `invoice` U+202E `fdp.exe` must not read as `invoiceexe.pdf`.
fn is_hidden_or_misleading(c: char) -> bool {
    c.is_control()
        || matches!(c,
            '\u{00AD}'
            | '\u{034F}'
            | '\u{061C}'
            | '\u{0600}'..='\u{0605}'
            | '\u{06DD}'
            | '\u{070F}'
            | '\u{115F}'..='\u{1160}'
            | '\u{17B4}'..='\u{17B5}'
            | '\u{180B}'..='\u{180F}'
            | '\u{200B}'..='\u{200F}'
            | '\u{2028}'..='\u{202E}'
            | '\u{2060}'..='\u{206F}'
            | '\u{3164}'
            | '\u{FE00}'..='\u{FE0F}'
            | '\u{FEFF}'
            | '\u{FFA0}'
            | '\u{FFF0}'..='\u{FFFB}'
            | '\u{110BD}'
            | '\u{110CD}'
            | '\u{1D173}'..='\u{1D17A}'
            | '\u{E0000}'..='\u{E0FFF}')
}

/// The safe form of `offered`: the last path component (either separator), every hidden or
/// misleading character and every character Windows refuses as `_`, leading dots and spaces and
/// trailing dots and spaces removed, a Windows device name prefixed with `_`, shortened to
/// [`MAX_NAME_BYTES`] on a character boundary (the extension kept when short), and
/// [`DEFAULT_NAME`] when nothing is left.
pub fn safe_name(offered: &str) -> String {
    // The last component: `../../.bashrc` is `.bashrc`, `C:\x\report.pdf` is `report.pdf`.
    let last = offered
        .rsplit(['/', '\\'])
        .find(|part| !part.is_empty())
        .unwrap_or("");
    let cleaned: String = last
        .chars()
        .map(|c| {
            if is_hidden_or_misleading(c) || REFUSED_ON_WINDOWS.contains(&c) {
                '_'
            } else {
                c
            }
        })
        .collect();
    // No leading dot (hidden; `.` and `..`), no leading space; no trailing dot or space (Windows
    // drops them, and `report.pdf ` hides its real end).
    let trimmed = cleaned
        .trim_start_matches(['.', ' '])
        .trim_end_matches(['.', ' ']);
    let mut name = trimmed.to_string();
    let stem = name.split('.').next().unwrap_or("").trim_end_matches(' ');
    if WINDOWS_RESERVED.contains(&stem.to_ascii_lowercase().as_str()) {
        name.insert(0, '_');
    }
    let name = shorten(&name, MAX_NAME_BYTES);
    if name.is_empty() {
        DEFAULT_NAME.to_string()
    } else {
        name
    }
}

/// `name` cut to at most `max` bytes on a character boundary, keeping a short extension whole
/// (`long….pdf`), and never ending in a dot or a space.
fn shorten(name: &str, max: usize) -> String {
    if name.len() <= max {
        return name.to_string();
    }
    let (stem, extension) = split_extension(name);
    let keep = if extension.len() <= MAX_KEPT_EXTENSION_BYTES {
        extension
    } else {
        ""
    };
    let room = max - keep.len();
    let mut end = room.min(stem.len());
    while !stem.is_char_boundary(end) {
        end -= 1;
    }
    let cut = stem[..end].trim_end_matches(['.', ' ']);
    format!("{cut}{keep}")
}

/// A name's stem and its extension with the dot (`report`, `.pdf`); `.tar.gz` and its kin stay
/// whole (`archive`, `.tar.gz`). No extension: `("name", "")`.
pub fn split_extension(name: &str) -> (&str, &str) {
    let Some(dot) = name.rfind('.').filter(|&dot| dot > 0) else {
        return (name, "");
    };
    let stem = &name[..dot];
    if let Some(tar) = stem.len().checked_sub(4).filter(|&at| {
        stem.is_char_boundary(at) && stem[at..].eq_ignore_ascii_case(".tar") && at > 0
    }) {
        return (&name[..tar], &name[tar..]);
    }
    (stem, &name[dot..])
}

/// The `n`th name to try when `name` is taken: `report (1).pdf`, `archive (2).tar.gz`.
pub fn numbered(name: &str, n: u32) -> String {
    let (stem, extension) = split_extension(name);
    format!("{stem} ({n}){extension}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_separators_and_parent_folders_leave_only_the_last_name() {
        assert_eq!(safe_name("../../.bashrc"), "bashrc");
        assert_eq!(safe_name("/etc/passwd"), "passwd");
        assert_eq!(safe_name("..\\..\\Windows\\win.ini"), "win.ini");
        assert_eq!(safe_name("a/b/"), "b");
        assert_eq!(safe_name(".."), DEFAULT_NAME);
        assert_eq!(safe_name("../.."), DEFAULT_NAME);
        assert_eq!(safe_name("/"), DEFAULT_NAME);
        for name in ["../../.bashrc", "/etc/passwd", "..", "a/../b"] {
            let safe = safe_name(name);
            assert!(!safe.contains('/') && !safe.contains('\\'), "{safe}");
            assert!(!safe.starts_with('.'), "{safe}");
        }
    }

    #[test]
    fn control_format_and_bidi_characters_are_replaced() {
        assert_eq!(safe_name("report\n.pdf"), "report_.pdf");
        assert_eq!(safe_name("a\r\tb\u{7f}\u{85}"), "a__b__");
        assert_eq!(safe_name("invoice\u{202E}fdp.exe"), "invoice_fdp.exe");
        assert_eq!(safe_name("x\u{2066}y\u{2069}\u{200B}\u{FEFF}"), "x_y___");
        assert_eq!(safe_name("tag\u{E0041}"), "tag_");
        let safe = safe_name("\u{202E}\u{2067}\n");
        assert_eq!(safe, "___");
        assert!(!safe_name("line\u{2028}sep").contains('\u{2028}'));
    }

    #[test]
    fn leading_dots_and_trailing_dots_and_spaces_are_removed() {
        assert_eq!(safe_name(".hidden"), "hidden");
        assert_eq!(safe_name("...x"), "x");
        assert_eq!(safe_name(" . report.pdf . "), "report.pdf");
        assert_eq!(safe_name(""), DEFAULT_NAME);
        assert_eq!(safe_name("   "), DEFAULT_NAME);
    }

    #[test]
    fn windows_device_names_are_neutralised() {
        assert_eq!(safe_name("con"), "_con");
        assert_eq!(safe_name("CON"), "_CON");
        assert_eq!(safe_name("nul.txt"), "_nul.txt");
        assert_eq!(safe_name("Com1.tar.gz"), "_Com1.tar.gz");
        assert_eq!(safe_name("lpt9"), "_lpt9");
        assert_eq!(safe_name("console"), "console");
        assert_eq!(safe_name("a:b?c*d|e\"f<g>h"), "a_b_c_d_e_f_g_h");
    }

    #[test]
    fn long_names_are_cut_by_bytes_on_a_character_boundary_keeping_the_extension() {
        let long = format!("{}.pdf", "é".repeat(300));
        let safe = safe_name(&long);
        assert!(safe.len() <= MAX_NAME_BYTES, "{}", safe.len());
        assert!(safe.ends_with(".pdf"), "{safe}");
        assert!(safe.len() >= MAX_NAME_BYTES - 1);
        let ascii = "x".repeat(1000);
        assert_eq!(safe_name(&ascii).len(), MAX_NAME_BYTES);
        let long_extension = format!("a.{}", "e".repeat(300));
        assert!(safe_name(&long_extension).len() <= MAX_NAME_BYTES);
        // Four-byte characters too.
        let emoji = "😀".repeat(100);
        let safe = safe_name(&emoji);
        assert!(safe.len() <= MAX_NAME_BYTES && safe.chars().all(|c| c == '😀'));
    }

    #[test]
    fn ordinary_names_are_kept_as_they_are() {
        for name in [
            "report.pdf",
            "Übersicht 2024.xlsx",
            "日本語.txt",
            "a b (1).tar.gz",
        ] {
            assert_eq!(safe_name(name), name);
        }
    }

    #[test]
    fn numbered_names_go_before_the_extension() {
        assert_eq!(numbered("report.pdf", 1), "report (1).pdf");
        assert_eq!(numbered("archive.tar.gz", 2), "archive (2).tar.gz");
        assert_eq!(numbered("README", 3), "README (3)");
        assert_eq!(numbered("_con.tar", 1), "_con (1).tar");
    }
}
