//! Monitoring of the access log (NEN 7513 asks that the log is watched, not only kept):
//! rules over the records as they are appended raise an [`Alert`] when one agent's accesses
//! in a sliding window exceed a limit.
//!
//! The rules, each of which can be switched off ([`MonitorRules`]):
//! - [`Rule::UnrelatedPatients`]: one professional opening more than `max` different
//!   patients in the window (default [`DEFAULT_UNRELATED_PATIENTS_MAX`] in an hour). Served
//!   (2xx) accesses count, except those the consent register permitted on a treatment
//!   relation (basis `treatment-relation`). The node does not know its own staff's treatment
//!   relations (their electronic health record does), so every patient its own professionals
//!   open counts.
//! - [`Rule::EmergencyBurst`]: more than `max` break-the-glass accesses (purpose
//!   `emergency`) by one professional in the window (default [`DEFAULT_EMERGENCY_BURST_MAX`]
//!   in ten minutes), served or refused: a refused attempt is as telling as a served one.
//!   Counted per professional, not per organisation, because an emergency department's many
//!   professionals break the glass every hour and one of them doing so in a burst is what
//!   stands out.
//! - [`Rule::OutsideTreatmentRelation`]: a served access to patient data that the consent
//!   register permitted, but not on a treatment relation (its bases are `consent` or
//!   `emergency` only); with the default limit of [`DEFAULT_OUTSIDE_TREATMENT_RELATION_MAX`]
//!   every such access counts, and one alert per professional and window reports them.
//!   Accesses by the node's own staff carry no basis (the register is asked for other
//!   organisations only), so this rule watches other organisations.
//!
//! The watched agents are professionals and other organisations' systems: a citizen reads
//! only their own data, the node's own system is the operator, and an unauthenticated caller
//! was refused. Windows run on the records' own times (`at_ms`), so the monitor needs no
//! clock and replays a log the same way; records arrive in the order they were appended,
//! so concurrent requests may move a window's edge by the few milliseconds between them.
//! An alert for a rule and an agent is raised once per window: further accesses within the
//! window after it raise none, the first one after it that still exceeds the limit raises
//! the next.
//!
//! Memory is bounded whatever the callers do: a window keeps at most `max + 1` entries (all
//! it needs to tell whether `max` is exceeded), the monitor at most [`WINDOWS_TRACKED_MAX`]
//! windows and [`ENTRIES_TRACKED_MAX`] entries, forgetting the least recently used windows
//! first, and ids longer than [`ID_BYTES_MAX`] are cut.
//!
//! What it is not: storage (an alert becomes a record through [`Alert::to_record`], appended
//! by whoever feeds the monitor), metrics or logging (the node's access log layer counts and
//! logs alerts), or a policy: an alert is for the privacy officer and refuses nothing.

use crate::record::{Agent, AgentKind, AuditRecord};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt;

/// Most different patients one professional opens in [`DEFAULT_UNRELATED_PATIENTS_WINDOW_S`]
/// before an alert, by default: a busy general practitioner sees about 40 patients a day.
pub const DEFAULT_UNRELATED_PATIENTS_MAX: u32 = 50;
/// The window of [`Rule::UnrelatedPatients`] by default, seconds: an hour.
pub const DEFAULT_UNRELATED_PATIENTS_WINDOW_S: u32 = 3_600;
/// Most break-the-glass accesses by one professional in [`DEFAULT_EMERGENCY_BURST_WINDOW_S`]
/// before an alert, by default.
pub const DEFAULT_EMERGENCY_BURST_MAX: u32 = 3;
/// The window of [`Rule::EmergencyBurst`] by default, seconds: ten minutes.
pub const DEFAULT_EMERGENCY_BURST_WINDOW_S: u32 = 600;
/// Accesses outside a treatment relation by one professional in
/// [`DEFAULT_OUTSIDE_TREATMENT_RELATION_WINDOW_S`] without an alert, by default: none.
pub const DEFAULT_OUTSIDE_TREATMENT_RELATION_MAX: u32 = 0;
/// The window of [`Rule::OutsideTreatmentRelation`] by default, seconds: an hour.
pub const DEFAULT_OUTSIDE_TREATMENT_RELATION_WINDOW_S: u32 = 3_600;

