//! Where the typed-line history lives: `$XDG_STATE_HOME/p2pchat/history`, else
//! `~/.local/state/p2pchat/history` (the XDG base directory spec's place for history), its folder
//! made private (0700). The file itself is written by the line editor, mode 0600, at most
//! `--history-lines` lines, one line appended per line typed. Only lines typed at the chat
//! prompt reach it: the login prompts and the password are read before the editor starts.

use std::io;
use std::path::{Path, PathBuf};

/// The history file's name inside the state folder.
pub const HISTORY_FILE: &str = "history";

/// The history file from the environment's values of `XDG_STATE_HOME` and `HOME`; `None` when
/// neither is set (to an absolute path, as the spec asks).
pub fn path_from(xdg_state_home: Option<&Path>, home: Option<&Path>) -> Option<PathBuf> {
    let state = match xdg_state_home.filter(|p| p.is_absolute()) {
        Some(state) => state.to_path_buf(),
        None => home
            .filter(|p| p.is_absolute())?
            .join(".local")
            .join("state"),
    };
    Some(state.join("p2pchat").join(HISTORY_FILE))
}

/// The history file for this process's environment.
pub fn default_path() -> Option<PathBuf> {
    let var = |name| std::env::var_os(name).map(PathBuf::from);
    path_from(var("XDG_STATE_HOME").as_deref(), var("HOME").as_deref())
}

/// Makes the file's folder (and its parents) if missing; the ones made here are 0700, for what
/// a person typed is nobody else's business.
///
/// # Errors
/// The folder cannot be made.
pub fn prepare(file: &Path) -> io::Result<()> {
    let Some(folder) = file.parent() else {
        return Ok(());
    };
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(folder)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xdg_state_home_first_then_home() {
        assert_eq!(
            path_from(Some(Path::new("/s")), Some(Path::new("/h"))),
            Some(PathBuf::from("/s/p2pchat/history"))
        );
        assert_eq!(
            path_from(None, Some(Path::new("/h"))),
            Some(PathBuf::from("/h/.local/state/p2pchat/history"))
        );
        assert_eq!(
            path_from(Some(Path::new("relative")), Some(Path::new("/h"))),
            Some(PathBuf::from("/h/.local/state/p2pchat/history"))
        );
        assert_eq!(path_from(None, None), None);
    }

    #[test]
    fn the_folder_made_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("state/p2pchat/history");
        prepare(&file).unwrap();
        let mode = std::fs::metadata(file.parent().unwrap())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o700);
    }
}
