//! The rules both sides follow: usernames and passwords, the key under which a name is unique,
//! the skeleton under which two names look alike, and the pace a server asks of a client when it
//! announces none. The server enforces them; the client checks them before it asks, so that a
//! typing mistake costs no round trip. Neither side's modules are needed here.
//!
//! Pure checks over strings: nothing here hashes, stores or logs. An error never quotes a
//! password.

/// Default for the server's `--flood-burst`, and the client's pace when a server announces none:
/// lines a client may send at once.
pub const DEFAULT_FLOOD_BURST: u32 = 10;

/// Default for the server's `--flood-rate`, and the client's pace when a server announces none:
/// lines per second a client may send once its burst is spent.
pub const DEFAULT_FLOOD_RATE: f64 = 5.0;

/// Longest username, in characters.
pub const MAX_USERNAME_CHARS: usize = 20;
/// Shortest password, in characters.
pub const MIN_PASSWORD_CHARS: usize = 8;
/// Longest password, in bytes: bounds the work a login request can ask of the hasher.
pub const MAX_PASSWORD_BYTES: usize = 1024;

/// Why a username breaks the rules.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UsernameError {
    /// Empty, or longer than [`MAX_USERNAME_CHARS`].
    #[error("a username has 1 to {MAX_USERNAME_CHARS} characters, this one has {chars}")]
    Length { chars: usize },
    /// The first character that is not an ASCII letter, ASCII digit, `_`, `-` or `.`.
    #[error("a username may hold only ASCII letters, digits, '_', '-' and '.', not {0:?}")]
    Character(char),
}

/// Why a new password breaks the rules (the password itself is never part of it).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PasswordError {
    /// More than [`MAX_PASSWORD_BYTES`] bytes.
    #[error("a password has at most {MAX_PASSWORD_BYTES} bytes")]
    TooLong,
    /// Fewer than [`MIN_PASSWORD_CHARS`] characters.
    #[error("a password has at least {MIN_PASSWORD_CHARS} characters")]
    TooShort,
}

/// Checks a username: 1 to 20 characters, each an ASCII letter, ASCII digit, `_`, `-` or `.`.
pub fn validate_username(name: &str) -> Result<(), UsernameError> {
    let chars = name.chars().count();
    if chars == 0 || chars > MAX_USERNAME_CHARS {
        return Err(UsernameError::Length { chars });
    }
    match name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')))
    {
        Some(bad) => Err(UsernameError::Character(bad)),
        None => Ok(()),
    }
}

/// Checks a new password's length.
pub fn validate_password(password: &str) -> Result<(), PasswordError> {
    if password.len() > MAX_PASSWORD_BYTES {
        return Err(PasswordError::TooLong);
    }
    if password.chars().count() < MIN_PASSWORD_CHARS {
        return Err(PasswordError::TooShort);
    }
    Ok(())
}

/// The key under which a name is unique: names differ only if they differ without regard to case.
pub fn name_key(name: &str) -> String {
    name.to_ascii_lowercase()
}

/// Characters that look alike in the username alphabet, each group with the one it stands for in
/// a [`skeleton`]: after case folding, `i`, `l` and `1` (`aIice`, `a1ice` and `alice` look the
/// same in many fonts), and `o` and `0`. Kept to these on purpose: in the terminal's fixed-width
/// font `rn` and `m` take different widths, and digits like `5`/`s` are told apart by most
/// readers; a longer table would refuse many honest names to stop few impersonations.
pub const LOOK_ALIKE: &[(&str, char)] = &[("il1", 'l'), ("o0", 'o')];

/// The key under which names look alike: case folded, then each character of a [`LOOK_ALIKE`]
/// group replaced by the group's character. A new name is refused when its skeleton is an
/// existing account's (`aIice` beside `alice`); logins still go by [`name_key`].
///
/// Folding comes first because it must: `I` is both a capital `i` and a look-alike of `l`, so
/// `i`, `l` and `1` form one class, and `ail` and `ali` count as alike too.
pub fn skeleton(name: &str) -> String {
    name.chars()
        .map(|c| {
            let folded = c.to_ascii_lowercase();
            LOOK_ALIKE
                .iter()
                .find(|(group, _)| group.contains(folded))
                .map_or(folded, |&(_, stands_for)| stands_for)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn username_rules() {
        for ok in ["a", "alice", "Bob_1", "x.y-z", &"n".repeat(20)] {
            assert_eq!(validate_username(ok), Ok(()), "{ok}");
        }
        for bad in ["", &"n".repeat(21), "al ice", "é", "a/b", "a:b", "\u{0}"] {
            assert!(validate_username(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn password_rules() {
        assert!(validate_password("1234567").is_err());
        assert!(validate_password("12345678").is_ok());
        assert!(validate_password(&"p".repeat(1024)).is_ok());
        let err = validate_password(&"p".repeat(1025)).unwrap_err();
        assert!(!err.to_string().contains("ppp"));
    }

    #[test]
    fn the_messages_are_the_ones_users_read() {
        assert_eq!(
            validate_username("").unwrap_err().to_string(),
            "a username has 1 to 20 characters, this one has 0"
        );
        assert_eq!(
            validate_username("a b").unwrap_err().to_string(),
            "a username may hold only ASCII letters, digits, '_', '-' and '.', not ' '"
        );
        assert_eq!(
            validate_password("short").unwrap_err().to_string(),
            "a password has at least 8 characters"
        );
        assert_eq!(
            validate_password(&"p".repeat(1025))
                .unwrap_err()
                .to_string(),
            "a password has at most 1024 bytes"
        );
    }

    #[test]
    fn names_are_unique_without_regard_to_case() {
        assert_eq!(name_key("Alice"), name_key("aLICE"));
        assert_ne!(name_key("alice"), name_key("alice."));
    }

    #[test]
    fn look_alike_names_have_one_skeleton() {
        for alike in ["alice", "ALICE", "aIice", "a1ice", "AL1CE", "ailce"] {
            assert_eq!(skeleton(alike), "allce", "{alike}");
        }
        assert_eq!(skeleton("b0b"), skeleton("BOB"));
        assert_eq!(skeleton("Oli.v1a_0"), "oll.vla_o");
        for different in ["alicia", "alice.", "alice_", "bob"] {
            assert_ne!(skeleton(different), skeleton("alice"), "{different}");
        }
        // Deliberately not alike: see LOOK_ALIKE.
        assert_ne!(skeleton("rnary"), skeleton("mary"));
    }

    #[test]
    fn a_skeleton_keeps_the_length_and_the_name_key_decides_less() {
        for name in ["alice", "Zz9._-", "IlI10oO"] {
            assert_eq!(skeleton(name).chars().count(), name.chars().count());
            assert_eq!(skeleton(&name_key(name)), skeleton(name));
        }
    }
}
