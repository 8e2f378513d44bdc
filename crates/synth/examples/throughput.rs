//! Measures generation speed and the size of records: generates and serialises
//! a dataset in memory, then prints resources per patient and per type.
//!
//! `cargo run -p zorgnet-synth --release --example throughput -- [patients] [seed]`

use std::collections::BTreeMap;
use std::time::Instant;

use zorgnet_synth::{Generator, OutputFormat, SynthConfig, write};

/// Patients generated when no count is given: about 1,000,000 resources.
const DEFAULT_PATIENTS: usize = 5_000;

fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let patients = args
        .next()
        .and_then(|a| a.parse().ok())
        .unwrap_or(DEFAULT_PATIENTS);
    let seed = args.next().and_then(|a| a.parse().ok()).unwrap_or(1);
    let generator = Generator::new(SynthConfig { patients, seed });

    let started = Instant::now();
    let mut per_patient = Vec::with_capacity(patients);
    let mut per_type: BTreeMap<String, u64> = BTreeMap::new();
    let mut per_birth_decade: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    for index in 0..patients {
        let resources = generator.patient_resources(index);
        per_patient.push(resources.len());
        let birth_date = resources[0]["birthDate"].as_str().unwrap_or_default();
        let decade = per_birth_decade
            .entry(format!("{}0s", birth_date.get(..3).unwrap_or("?")))
            .or_default();
        decade.0 += 1;
        decade.1 += resources.len();
        for resource in &resources {
            let resource_type = resource["resourceType"].as_str().unwrap_or_default();
            *per_type.entry(resource_type.to_owned()).or_default() += 1;
        }
    }
    let generate_seconds = started.elapsed().as_secs_f64();

    let started = Instant::now();
    let mut sink = std::io::sink();
    let resources = write(&generator, OutputFormat::Ndjson, &mut sink, |_| {})?;
    let write_seconds = started.elapsed().as_secs_f64();

    per_patient.sort_unstable();
    let total: usize = per_patient.iter().sum();
    let percentile = |p: usize| {
        per_patient
            .get(per_patient.len() * p / 100)
            .copied()
            .unwrap_or(0)
    };
    println!(
        "patients {patients}, seed {seed}, resources {resources} (directory {})",
        resources as usize - total
    );
    println!(
        "per patient: mean {:.1}, min {}, p10 {}, median {}, p90 {}, p99 {}, max {}",
        total as f64 / patients.max(1) as f64,
        per_patient.first().copied().unwrap_or(0),
        percentile(10),
        percentile(50),
        percentile(90),
        percentile(99),
        per_patient.last().copied().unwrap_or(0),
    );
    println!(
        "generate only: {generate_seconds:.2} s; generate + serialise NDJSON: {write_seconds:.2} s"
    );
    for (decade, (n, resources)) in per_birth_decade {
        println!(
            "  born in the {decade}: {n:>6} patients, {:>6.1} resources each",
            resources as f64 / n as f64
        );
    }
    for (resource_type, count) in per_type {
        println!("  {resource_type:<24} {count:>9}");
    }
    Ok(())
}
