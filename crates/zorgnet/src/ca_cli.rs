//! `zorgnet ca`: the network's certificate authority on the command line — create the trust
//! anchor, issue an organisation's (or the hub's) certificate and key, revoke one, and sign
//! the revocation list.
//!
//! What it is: a thin edge over `zorgnet_trust::pki::NetworkCa`; the CA lives in one
//! directory (`ca.pem`, `ca-key.pem` mode 0600, `ledger.json`). Issued credentials are
//! written as `cert.pem`, `key.pem` (mode 0600) and `ca.pem` into their own directory, with
//! the revocation list of that moment (`crl.pem`) to start with.
//! What it is not: an online service (the hub publishes the CRL), or a way to see a private
//! key: keys are only ever written to files, never printed.
//!
//! Exit status: 0 on success, 1 when the CA refused or a file could not be used (the reason
//! is printed), 2 for arguments clap refuses.

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use std::path::{Path, PathBuf};
use zorgnet_trust::certificate::HostName;
use zorgnet_trust::pki::{self, IssuedCertificate, NetworkCa, Validity};

/// Arguments of `zorgnet ca`.
#[derive(Args)]
pub struct CaArgs {
    #[command(subcommand)]
    action: CaAction,
}

/// Where the CA is.
#[derive(Args)]
struct CaDir {
    /// The CA's directory, as `zorgnet ca init --out` made it.
    #[arg(long = "ca", env = "ZORGNET_CA_DIR")]
    dir: PathBuf,
}

/// The names and lifetime of a certificate to issue.
#[derive(Args)]
struct IssueArgs {
    #[command(flatten)]
    ca: CaDir,
    /// The holder's name (subject O and CN).
    #[arg(long)]
    name: String,
    /// A DNS name the holder serves TLS under (repeatable).
    #[arg(long = "dns")]
    dns: Vec<String>,
    /// An IP address the holder serves TLS under (repeatable).
    #[arg(long = "ip")]
    ip: Vec<String>,
    /// Days the certificate is valid.
    #[arg(long, default_value_t = pki::DEFAULT_CERTIFICATE_VALIDITY_DAYS)]
    days: i64,
    /// Directory for `cert.pem`, `key.pem` (mode 0600) and `ca.pem`; an existing key there
    /// is never overwritten.
    #[arg(long)]
    out: PathBuf,
}