/// The highest limit a rule takes: a window keeps `max + 1` entries.
pub const LIMIT_MAX: u32 = 1_000;
/// The longest window a rule takes, seconds: a day.
pub const WINDOW_S_MAX: u32 = 86_400;
/// Windows (one per rule and agent) kept at once; beyond it the least recently used is
/// forgotten, so a flood of distinct agents cannot grow the monitor.
pub const WINDOWS_TRACKED_MAX: usize = 4_096;
/// Entries kept in all windows together; beyond it the least recently used windows are
/// forgotten. With [`PATIENTS_PER_ENTRY_MAX`] ids of [`ID_BYTES_MAX`] an entry is at most
/// a few hundred bytes, so the monitor stays within tens of megabytes.
pub const ENTRIES_TRACKED_MAX: usize = 65_536;
/// Patient ids an entry of a counted access keeps, for the alert to name.
pub const PATIENTS_PER_ENTRY_MAX: usize = 4;
/// Patient ids an alert names at most.
pub const ALERT_PATIENTS_MAX: usize = 64;
/// Longest id (patient, professional, organisation) kept, bytes: FHIR's limit for an id.
pub const ID_BYTES_MAX: usize = 64;
/// What the action of an alert's record starts with; the rule's name follows.
pub const ALERT_ACTION_PREFIX: &str = "alert:";

// One full window of the highest limit fits in the entries kept, so the window an access
// was just counted in is never the one forgotten to make room.
const _: () = assert!(ENTRIES_TRACKED_MAX > LIMIT_MAX as usize);
const _: () = assert!(WINDOWS_TRACKED_MAX <= ENTRIES_TRACKED_MAX);
const _: () = assert!(ALERT_PATIENTS_MAX > PATIENTS_PER_ENTRY_MAX);

/// The consent register's basis of a permit on a treatment relation.
const TREATMENT_RELATION: &str = "treatment-relation";
/// The purpose of use of a break-the-glass access.
const EMERGENCY: &str = "emergency";

/// The rules the monitor knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Rule {
    /// One professional opening many patients without a treatment relation.
    UnrelatedPatients,
    /// A burst of break-the-glass accesses by one professional.
    EmergencyBurst,
    /// Accesses permitted on a basis other than a treatment relation.
    OutsideTreatmentRelation,
}

impl Rule {
    /// Every rule.
    pub const ALL: [Rule; 3] = [
        Rule::UnrelatedPatients,
        Rule::EmergencyBurst,
        Rule::OutsideTreatmentRelation,
    ];

    /// The rule's name, as in its settings, alerts and metrics.
    pub fn name(self) -> &'static str {
        match self {
            Rule::UnrelatedPatients => "unrelated-patients",
            Rule::EmergencyBurst => "emergency-burst",
            Rule::OutsideTreatmentRelation => "outside-treatment-relation",
        }
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The monitor's settings (a node's `[monitor]` section): per rule whether it is watched,
/// its limit (`-max`: the most accesses, or for [`Rule::UnrelatedPatients`] patients, one
/// agent may have in the window without an alert) and its window (`-window-s`, seconds).
/// Keys left out keep their defaults.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct MonitorRules {
    /// Whether [`Rule::UnrelatedPatients`] is watched.
    pub unrelated_patients: bool,
    /// Most different patients one professional opens in the window without an alert.
    pub unrelated_patients_max: u32,
    /// The window of [`Rule::UnrelatedPatients`], seconds.
    pub unrelated_patients_window_s: u32,
    /// Whether [`Rule::EmergencyBurst`] is watched.
    pub emergency_burst: bool,
    /// Most break-the-glass accesses by one professional in the window without an alert.
    pub emergency_burst_max: u32,
    /// The window of [`Rule::EmergencyBurst`], seconds.
    pub emergency_burst_window_s: u32,
    /// Whether [`Rule::OutsideTreatmentRelation`] is watched.
    pub outside_treatment_relation: bool,
    /// Most accesses outside a treatment relation by one professional in the window without
    /// an alert.
    pub outside_treatment_relation_max: u32,
    /// The window of [`Rule::OutsideTreatmentRelation`], seconds.
    pub outside_treatment_relation_window_s: u32,
}

impl Default for MonitorRules {
    fn default() -> MonitorRules {
        MonitorRules {
            unrelated_patients: true,
            unrelated_patients_max: DEFAULT_UNRELATED_PATIENTS_MAX,
            unrelated_patients_window_s: DEFAULT_UNRELATED_PATIENTS_WINDOW_S,
            emergency_burst: true,
            emergency_burst_max: DEFAULT_EMERGENCY_BURST_MAX,
            emergency_burst_window_s: DEFAULT_EMERGENCY_BURST_WINDOW_S,
            outside_treatment_relation: true,
            outside_treatment_relation_max: DEFAULT_OUTSIDE_TREATMENT_RELATION_MAX,
            outside_treatment_relation_window_s: DEFAULT_OUTSIDE_TREATMENT_RELATION_WINDOW_S,
        }
    }
}

