//! The bill as files: `bill-<period>.json` and `bill-<period>.csv`, written atomically.

use std::path::Path;

use super::ExportError;
use crate::bill::{render, Bill};

pub fn write(dir: &Path, bill: &Bill) -> Result<String, ExportError> {
    std::fs::create_dir_all(dir)?;
    for (extension, text) in [("json", render::json(bill)), ("csv", render::csv(bill))] {
        let path = dir.join(format!("bill-{}.{extension}", bill.period));
        let tmp = path.with_extension(format!("{extension}.tmp"));
        std::fs::write(&tmp, text)?;
        std::fs::rename(&tmp, &path)?;
    }
    Ok(format!(
        "bill-{}.json and .csv in {}",
        bill.period,
        dir.display()
    ))
}