#[derive(Subcommand)]
enum CaAction {
    /// Create the network's trust anchor: a new key and self-signed CA certificate in DIR.
    Init {
        /// Directory for the CA (made with mode 0700); must not hold a CA yet.
        #[arg(long)]
        out: PathBuf,
        /// The CA's name (its certificate's CN).
        #[arg(long, default_value = "zorgnet network CA")]
        name: String,
    },
    /// Issue an organisation's certificate and key: its URA in the certificate the way a
    /// UZI server certificate carries it, usable as TLS server and client.
    Issue {
        /// The organisation's URA number (8 digits).
        #[arg(long)]
        ura: String,
        #[command(flatten)]
        issue: IssueArgs,
    },
    /// Issue a certificate for a service of the network itself (the hub): no URA, at least
    /// one --dns or --ip.
    IssueService {
        #[command(flatten)]
        issue: IssueArgs,
    },
    /// Revoke a certificate this CA issued; the next `zorgnet ca crl` lists it.
    Revoke {
        #[command(flatten)]
        ca: CaDir,
        /// The certificate's serial number (hexadecimal; colons allowed).
        #[arg(long, required_unless_present = "cert", conflicts_with = "cert")]
        serial: Option<String>,
        /// The certificate's PEM file.
        #[arg(long)]
        cert: Option<PathBuf>,
    },
    /// Sign a new certificate revocation list (PEM) and print it, or write it to --out.
    Crl {
        #[command(flatten)]
        ca: CaDir,
        /// File for the CRL instead of stdout.
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

/// Runs `zorgnet ca`.
pub fn run(args: CaArgs) -> Result<()> {
    match args.action {
        CaAction::Init { out, name } => {
            let ca = NetworkCa::init(&out, &name)
                .with_context(|| format!("create a CA in {}", out.display()))?;
            println!(
                "created the network CA in {}; its trust anchor is {}",
                out.display(),
                out.join(pki::CA_CERTIFICATE_FILE).display()
            );
            drop(ca);
            Ok(())
        }
        CaAction::Issue { ura, issue } => {
            let (ca, hosts, validity) = prepare(&issue)?;
            let issued = ca
                .issue_organisation(&ura, &issue.name, &hosts, validity)
                .context("issue the certificate")?;
            finish(&ca, &issued, &issue.out)
        }
        CaAction::IssueService { issue } => {
            let (ca, hosts, validity) = prepare(&issue)?;
            let issued = ca
                .issue_server(&issue.name, &hosts, validity)
                .context("issue the certificate")?;
            finish(&ca, &issued, &issue.out)
        }
        CaAction::Revoke { ca, serial, cert } => {
            let ca = open(&ca.dir)?;
            let newly = match (serial, cert) {
                (Some(serial), _) => ca.revoke(&serial).context("revoke")?,
                (None, Some(cert)) => {
                    let pem =
                        std::fs::read(&cert).with_context(|| format!("read {}", cert.display()))?;
                    ca.revoke_certificate(&pem)
                        .with_context(|| format!("revoke {}", cert.display()))?
                }
                (None, None) => anyhow::bail!("give --serial or --cert"),
            };
            println!(
                "{}; run `zorgnet ca crl` to publish a new revocation list",
                if newly {
                    "revoked"
                } else {
                    "was revoked already"
                }
            );
            Ok(())
        }
        CaAction::Crl { ca, out } => {
            let crl = open(&ca.dir)?.crl().context("sign the revocation list")?;
            match out {
                Some(out) => {
                    std::fs::write(&out, &crl.pem)
                        .with_context(|| format!("write {}", out.display()))?;
                    println!(
                        "wrote CRL number {} to {}, valid until {}",
                        crl.number,
                        out.display(),
                        timestamp(crl.next_update)
                    );
                }
                None => print!("{}", crl.pem),
            }
            Ok(())
        }
    }
}

fn open(dir: &Path) -> Result<NetworkCa> {
    NetworkCa::open(dir).with_context(|| format!("open the CA in {}", dir.display()))
}

fn prepare(issue: &IssueArgs) -> Result<(NetworkCa, Vec<HostName>, Validity)> {
    let mut hosts = Vec::with_capacity(issue.dns.len() + issue.ip.len());
    for dns in &issue.dns {
        match dns.parse::<HostName>() {
            Ok(host @ HostName::Dns(_)) => hosts.push(host),
            _ => anyhow::bail!("--dns {dns:?} is not a DNS name"),
        }
    }
    for ip in &issue.ip {
        match ip.parse::<HostName>() {
            Ok(host @ HostName::Ip(_)) => hosts.push(host),
            _ => anyhow::bail!("--ip {ip:?} is not an IP address"),
        }
    }
    if !(1..=pki::MAX_CERTIFICATE_VALIDITY_DAYS).contains(&issue.days) {
        anyhow::bail!("--days must be 1 to {}", pki::MAX_CERTIFICATE_VALIDITY_DAYS);
    }
    let key = issue.out.join(pki::KEY_FILE);
    if key.exists() {
        anyhow::bail!("{} exists; a key is never overwritten", key.display());
    }
    Ok((open(&issue.ca.dir)?, hosts, Validity::days(issue.days)))
}

fn finish(ca: &NetworkCa, issued: &IssuedCertificate, out: &Path) -> Result<()> {
    issued
        .write(out, ca.certificate_pem())
        .with_context(|| format!("write the credentials to {}", out.display()))?;
    let crl_file = out.join(pki::CRL_FILE);
    let crl = ca.crl().context("sign the revocation list")?;
    std::fs::write(&crl_file, &crl.pem).with_context(|| format!("write {}", crl_file.display()))?;
    println!(
        "issued serial {} valid until {}: {}, {} (mode 0600), {}, {}",
        issued.serial,
        timestamp(issued.not_after),
        out.join(pki::CERTIFICATE_FILE).display(),
        out.join(pki::KEY_FILE).display(),
        out.join(pki::CA_CERTIFICATE_FILE).display(),
        crl_file.display()
    );
    Ok(())
}

/// A moment as RFC 3339, to the second.
fn timestamp(moment: time::OffsetDateTime) -> String {
    moment
        .replace_nanosecond(0)
        .ok()
        .and_then(|m| {
            m.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| moment.to_string())
}