impl MonitorRules {
    /// Whether `rule` is watched, its limit and its window in seconds.
    fn setting(&self, rule: Rule) -> (bool, u32, u32) {
        match rule {
            Rule::UnrelatedPatients => (
                self.unrelated_patients,
                self.unrelated_patients_max,
                self.unrelated_patients_window_s,
            ),
            Rule::EmergencyBurst => (
                self.emergency_burst,
                self.emergency_burst_max,
                self.emergency_burst_window_s,
            ),
            Rule::OutsideTreatmentRelation => (
                self.outside_treatment_relation,
                self.outside_treatment_relation_max,
                self.outside_treatment_relation_window_s,
            ),
        }
    }

    /// The limits of the rules that are watched, once checked.
    fn limits(&self) -> Result<Vec<Limit>, RulesError> {
        let mut limits = Vec::new();
        for rule in Rule::ALL {
            let (watched, max, window_s) = self.setting(rule);
            if !watched {
                continue;
            }
            if max > LIMIT_MAX {
                return Err(RulesError::LimitTooHigh { rule, max });
            }
            if window_s == 0 || window_s > WINDOW_S_MAX {
                return Err(RulesError::Window { rule, window_s });
            }
            limits.push(Limit {
                rule,
                max,
                window_s,
            });
        }
        Ok(limits)
    }
}

/// Settings the monitor cannot run with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RulesError {
    /// A limit above [`LIMIT_MAX`].
    #[error("{rule}-max is {max}, above the highest limit {LIMIT_MAX}")]
    LimitTooHigh {
        /// The rule.
        rule: Rule,
        /// Its limit as given.
        max: u32,
    },
    /// A window of no time or longer than [`WINDOW_S_MAX`].
    #[error("{rule}-window-s is {window_s}; a window is 1 to {WINDOW_S_MAX} seconds")]
    Window {
        /// The rule.
        rule: Rule,
        /// Its window as given.
        window_s: u32,
    },
}

/// One alert: a rule's limit was exceeded by one agent's accesses in a window.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Alert {
    /// The rule.
    pub rule: Rule,
    /// The agent, as the access that raised the alert names it.
    pub agent: Agent,
    /// The patients of the counted accesses in the window (at most [`ALERT_PATIENTS_MAX`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub patients: Vec<String>,
    /// What was counted in the window: accesses, or for [`Rule::UnrelatedPatients`]
    /// different patients.
    pub count: u32,
    /// The rule's limit.
    pub max: u32,
    /// The rule's window, seconds.
    pub window_s: u32,
    /// When the access that raised the alert was, epoch milliseconds.
    pub at_ms: i64,
    /// The sequence number of that access's record in the log.
    pub seq: u64,
}

impl Alert {
    /// The alert as a record of the log: by this organisation's system, about the patients
    /// involved, with action `alert:<rule>`, the alert as JSON for its request and status
    /// 200 (raised). In the log it is chained and proven like any access.
    pub fn to_record(&self) -> AuditRecord {
        AuditRecord {
            at_ms: self.at_ms,
            agent: Agent {
                kind: AgentKind::System,
                id: None,
                role: None,
                organisation: None,
                certificate: None,
            },
            patients: self.patients.clone(),
            action: format!("{ALERT_ACTION_PREFIX}{}", self.rule),
            request: serde_json::to_string(self).unwrap_or_else(|e| {
                // A struct of strings and numbers always serialises; keep the failure visible.
                format!("{{\"unserialisable\":{:?}}}", e.to_string())
            }),
            purpose: None,
            reason: None,
            bases: Vec::new(),
            status: 200,
        }
    }

    /// The alert a record of [`Alert::to_record`] holds; `None` for any other record.
    pub fn from_record(record: &AuditRecord) -> Option<Alert> {
        record.action.strip_prefix(ALERT_ACTION_PREFIX)?;
        serde_json::from_str(&record.request).ok()
    }
}

/// A watched rule's limit and window.
#[derive(Debug, Clone, Copy)]
struct Limit {
    rule: Rule,
    max: u32,
    window_s: u32,
}

impl Limit {
    fn window_ms(self) -> i64 {
        i64::from(self.window_s) * 1_000
    }

    /// Entries a window of this rule keeps: all it takes to tell that `max` is exceeded.
    fn capacity(self) -> usize {
        self.max as usize + 1
    }
}

/// Whose window: a rule and an agent.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct WindowKey {
    rule: Rule,
    kind: AgentKind,
    organisation: Option<String>,
    id: Option<String>,
}

/// One counted access (or, for [`Rule::UnrelatedPatients`], one patient opened).
#[derive(Debug)]
struct Entry {
    at_ms: i64,
    patients: Vec<String>,
}

