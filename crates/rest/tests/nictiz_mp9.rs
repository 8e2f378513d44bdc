//! Nictiz' MP9 3.0 qualification TestScripts (the "Serving-MGB" role: a server of medication
//! data) run against a node on both backends, from the shared test data in place
//! (`../shared/testdata/nictiz-mp9-3.0-testscripts-r4/`, read its SOURCE.md, and Nictiz'
//! SearchParameters in `../shared/testdata/nictiz-r4-medicationprocess-conformance/`).
//!
//! Per backend: the Nictiz SearchParameters are PUT and `$reindex` polled until they are
//! ready; the 658 fixtures, their Touchstone dates substituted, are PUT with their ids in one
//! batch (as the loader TestScript PUTs them one by one); then each of the 102 TestScripts runs
//! through the runner in `mp9/runner.rs` (its search, its asserts evaluated with
//! `zorgnet-fhirpath`). Every assert is classified — passed, failed, warned (a failing
//! `warningOnly` one), or not evaluable with the reason — and a table per script goes to
//! stderr. The test passes when exactly the asserts in [`KNOWN_FAILURES`] fail: a new failure
//! fails it, and so does a listed one that passes (take it off the list).
//!
//! The test date T: fixed, [`TEST_DATE`] (override with `ZORGNET_MP9_TEST_DATE=YYYY-MM-DD` or
//! `today`). Fixtures and queries are both relative to T (`${DATE, T, D, -21}`), no assert
//! compares against the clock, and the node's searches do not read it either, so any T gives
//! the same results; a fixed one keeps runs reproducible. It is a summer date because the
//! fixtures write their times with `+02:00`, Dutch summer time, so their local times are the
//! real ones.
//!
//! Not evaluable here: `validateProfileId` (profile validation) unless the node answers
//! `POST [base]/Bundle/$validate` (it does); the asserts on how many resources a search found
//! when the search uses a `special` parameter the node stores but does not evaluate and the
//! node said it ignored it (none do: `period-of-use` it evaluates, `is-latest-stop` no script
//! uses).

mod mp9;
mod support;

use mp9::dates;
use mp9::runner::{NotEvaluable, Outcome, Runner, ScriptReport};
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use support::{Node, nodes};

const TESTSCRIPTS: &str = "nictiz-mp9-3.0-testscripts-r4";
const SEARCH_PARAMETERS: &str = "nictiz-r4-medicationprocess-conformance/SearchParameters";
/// The test date T; see the module documentation.
const TEST_DATE: &str = "2025-06-16";
const REINDEX_DEADLINE: Duration = Duration::from_secs(60);
/// How many of a known failure group's asserts the report shows in full.
const KNOWN_EXAMPLES: usize = 6;

/// Asserts expected to fail, with why: every assert whose expression contains `expression`,
/// in the scripts named (all scripts when empty), on `backend` (all when `None`). The test
/// wants each of them to fail and every failure to be one of them.
struct Known {
    scripts: &'static [&'static str],
    expression: &'static str,
    backend: Option<&'static str>,
    reason: &'static str,
}

impl Known {
    fn covers(&self, backend: &str, script: &str, expression: Option<&str>) -> bool {
        self.backend.is_none_or(|b| b == backend)
            && (self.scripts.is_empty() || self.scripts.contains(&script))
            && expression.is_some_and(|e| e.contains(self.expression))
    }
}

/// The asserts that fail, each group with its reason; the test's report shows what the node
/// answered.
const KNOWN_FAILURES: &[Known] = &[Known {
    scripts: &[],
    expression: "where($this.is(coding))",
    backend: None,
    reason: "TestScript defect: `is(coding)` names no type (the type is `Coding`); FHIRPath \
                 says an unresolvable type is an error and zorgnet-fhirpath raises it; an engine \
                 that takes it as false (presumably Touchstone's) passes it vacuously",
}];

fn testdata() -> Option<PathBuf> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/testdata");
    let needed = [
        root.join(TESTSCRIPTS).join("testscripts-json"),
        root.join(TESTSCRIPTS).join("fixtures-json"),
        root.join(SEARCH_PARAMETERS),
    ];
    if let Some(missing) = needed.iter().find(|p| !p.is_dir()) {
        if std::env::var("ZORGNET_REQUIRE_TESTDATA").is_ok_and(|v| v == "1") {
            panic!(
                "{} is missing (ZORGNET_REQUIRE_TESTDATA=1)",
                missing.display()
            );
        }
        let _ = writeln!(
            std::io::stderr(),
            "\n*** SKIPPED: Nictiz MP9 TestScripts (no {}) ***\n",
            missing.display()
        );
        return None;
    }
    Some(root)
}

