//! The usage report: the answer of `provd_client_usage`, who used what from the daemon's
//! usage ledger.
//!
//! One object the caller frees, read through accessors that fill small C structs whose
//! strings ([`provd_str`]) point into the object; views, not copies. The object is
//! immutable, so any thread may read it at once.

use ::provd_client::message::{UsageBy, UsageReport, UsageRow};

use crate::args::{self, at};
use crate::error::Error;
use crate::panic::accessor;
use crate::status::provd_status;
use crate::{provd_str, NulString};

/// How `provd_client_usage` groups a window's generations: one row per user, provider,
/// model asked (`provider/model`), token, or UTC day (`YYYY-MM-DD`).
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum provd_usage_by {
    /// One row per uid, with its user name where the host knows it.
    PROVD_USAGE_BY_USER = 0,
    /// One row per provider id.
    PROVD_USAGE_BY_PROVIDER = 1,
    /// One row per `provider/model` asked for.
    PROVD_USAGE_BY_MODEL = 2,
    /// One row per token id, and one (key absent) for generations without a token.
    PROVD_USAGE_BY_TOKEN = 3,
    /// One row per UTC calendar day.
    PROVD_USAGE_BY_DAY = 4,
}

/// Passed as `since_ms` or `until_ms` to `provd_client_usage`: the daemon's default (the
/// window ends now and starts 7 days before its end).
pub const PROVD_USAGE_DEFAULT_TIME: u64 = 0xFFFF_FFFF_FFFF_FFFF;

/// The grouping a caller passed as a plain integer (a C enum may hold any value, and a
/// Rust enum that does is undefined behaviour).
pub(crate) fn usage_by(by: u32) -> Result<UsageBy, Error> {
    use provd_usage_by as B;
    Ok(match by {
        x if x == B::PROVD_USAGE_BY_USER as u32 => UsageBy::User,
        x if x == B::PROVD_USAGE_BY_PROVIDER as u32 => UsageBy::Provider,
        x if x == B::PROVD_USAGE_BY_MODEL as u32 => UsageBy::Model,
        x if x == B::PROVD_USAGE_BY_TOKEN as u32 => UsageBy::Token,
        x if x == B::PROVD_USAGE_BY_DAY as u32 => UsageBy::Day,
        other => {
            return Err(Error::invalid(
                "by",
                format!("must be a provd_usage_by (0 to 4), got {other}"),
            ))
        }
    })
}

fn by_value(by: UsageBy) -> u32 {
    (match by {
        UsageBy::User => provd_usage_by::PROVD_USAGE_BY_USER,
        UsageBy::Provider => provd_usage_by::PROVD_USAGE_BY_PROVIDER,
        UsageBy::Model => provd_usage_by::PROVD_USAGE_BY_MODEL,
        UsageBy::Token => provd_usage_by::PROVD_USAGE_BY_TOKEN,
        UsageBy::Day => provd_usage_by::PROVD_USAGE_BY_DAY,
    }) as u32
}

struct Row {
    key: Option<NulString>,
    user: Option<NulString>,
    figures: UsageRow,
}

impl Row {
    fn new(row: UsageRow) -> Row {
        Row {
            key: row.key.clone().map(NulString::new),
            user: row.user.clone().map(NulString::new),
            figures: row,
        }
    }
}

/// Who used what in a window. Made by `provd_client_usage`, freed by
/// `provd_usage_report_free`.
pub struct provd_usage_report {
    report: UsageReport,
    rows: Vec<Row>,
    total: Row,
    unpriced: Vec<NulString>,
}

impl provd_usage_report {
    pub(crate) fn new(mut report: UsageReport) -> provd_usage_report {
        let rows = std::mem::take(&mut report.rows)
            .into_iter()
            .map(Row::new)
            .collect();
        let total = Row::new(std::mem::take(&mut report.total));
        let unpriced = std::mem::take(&mut report.unpriced)
            .into_iter()
            .map(NulString::new)
            .collect();
        provd_usage_report {
            report,
            rows,
            total,
            unpriced,
        }
    }
}

/// The report as a whole, as a view into a `provd_usage_report`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct provd_usage_info {
    /// The grouping of the rows: a `provd_usage_by` value.
    pub by: u32,
    /// The window's start, in milliseconds since the Unix epoch (inclusive).
    pub since_ms: u64,
    /// The window's end, in milliseconds since the Unix epoch (exclusive).
    pub until_ms: u64,
    /// Whether the report is limited to one uid (`uid`): the user asked for, or the
    /// caller's own uid when the connection is not an admin's.
    pub has_uid: bool,
    /// That uid, when `has_uid`.
    pub uid: u32,
    /// How many rows `provd_usage_report_row` can read: at most 5000.
    pub rows_len: usize,
    /// Rows left out past those (the totals include them).
    pub rows_omitted: u64,
    /// Whether the daemon's configuration prices any model (`[prices]`).
    pub priced: bool,
    /// How many models of the window have no price (`provd_usage_report_unpriced`).
    pub unpriced_len: usize,
}