/// One agent's counted accesses for one rule, oldest first, at most the rule's capacity.
#[derive(Debug)]
struct Window {
    entries: VecDeque<Entry>,
    /// When the last alert of this window was raised (the access's time).
    alerted_at_ms: Option<i64>,
    /// The monitor's tick when the window was last used, its key in the recency order.
    touched: u64,
}

/// The monitor: feed it every record once appended ([`Monitor::observe`]); it answers with
/// the alerts the record raises. Not thread-safe by itself: callers share it behind a lock,
/// which [`Monitor::observe`] holds for microseconds.
#[derive(Debug)]
pub struct Monitor {
    limits: Vec<Limit>,
    windows: HashMap<WindowKey, Window>,
    /// The windows by when they were last used, least recent first.
    recency: BTreeMap<u64, WindowKey>,
    /// Entries in all windows.
    entries: usize,
    /// Counts the windows' uses, for [`Monitor::recency`].
    tick: u64,
}

impl Monitor {
    /// A monitor of `rules`, refused when a limit or window is out of range.
    pub fn new(rules: &MonitorRules) -> Result<Monitor, RulesError> {
        Ok(Monitor {
            limits: rules.limits()?,
            windows: HashMap::new(),
            recency: BTreeMap::new(),
            entries: 0,
            tick: 0,
        })
    }

    /// Counts `record`, appended to the log as `seq`, and returns the alerts it raises.
    pub fn observe(&mut self, record: &AuditRecord, seq: u64) -> Vec<Alert> {
        if !matches!(
            record.agent.kind,
            AgentKind::Professional | AgentKind::Organisation
        ) {
            return Vec::new();
        }
        let mut alerts = Vec::new();
        for index in 0..self.limits.len() {
            let limit = self.limits[index];
            let Some(entries) = counted(limit, record) else {
                continue;
            };
            let key = WindowKey {
                rule: limit.rule,
                kind: record.agent.kind,
                organisation: record.agent.organisation.as_deref().map(cut),
                id: record.agent.id.as_deref().map(cut),
            };
            if let Some((count, patients)) = self.count(key, limit, record.at_ms, entries) {
                alerts.push(Alert {
                    rule: limit.rule,
                    agent: record.agent.clone(),
                    patients,
                    count,
                    max: limit.max,
                    window_s: limit.window_s,
                    at_ms: record.at_ms,
                    seq,
                });
            }
        }
        alerts
    }

    /// Windows kept now.
    pub fn windows_tracked(&self) -> usize {
        self.windows.len()
    }

    /// Entries kept now, in all windows.
    pub fn entries_tracked(&self) -> usize {
        self.entries
    }

    /// Adds `new` to the window of `key` at `at_ms`; when the window then exceeds its limit
    /// and raised no alert within the last window, returns the count and the patients.
    fn count(
        &mut self,
        key: WindowKey,
        limit: Limit,
        at_ms: i64,
        new: Vec<Entry>,
    ) -> Option<(u32, Vec<String>)> {
        self.tick += 1;
        let tick = self.tick;
        let window = self.windows.entry(key.clone()).or_insert(Window {
            entries: VecDeque::new(),
            alerted_at_ms: None,
            touched: tick,
        });
        self.recency.remove(&window.touched);
        window.touched = tick;
        self.recency.insert(tick, key);
        let before = window.entries.len();
        let edge = at_ms.saturating_sub(limit.window_ms());
        while window.entries.front().is_some_and(|e| e.at_ms <= edge) {
            window.entries.pop_front();
        }
        let distinct = limit.rule == Rule::UnrelatedPatients;
        for entry in new {
            if distinct {
                window.entries.retain(|e| e.patients != entry.patients);
            }
            window.entries.push_back(entry);
            if window.entries.len() > limit.capacity() {
                window.entries.pop_front();
            }
        }
        self.entries = self.entries - before + window.entries.len();
        let exceeded = window.entries.len() > limit.max as usize;
        let quiet = window
            .alerted_at_ms
            .is_some_and(|alerted| at_ms < alerted.saturating_add(limit.window_ms()));
        let alert = (exceeded && !quiet).then(|| {
            window.alerted_at_ms = Some(at_ms);
            let mut patients: Vec<String> = Vec::new();
            for patient in window.entries.iter().flat_map(|e| &e.patients) {
                if patients.len() == ALERT_PATIENTS_MAX {
                    break;
                }
                if !patients.contains(patient) {
                    patients.push(patient.clone());
                }
            }
            let count = u32::try_from(window.entries.len()).unwrap_or(u32::MAX);
            (count, patients)
        });
        self.forget_beyond_bounds(tick);
        alert
    }