fn test_date() -> time::Date {
    match std::env::var("ZORGNET_MP9_TEST_DATE") {
        Ok(text) if text == "today" => time::OffsetDateTime::now_utc().date(),
        Ok(text) if !text.is_empty() => dates::parse_date(&text)
            .unwrap_or_else(|| panic!("ZORGNET_MP9_TEST_DATE={text} is not YYYY-MM-DD")),
        _ => dates::parse_date(TEST_DATE).unwrap(),
    }
}

/// The `.json` files under `dir`, recursively, sorted.
fn json_files(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path);
            } else if path.extension().is_some_and(|e| e == "json") {
                found.push(path);
            }
        }
    }
    found.sort();
    found
}

fn read_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap();
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The fixtures by file stem, `${DATE, T, …}` substituted with T = `today`.
fn fixtures(root: &Path, today: time::Date) -> BTreeMap<String, Value> {
    json_files(&root.join(TESTSCRIPTS).join("fixtures-json"))
        .into_iter()
        .map(|path| {
            let text = std::fs::read_to_string(&path).unwrap();
            let text = dates::substitute(&text, today, &mut |name| match name {
                "T" => Ok(dates::format_date(today)),
                other => Err(format!("unknown variable {other}")),
            })
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let resource: Value =
                serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let stem = path.file_stem().unwrap().to_str().unwrap().to_string();
            (stem, resource)
        })
        .collect()
}