/// One row of a report (or its totals), as a view into a `provd_usage_report`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct provd_usage_row {
    /// What the row counts: the user name (the uid in decimal when the host does not
    /// know it), the provider id, `provider/model`, the token id, or the UTC date.
    /// Absent (NULL data) for generations of an unknown uid, those without a token, and
    /// the totals.
    pub key: provd_str,
    /// When grouped by user: whether `uid` is known.
    pub has_uid: bool,
    /// When grouped by user: the uid.
    pub uid: u32,
    /// When grouped by user: the user name; absent when the host does not know it.
    pub user: provd_str,
    /// Generations.
    pub requests: u64,
    /// Of them, those that completed.
    pub completed: u64,
    /// Those that failed (an error other than a cancel).
    pub failed: u64,
    /// Those cancelled.
    pub cancelled: u64,
    /// Prompt tokens.
    pub prompt_tokens: u64,
    /// Completion tokens (reasoning included).
    pub completion_tokens: u64,
    /// Of the completion tokens, those spent reasoning, where the provider said.
    pub reasoning_tokens: u64,
    /// Whether `cost` is known: false when some model of the row has no price.
    pub has_cost: bool,
    /// The cost at the configured prices, in their currency, when `has_cost`.
    pub cost: f64,
}

fn row_view(row: &Row) -> provd_usage_row {
    let f = &row.figures;
    provd_usage_row {
        key: NulString::lend_opt(&row.key),
        has_uid: f.uid.is_some(),
        uid: f.uid.unwrap_or(0),
        user: NulString::lend_opt(&row.user),
        requests: f.requests,
        completed: f.completed,
        failed: f.failed,
        cancelled: f.cancelled,
        prompt_tokens: f.prompt_tokens,
        completion_tokens: f.completion_tokens,
        reasoning_tokens: f.reasoning_tokens,
        has_cost: f.cost.is_some(),
        cost: f.cost.unwrap_or(0.0),
    }
}

/// The report's window, grouping and sizes, through `info_out`.
///
/// Returns `PROVD_NULL_ARGUMENT` if an argument is NULL. Thread-safe.
#[no_mangle]
pub extern "C" fn provd_usage_report_info(
    report: *const provd_usage_report,
    info_out: *mut provd_usage_info,
) -> provd_status {
    accessor!(|| {
        // SAFETY: the header requires a live report and a NULL or writable `info_out`.
        let (r, out) = unsafe {
            (
                args::handle(report, "report")?,
                args::out(info_out, "info_out")?,
            )
        };
        out.write(provd_usage_info {
            by: by_value(r.report.by),
            since_ms: r.report.since_ms,
            until_ms: r.report.until_ms,
            has_uid: r.report.uid.is_some(),
            uid: r.report.uid.unwrap_or(0),
            rows_len: r.rows.len(),
            rows_omitted: r.report.rows_omitted,
            priced: r.report.priced,
            unpriced_len: r.unpriced.len(),
        });
        Ok(())
    })
}

/// Row number `index` of `report`, through `row_out`; its strings point into `report`.
///
/// Returns `PROVD_NULL_ARGUMENT` if an argument is NULL, `PROVD_INVALID_ARGUMENT` if
/// `index` is out of range. Thread-safe.
#[no_mangle]
pub extern "C" fn provd_usage_report_row(
    report: *const provd_usage_report,
    index: usize,
    row_out: *mut provd_usage_row,
) -> provd_status {
    accessor!(|| {
        // SAFETY: the header requires a live report and a NULL or writable `row_out`.
        let (r, out) = unsafe {
            (
                args::handle(report, "report")?,
                args::out(row_out, "row_out")?,
            )
        };
        out.write(row_view(at(&r.rows, index, "usage report")?));
        Ok(())
    })
}

/// The totals of `report` (every generation of the window, rows left out included),
/// through `row_out`; its key is absent.
///
/// Returns `PROVD_NULL_ARGUMENT` if an argument is NULL. Thread-safe.
#[no_mangle]
pub extern "C" fn provd_usage_report_total(
    report: *const provd_usage_report,
    row_out: *mut provd_usage_row,
) -> provd_status {
    accessor!(|| {
        // SAFETY: the header requires a live report and a NULL or writable `row_out`.
        let (r, out) = unsafe {
            (
                args::handle(report, "report")?,
                args::out(row_out, "row_out")?,
            )
        };
        out.write(row_view(&r.total));
        Ok(())
    })
}