    /// Forgets the least recently used windows, but not the one used at `current`, until
    /// the monitor is within [`WINDOWS_TRACKED_MAX`] and [`ENTRIES_TRACKED_MAX`].
    fn forget_beyond_bounds(&mut self, current: u64) {
        while self.windows.len() > WINDOWS_TRACKED_MAX || self.entries > ENTRIES_TRACKED_MAX {
            let Some((touched, key)) = self.recency.pop_first() else {
                break;
            };
            if touched == current {
                self.recency.insert(touched, key);
                break;
            }
            if let Some(window) = self.windows.remove(&key) {
                self.entries -= window.entries.len();
            }
        }
    }
}

/// What `record` adds to a window of `limit`'s rule, or `None` when the rule does not count
/// it.
fn counted(limit: Limit, record: &AuditRecord) -> Option<Vec<Entry>> {
    let served = (200..300).contains(&record.status);
    let related = record.bases.iter().any(|b| b == TREATMENT_RELATION);
    let entry = |patients: &[String]| Entry {
        at_ms: record.at_ms,
        patients: patients
            .iter()
            .take(PATIENTS_PER_ENTRY_MAX)
            .map(|p| cut(p))
            .collect(),
    };
    match limit.rule {
        Rule::UnrelatedPatients => (served && !related && !record.patients.is_empty()).then(|| {
            record
                .patients
                .iter()
                .take(limit.capacity())
                .map(|p| entry(std::slice::from_ref(p)))
                .collect()
        }),
        Rule::EmergencyBurst => {
            (record.purpose.as_deref() == Some(EMERGENCY)).then(|| vec![entry(&record.patients)])
        }
        Rule::OutsideTreatmentRelation => {
            (served && !related && !record.bases.is_empty() && !record.patients.is_empty())
                .then(|| vec![entry(&record.patients)])
        }
    }
}

