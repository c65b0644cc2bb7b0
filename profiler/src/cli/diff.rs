//! `profiler diff OLD NEW`: the CI gate's verb (the comparison is `confine::diff`).
use std::path::Path;

use crate::confine::diff::{Allowances, diff as compare, render_text};
use crate::exit::exit_error;

/// Exit 0 when NEW needs nothing OLD does not allow, 1 when it needs more, 2 on bad input.
pub fn diff(old: &Path, new: &Path, json: bool) -> anyhow::Result<i32> {
    let load = |p: &Path| Allowances::load(p).map_err(|e| exit_error(2, format!("{e:#}")));
    let d = compare(&load(old)?, &load(new)?);
    if json {
        println!("{}", serde_json::to_string_pretty(&d)?);
    } else {
        print!("{}", render_text(&d));
    }
    Ok(if d.needs_more { 1 } else { 0 })
}
