//! Writing a dataset to a file: NDJSON of resources, or NDJSON of FHIR
//! transaction Bundles.
//!
//! This is the crate's only IO, and it only writes to the `Write` it is given.

use std::io::{self, BufWriter, Write};
use std::path::Path;

use serde_json::{Value, json};

use crate::Generator;

/// Most entries in one transaction Bundle written by [`write()`]; servers commonly
/// cap transactions near this size, and a patient's record (≤ ~1,000 resources)
/// fits in one.
pub const MAX_ENTRIES_PER_BUNDLE: usize = 1000;

/// Base of the absolute `fullUrl` of every Bundle entry (`<base>/<Type>/<id>`).
/// References in the resources are relative (`Patient/pat-000001`), so they
/// resolve against this base to entries in the same Bundle, whatever server the
/// Bundle is sent to.
pub const BUNDLE_FULL_URL_BASE: &str = "https://zorgnet.example/fhir";

/// Bytes buffered between the serializer and the caller's writer.
const OUTPUT_BUFFER_BYTES: usize = 1 << 16;

/// How [`write()`] lays out a dataset.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutputFormat {
    /// Newline-delimited JSON, one resource per line (FHIR bulk-data style).
    Ndjson,
    /// Newline-delimited JSON, one complete `transaction` Bundle per line. Each
    /// Bundle has at most [`MAX_ENTRIES_PER_BUNDLE`] entries; each entry has a
    /// `fullUrl` under [`BUNDLE_FULL_URL_BASE`] and the request
    /// `PUT <Type>/<id>`, so loading is idempotent. A patient's record is never
    /// split over Bundles unless it alone exceeds the maximum, and Bundles come
    /// in dependency order: POSTing the lines one by one to a FHIR server's base
    /// URL leaves no dangling reference at any point. The file as a whole is
    /// not one JSON document.
    TransactionBundles,
}

impl OutputFormat {
    /// The format for an output path: `.json` → [`OutputFormat::TransactionBundles`];
    /// anything else (`.ndjson`, `.jsonl`, no extension) → [`OutputFormat::Ndjson`].
    pub fn from_path(path: &Path) -> OutputFormat {
        match path.extension().and_then(|extension| extension.to_str()) {
            Some(extension) if extension.eq_ignore_ascii_case("json") => {
                OutputFormat::TransactionBundles
            }
            _ => OutputFormat::Ndjson,
        }
    }
}

/// Writes every resource of `generator` to `out` in `format` and returns the
/// number of resources written. `progress` is called with the running count of
/// resources after the directory and after each patient (for a progress bar).
///
/// Output is buffered internally and flushed before returning. Errors come only
/// from `out`.
pub fn write<W: Write>(
    generator: &Generator,
    format: OutputFormat,
    out: W,
    mut progress: impl FnMut(u64),
) -> io::Result<u64> {
    let mut out = BufWriter::with_capacity(OUTPUT_BUFFER_BYTES, out);
    let mut written = 0u64;
    match format {
        OutputFormat::Ndjson => {
            for resource in generator.directory_groups().into_iter().flatten() {
                write_line(&mut out, &resource)?;
                written += 1;
            }
            progress(written);
            for index in 0..generator.config().patients {
                for resource in generator.patient_resources(index) {
                    write_line(&mut out, &resource)?;
                    written += 1;
                }
                progress(written);
            }
        }
        OutputFormat::TransactionBundles => {
            let mut packer = BundlePacker {
                pending: Vec::with_capacity(MAX_ENTRIES_PER_BUNDLE),
                out: &mut out,
            };
            for group in generator.directory_groups() {
                written += group.len() as u64;
                packer.add_group(group)?;
            }
            progress(written);
            for index in 0..generator.config().patients {
                let group = generator.patient_resources(index);
                written += group.len() as u64;
                packer.add_group(group)?;
                progress(written);
            }
            packer.flush()?;
        }
    }
    out.flush()?;
    Ok(written)
}

/// A `transaction` Bundle that PUTs each resource at `<Type>/<id>`.
pub fn transaction_bundle(resources: Vec<Value>) -> Value {
    let entries: Vec<Value> = resources
        .into_iter()
        .map(|resource| {
            let url = format!(
                "{}/{}",
                resource["resourceType"].as_str().unwrap_or_default(),
                resource["id"].as_str().unwrap_or_default()
            );
            json!({
                "fullUrl": format!("{BUNDLE_FULL_URL_BASE}/{url}"),
                "resource": resource,
                "request": { "method": "PUT", "url": url },
            })
        })
        .collect();
    json!({ "resourceType": "Bundle", "type": "transaction", "entry": entries })
}

/// Packs groups of resources into Bundles, keeping each group whole if it fits.
struct BundlePacker<'w, W: Write> {
    pending: Vec<Value>,
    out: &'w mut W,
}

impl<W: Write> BundlePacker<'_, W> {
    fn add_group(&mut self, group: Vec<Value>) -> io::Result<()> {
        if self.pending.len() + group.len() > MAX_ENTRIES_PER_BUNDLE {
            self.flush()?;
        }
        for resource in group {
            if self.pending.len() == MAX_ENTRIES_PER_BUNDLE {
                self.flush()?;
            }
            self.pending.push(resource);
        }
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let resources = std::mem::replace(
            &mut self.pending,
            Vec::with_capacity(MAX_ENTRIES_PER_BUNDLE),
        );
        write_line(self.out, &transaction_bundle(resources))
    }
}

fn write_line<W: Write>(out: &mut W, value: &Value) -> io::Result<()> {
    serde_json::to_writer(&mut *out, value)?;
    out.write_all(b"\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_from_path() {
        assert_eq!(
            OutputFormat::from_path(Path::new("out.ndjson")),
            OutputFormat::Ndjson
        );
        assert_eq!(
            OutputFormat::from_path(Path::new("out.json")),
            OutputFormat::TransactionBundles
        );
        assert_eq!(
            OutputFormat::from_path(Path::new("OUT.JSON")),
            OutputFormat::TransactionBundles
        );
        assert_eq!(
            OutputFormat::from_path(Path::new("out")),
            OutputFormat::Ndjson
        );
    }

    #[test]
    fn bundle_entries_put_at_type_and_id() {
        let bundle = transaction_bundle(vec![
            json!({ "resourceType": "Patient", "id": "pat-000001" }),
        ]);
        assert_eq!(bundle["type"], "transaction");
        assert_eq!(
            bundle["entry"][0]["request"],
            json!({ "method": "PUT", "url": "Patient/pat-000001" })
        );
        assert_eq!(
            bundle["entry"][0]["fullUrl"],
            "https://zorgnet.example/fhir/Patient/pat-000001"
        );
    }
}