/// `id`, cut to at most [`ID_BYTES_MAX`] bytes.
fn cut(id: &str) -> String {
    let mut end = id.len().min(ID_BYTES_MAX);
    while !id.is_char_boundary(end) {
        end -= 1;
    }
    id[..end].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MINUTE_MS: i64 = 60_000;
    const START_MS: i64 = 1_765_000_000_000;

    fn professional(uzi: &str) -> Agent {
        Agent {
            kind: AgentKind::Professional,
            id: Some(uzi.into()),
            role: Some("01.015".into()),
            organisation: Some("00000011".into()),
            certificate: None,
        }
    }

    /// A served read of `patient` by the professional `uzi` at `at_ms`.
    fn read(uzi: &str, patient: &str, at_ms: i64) -> AuditRecord {
        AuditRecord {
            at_ms,
            agent: professional(uzi),
            patients: vec![patient.into()],
            action: "read".into(),
            request: format!("GET /fhir/Patient/{patient}"),
            purpose: None,
            reason: None,
            bases: Vec::new(),
            status: 200,
        }
    }

    /// A break-the-glass read by another organisation's professional.
    fn emergency(uzi: &str, patient: &str, at_ms: i64, status: u16) -> AuditRecord {
        AuditRecord {
            purpose: Some("emergency".into()),
            reason: Some("unconscious at the ED".into()),
            bases: vec!["emergency".into()],
            status,
            ..read(uzi, patient, at_ms)
        }
    }

    fn only(rule: Rule, max: u32, window_s: u32) -> MonitorRules {
        let mut rules = MonitorRules {
            unrelated_patients: false,
            emergency_burst: false,
            outside_treatment_relation: false,
            ..MonitorRules::default()
        };
        match rule {
            Rule::UnrelatedPatients => {
                rules.unrelated_patients = true;
                rules.unrelated_patients_max = max;
                rules.unrelated_patients_window_s = window_s;
            }
            Rule::EmergencyBurst => {
                rules.emergency_burst = true;
                rules.emergency_burst_max = max;
                rules.emergency_burst_window_s = window_s;
            }
            Rule::OutsideTreatmentRelation => {
                rules.outside_treatment_relation = true;
                rules.outside_treatment_relation_max = max;
                rules.outside_treatment_relation_window_s = window_s;
            }
        }
        rules
    }

    /// Feeds `records` in order (numbered from 0) and returns the rules and sequence
    /// numbers of the alerts.
    fn alerts(monitor: &mut Monitor, records: &[AuditRecord]) -> Vec<(Rule, u64)> {
        (0_u64..)
            .zip(records)
            .flat_map(|(seq, record)| monitor.observe(record, seq))
            .map(|alert| (alert.rule, alert.seq))
            .collect()
    }

    #[test]
    fn unrelated_patients_alert_at_the_limit_plus_one_and_once_per_window() {
        let mut monitor = Monitor::new(&only(Rule::UnrelatedPatients, 3, 3_600)).unwrap();
        let mut records: Vec<AuditRecord> = (0..3)
            .map(|i| read("900000001", &format!("p{i}"), START_MS + i * MINUTE_MS))
            .collect();
        // Opening the same patients again, and another professional's patients, adds none.
        records.push(read("900000001", "p0", START_MS + 4 * MINUTE_MS));
        records.push(read("900000002", "q0", START_MS + 4 * MINUTE_MS));
        assert_eq!(alerts(&mut monitor, &records), [], "3 patients, limit 3");

        let fourth = read("900000001", "p3", START_MS + 5 * MINUTE_MS);
        let [alert] = monitor.observe(&fourth, 5).try_into().unwrap();
        assert_eq!(alert.rule, Rule::UnrelatedPatients);
        assert_eq!(alert.agent, professional("900000001"));
        assert_eq!(alert.patients, ["p1", "p2", "p0", "p3"]);
        assert_eq!((alert.count, alert.max, alert.window_s), (4, 3, 3_600));
        assert_eq!((alert.at_ms, alert.seq), (fourth.at_ms, 5));

        let more: Vec<AuditRecord> = (4..10)
            .map(|i| {
                read(
                    "900000001",
                    &format!("p{i}"),
                    START_MS + (5 + i) * MINUTE_MS,
                )
            })
            .collect();
        assert_eq!(
            alerts(&mut monitor, &more),
            [],
            "one alert per window, not one per access"
        );
        let after_window = read("900000001", "p10", fourth.at_ms + 3_600_000);
        assert_eq!(
            monitor.observe(&after_window, 20).len(),
            1,
            "still above the limit a window after the alert: the next alert"
        );
    }

    #[test]
    fn windows_slide_on_the_records_times() {
        let mut monitor = Monitor::new(&only(Rule::UnrelatedPatients, 2, 600)).unwrap();
        let records = [
            read("900000001", "p0", START_MS),
            read("900000001", "p1", START_MS + 5 * MINUTE_MS),
            // Ten minutes after p0: p0 has left the window, so two patients are in it.
            read("900000001", "p2", START_MS + 10 * MINUTE_MS),
            read("900000001", "p3", START_MS + 14 * MINUTE_MS),
        ];
        assert_eq!(alerts(&mut monitor, &records[..3]), []);
        assert_eq!(
            monitor.observe(&records[3], 3).len(),
            1,
            "p1, p2 and p3 within ten minutes"
        );
        // Opening a patient again moves them to the end of the window.
        let mut monitor = Monitor::new(&only(Rule::UnrelatedPatients, 2, 600)).unwrap();
        let records = [
            read("900000001", "p0", START_MS),
            read("900000001", "p1", START_MS + 3 * MINUTE_MS),
            read("900000001", "p0", START_MS + 9 * MINUTE_MS),
            read("900000001", "p2", START_MS + 12 * MINUTE_MS),
        ];
        let raised = alerts(&mut monitor, &records);
        assert_eq!(raised, [(Rule::UnrelatedPatients, 3)]);
    }

    #[test]
    fn what_the_unrelated_patients_rule_does_not_count() {
        let mut monitor = Monitor::new(&only(Rule::UnrelatedPatients, 1, 3_600)).unwrap();
        let refused = AuditRecord {
            status: 403,
            ..read("900000001", "p0", START_MS)
        };
        let related = AuditRecord {
            bases: vec!["treatment-relation".into()],
            ..read("900000001", "p1", START_MS)
        };
        let citizen = AuditRecord {
            agent: Agent {
                kind: AgentKind::Citizen,
                ..professional("anna")
            },
            ..read("900000001", "p2", START_MS)
        };
        let system = AuditRecord {
            agent: Agent {
                kind: AgentKind::System,
                ..professional("node")
            },
            ..read("900000001", "p3", START_MS)
        };
        let records = [
            refused.clone(),
            refused,
            related.clone(),
            related,
            citizen.clone(),
            citizen,
            system.clone(),
            system,
            read("900000001", "p4", START_MS),
        ];
        assert_eq!(alerts(&mut monitor, &records), []);
        assert_eq!(
            monitor.observe(&read("900000001", "p5", START_MS), 9).len(),
            1
        );
    }

    #[test]
    fn a_break_the_glass_burst_alerts_at_the_limit_plus_one() {
        let mut monitor = Monitor::new(&only(Rule::EmergencyBurst, 3, 600)).unwrap();
        let records = [
            emergency("900000001", "p0", START_MS, 200),
            emergency("900000001", "p1", START_MS + MINUTE_MS, 403),
            // Not break-the-glass.
            read("900000001", "p2", START_MS + 2 * MINUTE_MS),
            emergency("900000001", "p0", START_MS + 3 * MINUTE_MS, 200),
            // Another professional's.
            emergency("900000002", "p3", START_MS + 3 * MINUTE_MS, 200),
        ];
        assert_eq!(alerts(&mut monitor, &records), []);
        let fourth = emergency("900000001", "p4", START_MS + 9 * MINUTE_MS, 200);
        let [alert] = monitor.observe(&fourth, 5).try_into().unwrap();
        assert_eq!(alert.rule, Rule::EmergencyBurst);
        assert_eq!(alert.count, 4, "refused attempts count too");
        assert_eq!(alert.patients, ["p0", "p1", "p4"]);
        // Eleven minutes after the first, the first two have left the window.
        let mut monitor = Monitor::new(&only(Rule::EmergencyBurst, 3, 600)).unwrap();
        let mut late = records.to_vec();
        late.push(emergency("900000001", "p4", START_MS + 11 * MINUTE_MS, 200));
        assert_eq!(alerts(&mut monitor, &late), []);
    }

    #[test]
    fn access_outside_a_treatment_relation_alerts_once_per_window() {
        let mut monitor = Monitor::new(&only(Rule::OutsideTreatmentRelation, 0, 3_600)).unwrap();
        let with = |bases: &[&str], at_ms: i64| AuditRecord {
            bases: bases.iter().map(|b| b.to_string()).collect(),
            ..read("900000001", "p0", at_ms)
        };
        let records = [
            // Own staff: no basis.
            with(&[], START_MS),
            with(&["treatment-relation"], START_MS),
            with(&["consent", "treatment-relation"], START_MS),
            AuditRecord {
                status: 403,
                ..with(&["consent"], START_MS)
            },
        ];
        assert_eq!(alerts(&mut monitor, &records), []);
        let raised = alerts(
            &mut monitor,
            &[
                with(&["consent"], START_MS + MINUTE_MS),
                with(&["emergency"], START_MS + 2 * MINUTE_MS),
                with(&["consent"], START_MS + 61 * MINUTE_MS),
            ],
        );
        assert_eq!(
            raised,
            [
                (Rule::OutsideTreatmentRelation, 0),
                (Rule::OutsideTreatmentRelation, 2)
            ]
        );
        let mut monitor = Monitor::new(&only(Rule::OutsideTreatmentRelation, 2, 3_600)).unwrap();
        let three: Vec<AuditRecord> = (0..3).map(|i| with(&["consent"], START_MS + i)).collect();
        assert_eq!(alerts(&mut monitor, &three[..2]), []);
        assert_eq!(monitor.observe(&three[2], 2).len(), 1);
    }

    #[test]
    fn rules_switched_off_do_not_fire() {
        let off = MonitorRules {
            unrelated_patients: false,
            emergency_burst: false,
            outside_treatment_relation: false,
            unrelated_patients_max: 0,
            emergency_burst_max: 0,
            ..MonitorRules::default()
        };
        let mut monitor = Monitor::new(&off).unwrap();
        let records: Vec<AuditRecord> = (0..20)
            .map(|i| emergency("900000001", &format!("p{i}"), START_MS + i, 200))
            .collect();
        assert_eq!(alerts(&mut monitor, &records), []);
        assert_eq!(monitor.windows_tracked(), 0);

        let mut defaults = Monitor::new(&MonitorRules::default()).unwrap();
        let rules: Vec<Rule> = alerts(&mut defaults, &records)
            .into_iter()
            .map(|(rule, _)| rule)
            .collect();
        assert_eq!(
            rules,
            [Rule::OutsideTreatmentRelation, Rule::EmergencyBurst],
            "by default an emergency access is outside a treatment relation, and four make a burst"
        );
    }

    #[test]
    fn memory_stays_bounded_under_a_flood_of_agents_and_patients() {
        let mut monitor = Monitor::new(&only(Rule::UnrelatedPatients, LIMIT_MAX, 3_600)).unwrap();
        let long = "x".repeat(10 * ID_BYTES_MAX);
        let agents = 2 * WINDOWS_TRACKED_MAX as u64;
        for i in 0..agents {
            monitor.observe(&read(&format!("{i}{long}"), "p0", START_MS), i);
            assert!(monitor.windows_tracked() <= WINDOWS_TRACKED_MAX);
        }
        assert_eq!(monitor.windows_tracked(), WINDOWS_TRACKED_MAX);
        let id = |i: u64| Some(cut(&format!("{i}{long}")));
        assert!(monitor.windows.keys().any(|k| k.id == id(agents - 1)));
        assert!(
            !monitor.windows.keys().any(|k| k.id == id(0)),
            "the least recently used agent was forgotten"
        );

        let patients_per_access = 100;
        for i in 0..1_000 {
            let record = AuditRecord {
                patients: (0..patients_per_access)
                    .map(|p| format!("{i}-{p}{long}"))
                    .collect(),
                ..read(&format!("{i}"), "", START_MS)
            };
            monitor.observe(&record, i);
            assert!(monitor.entries_tracked() <= ENTRIES_TRACKED_MAX);
        }
        assert!(monitor.entries_tracked() > ENTRIES_TRACKED_MAX - patients_per_access);
        let mut kept = monitor.windows.values().flat_map(|w| &w.entries);
        assert!(kept.all(|e| e.patients.iter().all(|p| p.len() <= ID_BYTES_MAX)));
    }

    #[test]
    fn out_of_range_settings_are_refused() {
        let mut rules = MonitorRules {
            emergency_burst_max: LIMIT_MAX + 1,
            ..MonitorRules::default()
        };
        assert_eq!(
            Monitor::new(&rules).unwrap_err(),
            RulesError::LimitTooHigh {
                rule: Rule::EmergencyBurst,
                max: LIMIT_MAX + 1
            }
        );
        rules.emergency_burst = false;
        assert!(
            Monitor::new(&rules).is_ok(),
            "a rule switched off is not checked"
        );
        rules.unrelated_patients_window_s = 0;
        assert_eq!(
            Monitor::new(&rules).unwrap_err().to_string(),
            "unrelated-patients-window-s is 0; a window is 1 to 86400 seconds"
        );
    }

    #[test]
    fn settings_read_with_defaults_for_what_is_left_out() {
        let rules: MonitorRules =
            serde_json::from_str(r#"{"unrelated-patients-max": 10, "emergency-burst": false}"#)
                .unwrap();
        assert_eq!(
            rules,
            MonitorRules {
                unrelated_patients_max: 10,
                emergency_burst: false,
                ..MonitorRules::default()
            }
        );
        assert!(serde_json::from_str::<MonitorRules>(r#"{"patients-max": 10}"#).is_err());
    }

    #[test]
    fn an_alert_is_a_record_and_reads_back_from_it() {
        let mut monitor = Monitor::new(&only(Rule::EmergencyBurst, 0, 600)).unwrap();
        let [alert] = monitor
            .observe(&emergency("900000001", "p0", START_MS, 200), 41)
            .try_into()
            .unwrap();
        let record = alert.to_record();
        assert_eq!(record.action, "alert:emergency-burst");
        assert_eq!(record.agent.kind, AgentKind::System);
        assert_eq!(record.patients, ["p0"]);
        assert_eq!(
            record.request,
            r#"{"rule":"emergency-burst","agent":{"kind":"professional","id":"900000001","role":"01.015","organisation":"00000011"},"patients":["p0"],"count":1,"max":0,"window_s":600,"at_ms":1765000000000,"seq":41}"#
        );
        let stored: AuditRecord = serde_json::from_str(&record.to_json()).unwrap();
        assert_eq!(Alert::from_record(&stored), Some(alert));
        assert_eq!(Alert::from_record(&read("900000001", "p0", START_MS)), None);
    }

    proptest! {
        /// However the accesses come, the alerts of one professional for one rule are at
        /// least a window apart, each is raised when more than the limit were counted in the
        /// window before it, and memory stays within the window's capacity.
        #[test]
        fn alerts_are_a_window_apart_and_justified(
            steps in proptest::collection::vec((0_i64..3_000, 0_u8..12), 1..200),
            max in 0_u32..6,
        ) {
            let window_s = 60;
            let mut monitor = Monitor::new(&only(Rule::UnrelatedPatients, max, window_s)).unwrap();
            let mut at_ms = START_MS;
            let mut seen: Vec<(i64, u8)> = Vec::new();
            let mut last_alert: Option<i64> = None;
            for (seq, (gap_ms, patient)) in (0_u64..).zip(steps) {
                at_ms += gap_ms;
                seen.push((at_ms, patient));
                let record = read("900000001", &format!("p{patient}"), at_ms);
                let raised = monitor.observe(&record, seq);
                let mut in_window: Vec<u8> = seen
                    .iter()
                    .filter(|(at, _)| *at > at_ms - i64::from(window_s) * 1_000)
                    .map(|(_, p)| *p)
                    .collect();
                in_window.sort_unstable();
                in_window.dedup();
                let exceeded = in_window.len() > max as usize;
                let quiet = last_alert.is_some_and(|t| at_ms < t + i64::from(window_s) * 1_000);
                prop_assert_eq!(raised.len(), usize::from(exceeded && !quiet));
                if !raised.is_empty() {
                    last_alert = Some(at_ms);
                }
                prop_assert!(monitor.entries_tracked() <= max as usize + 1);
            }
        }
    }
}
