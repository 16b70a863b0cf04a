//! The accounts in memory, indexed by name and by [`skeleton`] so that a registration's checks
//! (taken? like an existing name?) cost the same whatever the number of accounts.

use std::collections::HashMap;
use std::path::Path;

use super::error::AuthError;
use super::file::{Accounts, StoredUser};
use crate::rules::{name_key, skeleton};

/// The accounts as last read from or written to the users file, with an index by [`skeleton`].
pub(super) struct Index {
    /// Keyed by [`name_key`].
    pub(super) accounts: Accounts,
    /// The skeleton of every account's name, and the first account (in key order) with it.
    skeletons: HashMap<String, String>,
}

impl Index {
    pub(super) fn new(accounts: Accounts) -> Index {
        let mut skeletons = HashMap::with_capacity(accounts.len());
        for user in accounts.values() {
            skeletons
                .entry(skeleton(&user.username))
                .or_insert_with(|| user.username.clone());
        }
        Index {
            accounts,
            skeletons,
        }
    }

    pub(super) fn insert(&mut self, key: String, user: StoredUser) {
        self.skeletons
            .entry(skeleton(&user.username))
            .or_insert_with(|| user.username.clone());
        self.accounts.insert(key, user);
    }
}

/// Whether `username` may be registered beside the accounts in `index`: not the same name
/// (ignoring case), and not a look-alike of one ([`skeleton`]). O(1) in the number of accounts.
pub(super) fn check_free(index: &Index, username: &str) -> Result<(), AuthError> {
    if index.accounts.contains_key(&name_key(username)) {
        return Err(AuthError::NameTaken);
    }
    match index.skeletons.get(&skeleton(username)) {
        Some(existing) => Err(AuthError::NameTooSimilar {
            existing: existing.clone(),
        }),
        None => Ok(()),
    }
}

/// Logs a warning for each group of accounts in `accounts` whose names look alike.
pub(super) fn warn_about_look_alikes(path: &Path, accounts: &Accounts) {
    let mut by_skeleton: std::collections::BTreeMap<String, Vec<&str>> = Default::default();
    for user in accounts.values() {
        by_skeleton
            .entry(skeleton(&user.username))
            .or_default()
            .push(&user.username);
    }
    for names in by_skeleton.values().filter(|names| names.len() > 1) {
        log::warn!(
            "users file {}: accounts {names:?} have look-alike names; each logs in as before, \
             and no new name like them is accepted",
            path.display()
        );
    }
}
