//! Checking a node's proof of one access-log record (`AuditEvent/{id}/$proof`, a FHIR
//! `Parameters`) without trusting the node: the record's exact bytes must be at their leaf
//! of the Merkle tree whose size and root the node's checkpoint states
//! (`zorgnet_audit::check_inclusion`), the checkpoint's text must be the one signed, its
//! origin the source's URA, and its Ed25519 signature must verify with the organisation's
//! checkpoint key when the portal knows it (`zorgnet_audit::Checkpoint::verify`).
//! What it is not: a consistency check between checkpoints over time (the hub's witness does
//! that) or a check of what the record says.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::Value;
use zorgnet_audit::{AuditRecord, Checkpoint, CheckpointJson, Hash, VerifyingKey, check_inclusion};

/// What a proof showed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Included, and the checkpoint is signed by the organisation's key.
    Verified,
    /// Included in the checkpoint's tree; the signature not checked (no key known).
    IncludedUnsigned,
    /// The proof does not hold, for this reason.
    Failed(String),
}

/// A checked proof.
#[derive(Debug, Clone)]
pub(crate) struct Checked {
    pub(crate) verdict: Verdict,
    /// The record as the proof gives it (shown as it stands).
    pub(crate) record: Option<AuditRecord>,
    pub(crate) leaf: u64,
    pub(crate) size: u64,
    /// The checkpoint's signing time (epoch milliseconds).
    pub(crate) signed_ms: i64,
}

fn parameter<'a>(parameters: &'a Value, name: &str) -> Option<&'a Value> {
    parameters["parameter"]
        .as_array()?
        .iter()
        .find(|p| p["name"] == name)
}

fn base64_of(parameters: &Value, name: &str) -> Result<Vec<u8>, String> {
    parameter(parameters, name)
        .and_then(|p| p["valueBase64Binary"].as_str())
        .and_then(|text| STANDARD.decode(text).ok())
        .ok_or_else(|| format!("{name} is missing or not base64"))
}

fn number_of(parameters: &Value, name: &str) -> Result<u64, String> {
    parameter(parameters, name)
        .and_then(|p| p["valueDecimal"].as_u64())
        .ok_or_else(|| format!("{name} is missing or not a whole number"))
}

/// The checkpoint of its signed text (`origin`, size, root, `chain …`, `time …`) and
/// signature, through the audit crate's own wire form.
fn checkpoint_of(text: &str, signature: &[u8]) -> Result<Checkpoint, String> {
    let lines: Vec<&str> = text.lines().collect();
    let [origin, size, root, chain, time] = lines.as_slice() else {
        return Err("the checkpoint text does not have five lines".into());
    };
    let wire = CheckpointJson {
        origin: origin.to_string(),
        size: size.parse().map_err(|_| "the checkpoint's size")?,
        root: root.to_string(),
        chain: chain
            .strip_prefix("chain ")
            .ok_or("the checkpoint's chain line")?
            .to_string(),
        signed_ms: time
            .strip_prefix("time ")
            .and_then(|t| t.parse().ok())
            .ok_or("the checkpoint's time line")?,
        signature: STANDARD.encode(signature),
    };
    let checkpoint = wire.parse().map_err(|e| e.to_string())?;
    if checkpoint.body() != text {
        return Err("the checkpoint text is not in its canonical form".into());
    }
    Ok(checkpoint)
}

/// Checks `parameters` (a `$proof` answer) for record `id` of the log of `ura`, with the
/// organisation's checkpoint `key` when known.
pub(crate) fn check(parameters: &Value, id: u64, ura: &str, key: Option<&VerifyingKey>) -> Checked {
    let mut checked = Checked {
        verdict: Verdict::Failed(String::new()),
        record: None,
        leaf: id,
        size: 0,
        signed_ms: 0,
    };
    checked.verdict = match check_all(parameters, id, ura, key, &mut checked) {
        Ok(verdict) => verdict,
        Err(reason) => Verdict::Failed(reason),
    };
    checked
}

fn check_all(
    parameters: &Value,
    id: u64,
    ura: &str,
    key: Option<&VerifyingKey>,
    checked: &mut Checked,
) -> Result<Verdict, String> {
    if parameters["resourceType"] != "Parameters" {
        return Err("the answer is not a Parameters resource".into());
    }
    let record = base64_of(parameters, "record")?;
    checked.record = serde_json::from_slice(&record).ok();
    let leaf = number_of(parameters, "leafIndex")?;
    let size = number_of(parameters, "treeSize")?;
    checked.leaf = leaf;
    checked.size = size;
    let root = Hash(
        base64_of(parameters, "treeRoot")?
            .try_into()
            .map_err(|_| "treeRoot is not 32 bytes")?,
    );
    let proof = parameters["parameter"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .filter(|p| p["name"] == "proofHash")
        .map(|p| {
            p["valueBase64Binary"]
                .as_str()
                .and_then(|text| STANDARD.decode(text).ok())
                .and_then(|bytes| <[u8; 32]>::try_from(bytes).ok())
                .map(Hash)
                .ok_or_else(|| "a proofHash is not 32 bytes of base64".to_string())
        })
        .collect::<Result<Vec<Hash>, String>>()?;
    let text = parameter(parameters, "checkpoint")
        .and_then(|p| p["valueString"].as_str())
        .ok_or("the checkpoint is missing")?;
    let checkpoint = checkpoint_of(text, &base64_of(parameters, "signature")?)?;
    checked.signed_ms = checkpoint.signed_ms;
    if leaf != id {
        return Err(format!("the proof is of record {leaf}, not of record {id}"));
    }
    if checkpoint.origin != ura {
        return Err(format!(
            "the checkpoint is of the log of {:?}, not of this source's ({ura})",
            checkpoint.origin
        ));
    }
    if (checkpoint.size, checkpoint.root) != (size, root) {
        return Err("the tree size and root differ from the checkpoint's".into());
    }
    if checked.record.is_none() {
        return Err("the record is not an access-log record".into());
    }
    if !check_inclusion(&proof, size, root, leaf, &record) {
        return Err("the record is not in the checkpoint's tree at its place".into());
    }
    match key {
        Some(key) => checkpoint
            .verify(key)
            .map(|()| Verdict::Verified)
            .map_err(|e| e.to_string()),
        None => Ok(Verdict::IncludedUnsigned),
    }
}