/// `$reindex`'s answer: (type, code, status) of each parameter, and code → reason of each
/// stored one not used.
async fn reindex_status(node: &Node) -> (Vec<(String, String, String)>, BTreeMap<String, String>) {
    let answer = node.get("$reindex").await;
    assert_eq!(
        answer.status, 200,
        "[{}] $reindex: {}",
        node.backend, answer.text
    );
    let part = |p: &Value, name: &str| -> String {
        p["part"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|x| x["name"] == name)
            .and_then(|x| {
                x.as_object()?
                    .iter()
                    .find(|(k, _)| k.starts_with("value"))
                    .and_then(|(_, v)| v.as_str().map(String::from))
            })
            .unwrap_or_default()
    };
    let parameters = answer.body["parameter"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let used = parameters
        .iter()
        .filter(|p| p["name"] == "searchParameter")
        .map(|p| (part(p, "resourceType"), part(p, "code"), part(p, "status")))
        .collect();
    let unused = parameters
        .iter()
        .filter(|p| p["name"] == "notUsed")
        .map(|p| (part(p, "code"), part(p, "reason")))
        .collect();
    (used, unused)
}

async fn wait_until_ready(node: &Node) -> BTreeMap<String, String> {
    let deadline = Instant::now() + REINDEX_DEADLINE;
    loop {
        let (used, unused) = reindex_status(node).await;
        if !used.is_empty() && used.iter().all(|(_, _, s)| s == "ready") {
            return unused;
        }
        assert!(
            Instant::now() < deadline,
            "[{}] SearchParameters not ready: {used:?}",
            node.backend
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn put_search_parameters(node: &Node, root: &Path) -> usize {
    let files = json_files(&root.join(SEARCH_PARAMETERS));
    for path in &files {
        let parameter = read_json(path);
        let id = parameter["id"].as_str().unwrap();
        let stored = node.put(&format!("SearchParameter/{id}"), &parameter).await;
        assert!(
            stored.status == 200 || stored.status == 201,
            "[{}] PUT SearchParameter/{id}: {}",
            node.backend,
            stored.text
        );
    }
    files.len()
}

/// PUTs every fixture with its id in one batch; the entries the node refused.
async fn load_fixtures(node: &Node, fixtures: &BTreeMap<String, Value>) -> Vec<String> {
    let entries: Vec<Value> = fixtures
        .values()
        .map(|resource| {
            let url = format!(
                "{}/{}",
                resource["resourceType"].as_str().unwrap(),
                resource["id"].as_str().unwrap()
            );
            json!({"resource": resource, "request": {"method": "PUT", "url": url}})
        })
        .collect();
    let bundle = json!({"resourceType": "Bundle", "type": "batch", "entry": entries});
    let reply = node.post("", &bundle).await;
    assert_eq!(
        reply.status, 200,
        "[{}] batch load: {}",
        node.backend, reply.text
    );
    let answered = reply.body["entry"].as_array().cloned().unwrap_or_default();
    assert_eq!(answered.len(), fixtures.len(), "[{}]", node.backend);
    fixtures
        .keys()
        .zip(&answered)
        .filter(|(_, entry)| {
            let status = entry["response"]["status"].as_str().unwrap_or_default();
            !(status.starts_with("200") || status.starts_with("201"))
        })
        .map(|(name, entry)| format!("{name}: {}", entry["response"]))
        .collect()
}

/// Whether the node has `$validate` (an OperationOutcome for a valid Bundle).
async fn has_validate(node: &Node) -> bool {
    let reply = node
        .post(
            "Bundle/$validate",
            &json!({"resourceType": "Bundle", "type": "collection"}),
        )
        .await;
    reply.status == 200 && reply.body["resourceType"] == "OperationOutcome"
}

#[derive(Default, Clone, Copy)]
struct Tally {
    passed: usize,
    failed: usize,
    warned: usize,
    profile: usize,
    special: usize,
    unsupported: usize,
}

impl Tally {
    fn of(report: &ScriptReport) -> Tally {
        let mut tally = Tally::default();
        for assert in &report.asserts {
            match &assert.outcome {
                Outcome::Passed => tally.passed += 1,
                Outcome::Failed(_) => tally.failed += 1,
                Outcome::Warned(_) => tally.warned += 1,
                Outcome::NotEvaluable(NotEvaluable::ProfileValidation) => tally.profile += 1,
                Outcome::NotEvaluable(NotEvaluable::SpecialParameter { .. }) => tally.special += 1,
                Outcome::NotEvaluable(NotEvaluable::Unsupported(_)) => tally.unsupported += 1,
            }
        }
        tally
    }

    fn add(&mut self, other: Tally) {
        self.passed += other.passed;
        self.failed += other.failed;
        self.warned += other.warned;
        self.profile += other.profile;
        self.special += other.special;
        self.unsupported += other.unsupported;
    }

    fn total(&self) -> usize {
        self.passed + self.failed + self.warned + self.profile + self.special + self.unsupported
    }

    fn row(&self, name: &str) -> String {
        format!(
            "{name:<48} {:>5} {:>6} {:>5} {:>5} {:>8} {:>8} {:>12}\n",
            self.total(),
            self.passed,
            self.failed,
            self.warned,
            self.profile,
            self.special,
            self.unsupported
        )
    }
}

/// The table, the notes and the failures, as text.
fn summary(backend: &str, reports: &[ScriptReport], elapsed: Duration) -> String {
    let mut out = format!("\n=== Nictiz MP9 TestScripts on {backend} ===\n");
    out.push_str(&format!(
        "{:<48} {:>5} {:>6} {:>5} {:>5} {:>8} {:>8} {:>12}\n",
        "script", "all", "passed", "fail", "warn", "NE:prof", "NE:spec", "NE:unsupp"
    ));
    let mut total = Tally::default();
    for report in reports {
        let tally = Tally::of(report);
        total.add(tally);
        out.push_str(&tally.row(&report.id));
    }
    out.push_str(&total.row(&format!("TOTAL ({} scripts)", reports.len())));
    let _ = writeln!(out, "({backend}: {:.1} s)", elapsed.as_secs_f64());
    for report in reports {
        for note in &report.notes {
            let _ = writeln!(out, "note {}: {note}", report.id);
        }
    }
    let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
    for report in reports {
        for assert in &report.asserts {
            if let Outcome::NotEvaluable(NotEvaluable::Unsupported(why)) = &assert.outcome {
                *reasons.entry(why.clone()).or_default() += 1;
            }
        }
    }
    for (why, count) in reasons {
        let _ = writeln!(out, "not evaluable (unsupported feature) x{count}: {why}");
    }
    for report in reports {
        for assert in &report.asserts {
            if let Outcome::NotEvaluable(NotEvaluable::SpecialParameter {
                parameter,
                unfiltered,
            }) = &assert.outcome
            {
                let _ = writeln!(
                    out,
                    "not evaluable (special parameter {parameter} ignored) {} #{}: {} — on the \
                     unfiltered result it {unfiltered}",
                    report.id,
                    assert.number,
                    assert.expression.as_deref().unwrap_or("-")
                );
            }
        }
    }
    let mut groups: Vec<Vec<String>> = vec![Vec::new(); KNOWN_FAILURES.len()];
    for report in reports {
        for assert in &report.asserts {
            let (kind, why) = match &assert.outcome {
                Outcome::Failed(why) => ("FAILED", why),
                Outcome::Warned(why) => ("WARNED", why),
                _ => continue,
            };
            let detail = format!(
                "{kind} {} #{}: {}\n    expression: {}\n    request: {}\n    answer: {why}",
                report.id,
                assert.number,
                assert.label.lines().next().unwrap_or_default(),
                assert.expression.as_deref().unwrap_or("-"),
                assert.request.as_deref().unwrap_or("-"),
            );
            let known = KNOWN_FAILURES
                .iter()
                .position(|k| k.covers(backend, &report.id, assert.expression.as_deref()));
            match known {
                Some(i) if kind == "FAILED" => groups[i].push(detail),
                _ => {
                    let _ = writeln!(out, "{detail}");
                }
            }
        }
    }
    for (known, details) in KNOWN_FAILURES.iter().zip(&groups) {
        if details.is_empty() {
            continue;
        }
        let _ = writeln!(
            out,
            "KNOWN FAILURE x{} ({}): {}",
            details.len(),
            known.expression,
            known.reason
        );
        for detail in details.iter().take(KNOWN_EXAMPLES) {
            let _ = writeln!(out, "  {}", detail.replace('\n', "\n  "));
        }
        if details.len() > KNOWN_EXAMPLES {
            let _ = writeln!(out, "  … and {} more", details.len() - KNOWN_EXAMPLES);
        }
    }
    out
}

/// Compares the failures with [`KNOWN_FAILURES`]: the problems (a failure no entry covers,
/// an assert an entry covers that does not fail, an entry that covers nothing).
fn check_known(backend: &str, reports: &[ScriptReport]) -> Vec<String> {
    let mut problems = Vec::new();
    let mut used = vec![false; KNOWN_FAILURES.len()];
    for report in reports {
        for assert in &report.asserts {
            let failed = matches!(assert.outcome, Outcome::Failed(_));
            let covering: Vec<usize> = KNOWN_FAILURES
                .iter()
                .enumerate()
                .filter(|(_, k)| k.covers(backend, &report.id, assert.expression.as_deref()))
                .map(|(i, _)| i)
                .collect();
            for &i in &covering {
                used[i] = true;
            }
            let evaluated = matches!(assert.outcome, Outcome::Passed | Outcome::Failed(_));
            if failed && covering.is_empty() {
                problems.push(format!(
                    "[{backend}] {} #{} fails and is not in KNOWN_FAILURES: {}",
                    report.id,
                    assert.number,
                    assert.label.lines().next().unwrap_or_default()
                ));
            } else if !failed
                && evaluated
                && let Some(&i) = covering.first()
            {
                problems.push(format!(
                    "[{backend}] {} #{} passes now but KNOWN_FAILURES expects it to fail ({}): \
                     update the list",
                    report.id, assert.number, KNOWN_FAILURES[i].reason
                ));
            }
        }
    }
    for (known, used) in KNOWN_FAILURES.iter().zip(used) {
        if !used && known.backend.is_none_or(|b| b == backend) {
            problems.push(format!(
                "[{backend}] KNOWN_FAILURES entry '{}' covers no assert: remove it",
                known.expression
            ));
        }
    }
    problems
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nictiz_mp9_testscripts_pass_on_a_node() {
    let Some(root) = testdata() else {
        return;
    };
    let today = test_date();
    let scripts: Vec<Value> = json_files(&root.join(TESTSCRIPTS).join("testscripts-json"))
        .iter()
        .map(|p| read_json(p))
        .collect();
    let fixtures = fixtures(&root, today);
    let fixtures_by_stem: HashMap<String, Value> = fixtures
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let mut problems = Vec::new();
    for node in nodes().await {
        let backend = node.backend;
        let started = Instant::now();
        let parameters = put_search_parameters(&node, &root).await;
        wait_until_ready(&node).await;
        let refused = load_fixtures(&node, &fixtures).await;
        for refusal in &refused {
            problems.push(format!("[{backend}] fixture refused: {refusal}"));
        }
        let unused = wait_until_ready(&node).await;
        let special: BTreeSet<String> = unused
            .iter()
            .filter(|(_, reason)| reason.contains("special"))
            .map(|(code, _)| code.clone())
            .collect();
        let validate = has_validate(&node).await;
        let loaded = started.elapsed();
        let runner = Runner {
            node: &node,
            today,
            fixtures: &fixtures_by_stem,
            special: &special,
            validate,
        };
        let mut reports = Vec::new();
        for script in &scripts {
            reports.push(runner.run(script).await);
        }
        let mut text = format!(
            "\n[{backend}] T = {}; {parameters} SearchParameters, {} fixtures loaded ({} refused) in {:.1} s; \
             not used by the node: {unused:?}; $validate: {}",
            dates::format_date(today),
            fixtures.len() - refused.len(),
            refused.len(),
            loaded.as_secs_f64(),
            if validate {
                "yes"
            } else {
                "no (profile validation not evaluable)"
            }
        );
        text.push_str(&summary(backend, &reports, started.elapsed()));
        let _ = writeln!(std::io::stderr(), "{text}");
        problems.extend(check_known(backend, &reports));
    }
    assert!(
        problems.is_empty(),
        "Nictiz MP9 TestScripts:\n{}",
        problems.join("\n")
    );
}