/// Model number `index` (`provider/model`) of those in the window without a price,
/// through `model_out`; it points into `report`. Rows that include such a model, and
/// the totals, have no cost.
///
/// Returns `PROVD_NULL_ARGUMENT` if an argument is NULL, `PROVD_INVALID_ARGUMENT` if
/// `index` is out of range. Thread-safe.
#[no_mangle]
pub extern "C" fn provd_usage_report_unpriced(
    report: *const provd_usage_report,
    index: usize,
    model_out: *mut provd_str,
) -> provd_status {
    accessor!(|| {
        // SAFETY: the header requires a live report and a NULL or writable `model_out`.
        let (r, out) = unsafe {
            (
                args::handle(report, "report")?,
                args::out(model_out, "model_out")?,
            )
        };
        out.write(at(&r.unpriced, index, "unpriced model list")?.lend());
        Ok(())
    })
}

/// Frees a usage report. NULL is ignored; views into it become invalid.
#[no_mangle]
pub extern "C" fn provd_usage_report_free(report: *mut provd_usage_report) {
    crate::panic::free(|| {
        // SAFETY: the header requires NULL or a report from this library, freed once.
        drop(unsafe { args::take(report) });
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> provd_usage_report {
        provd_usage_report::new(UsageReport {
            by: UsageBy::User,
            since_ms: 1,
            until_ms: 2,
            uid: Some(1000),
            rows: vec![UsageRow {
                key: Some("alice".into()),
                uid: Some(1000),
                user: Some("alice".into()),
                requests: 3,
                prompt_tokens: 7,
                cost: Some(0.5),
                ..UsageRow::default()
            }],
            total: UsageRow {
                requests: 3,
                ..UsageRow::default()
            },
            priced: true,
            unpriced: vec!["p/m".into()],
            ..UsageReport::default()
        })
    }

    #[test]
    fn a_reports_rows_totals_and_unpriced_models_are_read_by_index() {
        let report = sample();
        let mut info = std::mem::MaybeUninit::<provd_usage_info>::uninit();
        assert_eq!(
            provd_usage_report_info(&report, info.as_mut_ptr()),
            provd_status::PROVD_OK
        );
        // SAFETY: written by the call that returned OK.
        let info = unsafe { info.assume_init() };
        assert_eq!((info.by, info.has_uid, info.uid), (0, true, 1000));
        assert_eq!(
            (info.rows_len, info.unpriced_len, info.priced),
            (1, 1, true)
        );
        let mut row = std::mem::MaybeUninit::<provd_usage_row>::uninit();
        assert_eq!(
            provd_usage_report_row(&report, 0, row.as_mut_ptr()),
            provd_status::PROVD_OK
        );
        // SAFETY: written by the call that returned OK.
        let row = unsafe { row.assume_init() };
        assert_eq!((row.key.len, row.user.len, row.uid), (5, 5, 1000));
        assert_eq!((row.requests, row.prompt_tokens), (3, 7));
        assert!(row.has_cost && row.cost == 0.5);
        assert_eq!(
            provd_usage_report_row(&report, 1, std::ptr::dangling_mut()),
            provd_status::PROVD_INVALID_ARGUMENT
        );
        let mut total = std::mem::MaybeUninit::<provd_usage_row>::uninit();
        assert_eq!(
            provd_usage_report_total(&report, total.as_mut_ptr()),
            provd_status::PROVD_OK
        );
        // SAFETY: written by the call that returned OK.
        let total = unsafe { total.assume_init() };
        assert!(total.key.data.is_null(), "the totals have no key");
        assert!(!total.has_cost);
        let mut model = provd_str::ABSENT;
        assert_eq!(
            provd_usage_report_unpriced(&report, 0, &mut model),
            provd_status::PROVD_OK
        );
        assert_eq!(model.len, 3);
        assert_eq!(
            provd_usage_report_total(std::ptr::null(), total_ptr()),
            provd_status::PROVD_NULL_ARGUMENT
        );
    }

    fn total_ptr() -> *mut provd_usage_row {
        std::ptr::null_mut()
    }

    #[test]
    fn a_grouping_outside_the_enum_is_an_invalid_argument_naming_by() {
        assert_eq!(usage_by(4).unwrap(), UsageBy::Day);
        let e = usage_by(5).unwrap_err();
        assert_eq!(e.code, provd_status::PROVD_INVALID_ARGUMENT);
        assert!(
            e.message.as_str().contains("argument `by`"),
            "{:?}",
            e.message
        );
        for by in UsageBy::ALL {
            assert_eq!(usage_by(by_value(by)).unwrap(), by);
        }
    }
}
