//! The custody suite: provd attacked by a hostile local user, who has a shell on the same
//! host under another uid. Each module is one way in (issue 11); the tests that need a
//! second uid switch to numeric uids with `setpriv` and are skipped, with a message, when
//! the suite does not run as root.
//!
//! Uids used, one range per module so parallel tests never share one:
//! squatting and trusted files 61000–61099, scrubbing 62000–62099, bounded caches
//! 63000–63099, admission, authorization and visibility 64000–64099.

mod admission;
mod authorization;
mod cache;
mod log_injection;
mod scrubbing;
mod squatting;
mod trusted_files;
mod visibility;
