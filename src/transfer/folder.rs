//! Which folder received files go to: `--download-dir` when given; else the XDG download folder
//! (`$XDG_DOWNLOAD_DIR`, else the `XDG_DOWNLOAD_DIR` line of `user-dirs.dirs` in
//! `$XDG_CONFIG_HOME` or `~/.config`, as xdg-user-dirs writes it); else `~/Downloads`. Reads the
//! environment through a function, so tests pass their own.

use std::ffi::OsString;
use std::fs::DirBuilder;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use super::{DiskStep, TransferError};

/// The most of `user-dirs.dirs` read: the real file is a few hundred bytes.
const MAX_USER_DIRS_BYTES: u64 = 64 * 1024;

/// The download folder, or `None` when there is no `--download-dir`, no XDG setting and no
/// `HOME` to put `Downloads` in. `env` reads one environment variable (`std::env::var_os` in
/// the client).
pub fn download_folder(
    explicit: Option<&Path>,
    env: impl Fn(&str) -> Option<OsString>,
) -> Option<PathBuf> {
    if let Some(folder) = explicit {
        return Some(folder.to_path_buf());
    }
    let absolute =
        |value: Option<OsString>| value.map(PathBuf::from).filter(|path| path.is_absolute());
    if let Some(folder) = absolute(env("XDG_DOWNLOAD_DIR")) {
        return Some(folder);
    }
    let home = absolute(env("HOME"));
    let config = absolute(env("XDG_CONFIG_HOME")).or_else(|| Some(home.as_ref()?.join(".config")));
    if let (Some(config), Some(home)) = (config, home.as_ref()) {
        if let Some(folder) = read_user_dirs(&config.join("user-dirs.dirs"), home) {
            return Some(folder);
        }
    }
    Some(home?.join("Downloads"))
}

/// The download folder of an xdg-user-dirs file, if it names one other than the home folder
/// itself (which xdg-user-dirs writes for a folder it disabled).
fn read_user_dirs(file: &Path, home: &Path) -> Option<PathBuf> {
    use std::io::Read;
    let mut text = String::new();
    std::fs::File::open(file)
        .ok()?
        .take(MAX_USER_DIRS_BYTES)
        .read_to_string(&mut text)
        .ok()?;
    parse_user_dirs(&text, home)
}

/// The `XDG_DOWNLOAD_DIR="…"` line's folder: `$HOME/…` or an absolute path, in double quotes
/// (the format xdg-user-dirs writes; anything else is ignored, as xdg-user-dirs does).
pub fn parse_user_dirs(text: &str, home: &Path) -> Option<PathBuf> {
    // The last line wins, as when the shell sources the file.
    let line = text
        .lines()
        .map(str::trim)
        .filter(|line| !line.starts_with('#'))
        .rev()
        .find_map(|line| line.strip_prefix("XDG_DOWNLOAD_DIR="))?;
    let value = line.strip_prefix('"')?.strip_suffix('"')?;
    let value = value.replace("\\\"", "\"");
    let folder = if let Some(rest) = value.strip_prefix("$HOME") {
        let rest = rest.trim_start_matches('/');
        if rest.is_empty() {
            return None;
        }
        home.join(rest)
    } else if value.starts_with('/') {
        PathBuf::from(value)
    } else {
        return None;
    };
    (folder != home).then_some(folder)
}

/// Creates the download folder if it is missing (and the folders above it), the new ones
/// private to the user (0700): received files are nobody else's business.
///
/// # Errors
/// [`TransferError::Disk`] with [`DiskStep::CreateFolder`].
pub fn create_folder(folder: &Path) -> Result<(), TransferError> {
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(folder)
        .map_err(|e| TransferError::disk(DiskStep::CreateFolder, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<OsString> {
        let vars: HashMap<String, OsString> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), OsString::from(v)))
            .collect();
        move |name| vars.get(name).cloned()
    }

    #[test]
    fn the_flag_wins_then_the_xdg_variable_then_downloads_in_home() {
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path().to_str().unwrap();
        assert_eq!(
            download_folder(Some(Path::new("/srv/in")), env(&[("HOME", home)])),
            Some(PathBuf::from("/srv/in"))
        );
        assert_eq!(
            download_folder(None, env(&[("HOME", home), ("XDG_DOWNLOAD_DIR", "/d")])),
            Some(PathBuf::from("/d"))
        );
        assert_eq!(
            download_folder(None, env(&[("HOME", home), ("XDG_DOWNLOAD_DIR", "rel")])),
            Some(dir.path().join("Downloads"))
        );
        assert_eq!(download_folder(None, env(&[])), None);
    }

    #[test]
    fn user_dirs_dirs_is_read_from_the_config_folder() {
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path().join("home");
        let config = dir.path().join("config");
        std::fs::create_dir_all(&config).unwrap();
        std::fs::write(
            config.join("user-dirs.dirs"),
            "# written by xdg-user-dirs-update\nXDG_DESKTOP_DIR=\"$HOME/Desktop\"\nXDG_DOWNLOAD_DIR=\"$HOME/Téléchargements\"\n",
        )
        .unwrap();
        let vars = [
            ("HOME", home.to_str().unwrap()),
            ("XDG_CONFIG_HOME", config.to_str().unwrap()),
        ];
        assert_eq!(
            download_folder(None, env(&vars)),
            Some(home.join("Téléchargements"))
        );
        // Without XDG_CONFIG_HOME, ~/.config.
        std::fs::create_dir_all(home.join(".config")).unwrap();
        std::fs::write(
            home.join(".config/user-dirs.dirs"),
            "XDG_DOWNLOAD_DIR=\"/mnt/big/dl\"\n",
        )
        .unwrap();
        assert_eq!(
            download_folder(None, env(&[("HOME", home.to_str().unwrap())])),
            Some(PathBuf::from("/mnt/big/dl"))
        );
    }

    #[test]
    fn odd_user_dirs_lines_fall_back_to_downloads() {
        let home = Path::new("/home/u");
        assert_eq!(parse_user_dirs("XDG_DOWNLOAD_DIR=\"$HOME/\"", home), None);
        assert_eq!(parse_user_dirs("XDG_DOWNLOAD_DIR=$HOME/x", home), None);
        assert_eq!(parse_user_dirs("XDG_DOWNLOAD_DIR=\"x/y\"", home), None);
        assert_eq!(parse_user_dirs("#XDG_DOWNLOAD_DIR=\"/a\"", home), None);
        assert_eq!(
            parse_user_dirs("XDG_DOWNLOAD_DIR=\"$HOME/dl\"", home),
            Some(PathBuf::from("/home/u/dl"))
        );
    }

    #[test]
    fn a_created_folder_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let folder = dir.path().join("a/Downloads");
        create_folder(&folder).unwrap();
        let mode = std::fs::metadata(&folder).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
    }
}
