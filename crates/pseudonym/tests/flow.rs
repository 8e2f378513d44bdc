//! The whole exchange through the public API, as the node (holder), hub (PRS) and
//! recipients will call it: what must hold for pseudonyms, tokens, keys and the ZVN.

use std::collections::HashSet;

use proptest::prelude::*;

use zorgnet_pseudonym::{
    Bsn, CLOCK_SKEW_S, EXCHANGE_TOKEN_LIFETIME_S, Error, ExchangeToken, KeyAlgorithm, PersonalId,
    Prs, PrsKeys, Pseudonym, RecipientId, RecipientKeys, RecipientPublicKey, Zvn, blind,
    parse_birth_date, seal_bsn_for_prs, zvn_is_valid,
};

const NOW: u64 = 1_800_000_000;

fn bsn(text: &str) -> PersonalId {
    PersonalId::Bsn(Bsn::parse(text).unwrap())
}

fn recipient(id: &str, algorithm: KeyAlgorithm) -> RecipientKeys {
    RecipientKeys::generate(RecipientId::parse(id).unwrap(), algorithm).unwrap()
}

/// Holder blinds, PRS evaluates for `keys`' recipient, holder builds the token.
fn token_for(prs: &Prs, keys: &RecipientKeys, person: &PersonalId) -> ExchangeToken {
    let registered = RecipientPublicKey::from_jwk(&keys.public_jwk()).unwrap();
    let handle = prs.recipient(keys.id().clone(), registered).unwrap();
    let (factor, blinded) = blind(person).unwrap();
    // The blinded input crosses the network as base64url.
    let blinded = zorgnet_pseudonym::BlindedInput::from_base64(&blinded.to_base64()).unwrap();
    let jwe = handle.evaluate(&blinded, NOW).unwrap();
    // The token crosses the network as JSON.
    ExchangeToken::from_json(&ExchangeToken::new(jwe, factor).to_json()).unwrap()
}

fn pseudonym(prs: &Prs, keys: &RecipientKeys, person: &PersonalId) -> Pseudonym {
    keys.open(&token_for(prs, keys, person), NOW + 1).unwrap()
}

#[test]
fn same_recipient_gets_the_same_pseudonym_with_fresh_blinds() {
    let prs = Prs::new(PrsKeys::generate());
    let nvi = recipient("nvi", KeyAlgorithm::X25519);
    let person = bsn("123456782");
    let first = token_for(&prs, &nvi, &person);
    let second = token_for(&prs, &nvi, &person);
    assert_ne!(
        first.to_json(),
        second.to_json(),
        "blinds and JWEs are fresh every time"
    );
    let a = nvi.open(&first, NOW).unwrap();
    let b = nvi.open(&second, NOW).unwrap();
    assert_eq!(a, b);
    assert_eq!(a.key_version(), 1);
    assert_eq!(a.to_string().len(), 43);
    assert_eq!(Pseudonym::parse(&a.to_string(), 1).unwrap(), a);
}

#[test]
fn a_batch_opens_to_what_each_token_opens_to() {
    let prs = Prs::new(PrsKeys::generate());
    let nvi = recipient("nvi", KeyAlgorithm::X25519);
    let other = recipient("ura:12345678", KeyAlgorithm::X25519);
    let people = [bsn("123456782"), bsn("111222333"), bsn("123456782")];
    let mut tokens: Vec<ExchangeToken> = people
        .iter()
        .map(|person| token_for(&prs, &nvi, person))
        .collect();
    // Refused tokens inside the batch keep their place and their error.
    tokens.insert(1, token_for(&prs, &other, &people[0]));
    let opened = nvi.open_batch(&tokens, NOW);
    assert_eq!(opened.len(), tokens.len());
    for (token, batched) in tokens.iter().zip(&opened) {
        match (nvi.open(token, NOW), batched) {
            (Ok(alone), Ok(batched)) => assert_eq!(alone, *batched),
            (Err(Error::WrongRecipient), Err(Error::WrongRecipient)) => {}
            (alone, batched) => panic!("alone {alone:?}, in a batch {batched:?}"),
        }
    }
    assert!(matches!(opened[1], Err(Error::WrongRecipient)));
    assert_eq!(opened[0].as_ref().unwrap(), opened[3].as_ref().unwrap());
    assert_ne!(opened[0].as_ref().unwrap(), opened[2].as_ref().unwrap());
    assert!(nvi.open_batch(&[], NOW).is_empty());
}

#[test]
fn two_recipients_get_different_pseudonyms_and_people_differ() {
    let prs = Prs::new(PrsKeys::generate());
    let nvi = recipient("nvi", KeyAlgorithm::X25519);
    let hospital = recipient("ura:12345678", KeyAlgorithm::X25519);
    let project = recipient("project:diabetes-2027", KeyAlgorithm::X25519);
    let person = bsn("123456782");
    let at_nvi = pseudonym(&prs, &nvi, &person);
    let at_hospital = pseudonym(&prs, &hospital, &person);
    let at_project = pseudonym(&prs, &project, &person);
    assert_ne!(at_nvi, at_hospital);
    assert_ne!(at_nvi, at_project);
    assert_ne!(at_hospital, at_project);
    assert_ne!(at_nvi, pseudonym(&prs, &nvi, &bsn("111222333")));
}

#[test]
fn another_prs_seed_gives_other_pseudonyms() {
    let nvi = recipient("nvi", KeyAlgorithm::X25519);
    let person = bsn("123456782");
    let keys = PrsKeys::generate();
    let rotated = keys.rotate_oprf_seed();
    assert_eq!(rotated.generation(), 2);
    let old = pseudonym(&Prs::new(keys), &nvi, &person);
    let new = pseudonym(&Prs::new(rotated), &nvi, &person);
    assert_ne!(old, new);
    assert_eq!(new.key_version(), 2);
}

#[test]
fn token_for_one_recipient_is_useless_to_another() {
    let prs = Prs::new(PrsKeys::generate());
    let person = bsn("123456782");
    for algorithm in [KeyAlgorithm::X25519, KeyAlgorithm::P256] {
        let a = recipient("ura:12345678", algorithm);
        let b = recipient("ura:87654321", algorithm);
        let token = token_for(&prs, &a, &person);
        assert!(
            matches!(b.open(&token, NOW), Err(Error::WrongRecipient)),
            "{algorithm:?}"
        );
    }
    // Same recipient id, another key pair (e.g. a stolen token offered to an impostor
    // that registered nothing): the key id differs.
    let a = recipient("nvi", KeyAlgorithm::X25519);
    let impostor = recipient("nvi", KeyAlgorithm::X25519);
    assert!(matches!(
        impostor.open(&token_for(&prs, &a, &person), NOW),
        Err(Error::WrongRecipient)
    ));
    // An RSA recipient handed an ECDH-ES token for someone else.
    let rsa = recipient("ura:11111111", KeyAlgorithm::Rsa);
    assert!(matches!(
        rsa.open(&token_for(&prs, &a, &person), NOW),
        Err(Error::WrongRecipient)
    ));
}

#[test]
fn audience_is_checked_even_when_the_key_matches() {
    // A PRS that was told the wrong recipient id for a key: the token decrypts but names
    // another recipient, and is refused.
    let prs = Prs::new(PrsKeys::generate());
    let hospital = recipient("ura:12345678", KeyAlgorithm::X25519);
    let handle = prs
        .recipient(RecipientId::referral_index(), hospital.public_key().clone())
        .unwrap();
    let (factor, blinded) = blind(&bsn("123456782")).unwrap();
    let token = ExchangeToken::new(handle.evaluate(&blinded, NOW).unwrap(), factor);
    assert!(matches!(
        hospital.open(&token, NOW),
        Err(Error::WrongRecipient)
    ));
}

#[test]
fn tampered_tokens_are_refused() {
    let prs = Prs::new(PrsKeys::generate());
    let nvi = recipient("nvi", KeyAlgorithm::X25519);
    let token = token_for(&prs, &nvi, &bsn("123456782"));
    let json: serde_json::Value = serde_json::from_str(&token.to_json()).unwrap();
    let jwe = json["oprf_jwe"].as_str().unwrap();
    let factor = json["blind_factor"].as_str().unwrap();
    let with_jwe = |jwe: &str| {
        ExchangeToken::from_json(
            &serde_json::json!({"oprf_jwe": jwe, "blind_factor": factor}).to_string(),
        )
        .unwrap()
    };
    // Every single-character change in the ciphertext, IV or tag part is caught.
    let parts: Vec<&str> = jwe.split('.').collect();
    for (index, part) in parts.iter().enumerate().skip(2) {
        let mut chars: Vec<char> = part.chars().collect();
        chars[0] = if chars[0] == 'A' { 'B' } else { 'A' };
        let mut forged = parts.clone();
        let changed: String = chars.into_iter().collect();
        forged[index] = &changed;
        let result = nvi.open(&with_jwe(&forged.join(".")), NOW);
        assert!(
            matches!(result, Err(Error::DecryptionFailed | Error::Malformed(_))),
            "part {index}: {result:?}"
        );
    }
    // A changed header is caught by the tag (it is the additional authenticated data).
    let mut header = parts[0].to_owned();
    header.insert_str(header.len() - 2, "IiwiYSI6");
    let mut forged = parts.clone();
    forged[0] = &header;
    assert!(nvi.open(&with_jwe(&forged.join(".")), NOW).is_err());
    // Truncated or garbage JWEs.
    for broken in [&jwe[..jwe.len() - 5], "", "a.b.c.d.e", "not a jwe"] {
        assert!(nvi.open(&with_jwe(broken), NOW).is_err(), "{broken}");
    }
}

#[test]
fn expired_tokens_are_refused() {
    let prs = Prs::new(PrsKeys::generate());
    let nvi = recipient("nvi", KeyAlgorithm::X25519);
    let token = token_for(&prs, &nvi, &bsn("123456782"));
    let last = NOW + EXCHANGE_TOKEN_LIFETIME_S + CLOCK_SKEW_S;
    assert!(nvi.open(&token, last).is_ok());
    assert!(matches!(nvi.open(&token, last + 1), Err(Error::Expired)));
    assert!(matches!(
        nvi.open(&token, NOW - CLOCK_SKEW_S - 1),
        Err(Error::Expired)
    ));
}

#[test]
fn malformed_tokens_give_typed_errors() {
    for bad in [
        "",
        "{}",
        "[]",
        r#"{"oprf_jwe":"a.b.c.d.e"}"#,
        r#"{"oprf_jwe":"a.b.c.d.e","blind_factor":"***"}"#,
        r#"{"oprf_jwe":"a.b.c.d.e","blind_factor":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"}"#,
        r#"{"oprf_jwe":"a.b.c.d.e","blind_factor":"__________________________________________8"}"#,
    ] {
        assert!(
            matches!(ExchangeToken::from_json(bad), Err(Error::Malformed(_))),
            "{bad}"
        );
    }
    let huge = format!(
        r#"{{"oprf_jwe":"{}","blind_factor":""}}"#,
        "a".repeat(20_000)
    );
    assert!(matches!(
        ExchangeToken::from_json(&huge),
        Err(Error::Malformed(_))
    ));
}

#[test]
fn rsa_oaep_256_and_p256_round_trip() {
    let prs = Prs::new(PrsKeys::generate());
    let person = bsn("123456782");
    for algorithm in [KeyAlgorithm::Rsa, KeyAlgorithm::P256] {
        let keys = recipient("ura:12345678", algorithm);
        let jwk: serde_json::Value = serde_json::from_str(&keys.public_jwk()).unwrap();
        assert_eq!(jwk["alg"], algorithm.jwe_alg());
        assert_eq!(jwk["kid"], keys.public_key().key_id());
        let token = token_for(&prs, &keys, &person);
        let header = token.oprf_jwe().split('.').next().unwrap();
        let header: serde_json::Value = serde_json::from_slice(&base64_url_decode(header)).unwrap();
        assert_eq!(header["alg"], algorithm.jwe_alg());
        assert_eq!(header["enc"], "A256GCM");
        let first = keys.open(&token, NOW).unwrap();
        assert_eq!(first, pseudonym(&prs, &keys, &person));
    }
}

fn base64_url_decode(text: &str) -> Vec<u8> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut bits = 0u32;
    let mut count = 0;
    let mut out = Vec::new();
    for c in text.bytes() {
        bits = (bits << 6) | ALPHABET.iter().position(|&a| a == c).unwrap() as u32;
        count += 6;
        if count >= 8 {
            count -= 8;
            out.push((bits >> count) as u8);
        }
    }
    out
}

#[test]
fn keys_persist_across_reload_with_private_permissions() {
    let root = tempfile::tempdir().unwrap();
    let prs_dir = root.path().join("prs");
    let nvi_dir = root.path().join("nvi");
    let person = bsn("123456782");
    let id = RecipientId::referral_index();

    let prs = Prs::new(PrsKeys::load_or_generate(&prs_dir).unwrap());
    let nvi = RecipientKeys::load_or_generate(&nvi_dir, id.clone(), KeyAlgorithm::X25519).unwrap();
    let before = pseudonym(&prs, &nvi, &person);
    let zvn_before = prs
        .zvn_from_sedula("198002070012", parse_birth_date("1980-02-07").unwrap())
        .unwrap();
    let kid_before = nvi.public_key().key_id().to_owned();
    drop((prs, nvi));

    let prs = Prs::new(PrsKeys::load_or_generate(&prs_dir).unwrap());
    let nvi = RecipientKeys::load_or_generate(&nvi_dir, id.clone(), KeyAlgorithm::X25519).unwrap();
    assert_eq!(nvi.public_key().key_id(), kid_before);
    assert_eq!(pseudonym(&prs, &nvi, &person), before);
    assert_eq!(
        prs.zvn_from_sedula("198002070012", parse_birth_date("1980-02-07").unwrap())
            .unwrap(),
        zvn_before
    );
    // The recipient key file belongs to one recipient id.
    assert!(matches!(
        RecipientKeys::load_or_generate(
            &nvi_dir,
            RecipientId::parse("ura:12345678").unwrap(),
            KeyAlgorithm::X25519
        ),
        Err(Error::CorruptKeyFile { .. })
    ));

    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode =
            |path: &std::path::Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&prs_dir), 0o700);
        assert_eq!(mode(&nvi_dir), 0o700);
        let prs_file = prs_dir.join(zorgnet_pseudonym::PRS_KEY_FILE);
        let nvi_file = nvi_dir.join(zorgnet_pseudonym::RECIPIENT_KEY_FILE);
        assert_eq!(mode(&prs_file), 0o600);
        assert_eq!(mode(&nvi_file), 0o600);
        // Only the key file, no temporary leftovers.
        assert_eq!(std::fs::read_dir(&prs_dir).unwrap().count(), 1);

        std::fs::set_permissions(&prs_file, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(
            PrsKeys::load_or_generate(&prs_dir),
            Err(Error::InsecurePermissions { mode: 0o644, .. })
        ));
    }
}

#[test]
fn rsa_recipient_keys_persist() {
    let dir = tempfile::tempdir().unwrap();
    let id = RecipientId::parse("project:cohort-1").unwrap();
    let first = RecipientKeys::load_or_generate(dir.path(), id.clone(), KeyAlgorithm::Rsa).unwrap();
    let again = RecipientKeys::load_or_generate(dir.path(), id, KeyAlgorithm::Rsa).unwrap();
    assert_eq!(first.public_jwk(), again.public_jwk());
    let prs = Prs::new(PrsKeys::generate());
    let person = bsn("123456782");
    assert_eq!(
        pseudonym(&prs, &first, &person),
        pseudonym(&prs, &again, &person)
    );
}

#[test]
fn corrupt_key_files_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(zorgnet_pseudonym::PRS_KEY_FILE);
    std::fs::write(&path, b"{\"format\":\"something else\"}").unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    assert!(matches!(
        PrsKeys::load(dir.path()),
        Err(Error::CorruptKeyFile { .. })
    ));
    assert!(
        PrsKeys::load(&dir.path().join("missing"))
            .unwrap()
            .is_none()
    );
}

#[test]
fn debug_output_never_shows_key_material() {
    let root = tempfile::tempdir().unwrap();
    let prs_keys = PrsKeys::load_or_generate(&root.path().join("prs")).unwrap();
    let nvi = RecipientKeys::load_or_generate(
        &root.path().join("nvi"),
        RecipientId::referral_index(),
        KeyAlgorithm::X25519,
    )
    .unwrap();
    let prs = Prs::new(PrsKeys::load(&root.path().join("prs")).unwrap().unwrap());
    let token = token_for(&prs, &nvi, &bsn("123456782"));
    let handle = prs
        .recipient(RecipientId::referral_index(), nvi.public_key().clone())
        .unwrap();
    let debug = format!("{prs_keys:?} {prs:?} {nvi:?} {token:?} {handle:?}");
    let token_json: serde_json::Value = serde_json::from_str(&token.to_json()).unwrap();
    let mut secrets = vec![
        token_json["blind_factor"]
            .as_str()
            .unwrap()
            .trim_end_matches('=')
            .to_owned(),
    ];
    for file in [
        root.path().join("prs/prs-keys.json"),
        root.path().join("nvi/recipient-keys.json"),
    ] {
        let json: serde_json::Value =
            serde_json::from_slice(&std::fs::read(file).unwrap()).unwrap();
        for (name, value) in json.as_object().unwrap() {
            let secret = name.contains("key") || name.contains("seed");
            if let Some(text) = value.as_str().filter(|text| secret && text.len() > 20) {
                secrets.push(text.to_owned());
            }
        }
    }
    assert!(secrets.len() >= 6, "{secrets:?}");
    for secret in &secrets {
        assert!(
            !debug.contains(secret.as_str()),
            "Debug shows a secret: {debug}"
        );
        assert!(
            !debug.contains(&secret[..16]),
            "Debug shows part of a secret: {debug}"
        );
    }
}

#[test]
fn zvn_from_sedula_is_stable_valid_and_keyed() {
    let keys = PrsKeys::generate();
    let other = Prs::new(PrsKeys::generate());
    let birth = parse_birth_date("1980-02-07").unwrap();
    let prs = Prs::new(keys);
    let zvn = prs.zvn_from_sedula("198002070012", birth).unwrap();
    assert!(zvn_is_valid(zvn.as_str()));
    assert_eq!(zvn, prs.zvn_from_sedula(" 1980-0207-0012 ", birth).unwrap());
    assert_ne!(zvn, other.zvn_from_sedula("198002070012", birth).unwrap());
    assert_ne!(zvn, prs.zvn_from_sedula("198002070013", birth).unwrap());
    assert_ne!(
        zvn,
        prs.zvn_from_sedula("198002070012", parse_birth_date("1980-02-08").unwrap())
            .unwrap()
    );
    // The same ZVN key survives a rotation of the OPRF seed.
    let keys = PrsKeys::generate();
    let before = Prs::new(keys.rotate_oprf_seed())
        .zvn_from_sedula("A1", birth)
        .unwrap();
    assert_eq!(before, Prs::new(keys).zvn_from_sedula("A1", birth).unwrap());
    assert!(matches!(
        prs.zvn_from_sedula("", birth),
        Err(Error::InvalidIdentifier(_))
    ));
}

#[test]
fn zvn_from_sealed_bsn_never_sends_the_bsn_in_clear() {
    let prs = Prs::new(PrsKeys::generate());
    let published = RecipientPublicKey::from_jwk(&prs.sealing_public_key().to_jwk()).unwrap();
    let bsn_value = Bsn::parse("123456782").unwrap();
    let sealed_once = seal_bsn_for_prs(&bsn_value, &published).unwrap();
    let sealed_twice = seal_bsn_for_prs(&bsn_value, &published).unwrap();
    assert!(!sealed_once.contains("123456782"));
    assert_ne!(sealed_once, sealed_twice);
    let zvn = prs.zvn_from_sealed_bsn(&sealed_once).unwrap();
    assert_eq!(zvn, prs.zvn_from_sealed_bsn(&sealed_twice).unwrap());
    assert!(zvn_is_valid(zvn.as_str()));
    // Sealed to another PRS: refused.
    let other = Prs::new(PrsKeys::generate());
    assert!(matches!(
        other.zvn_from_sealed_bsn(&sealed_once),
        Err(Error::WrongRecipient)
    ));
    let other_zvn = prs
        .zvn_from_sealed_bsn(
            &seal_bsn_for_prs(&Bsn::parse("111222333").unwrap(), &published).unwrap(),
        )
        .unwrap();
    assert_ne!(zvn, other_zvn);
}

#[test]
fn zvn_works_as_a_personal_id_like_a_bsn() {
    let prs = Prs::new(PrsKeys::generate());
    let nvi = recipient("nvi", KeyAlgorithm::X25519);
    let zvn = prs
        .zvn_from_sedula("198002070012", parse_birth_date("1980-02-07").unwrap())
        .unwrap();
    let parsed = Zvn::parse(zvn.as_str()).unwrap();
    let a = pseudonym(&prs, &nvi, &PersonalId::Zvn(zvn));
    let b = pseudonym(&prs, &nvi, &PersonalId::Zvn(parsed));
    assert_eq!(a, b);
    assert_ne!(a, pseudonym(&prs, &nvi, &bsn("123456782")));
}

#[test]
fn many_people_get_distinct_pseudonyms() {
    let prs = Prs::new(PrsKeys::generate());
    let nvi = recipient("nvi", KeyAlgorithm::X25519);
    let registered = prs
        .recipient(RecipientId::referral_index(), nvi.public_key().clone())
        .unwrap();
    let mut seen = HashSet::new();
    let mut n_bsns = 0;
    for number in 100_000_000u32..100_002_000 {
        let Ok(value) = Bsn::parse(&number.to_string()) else {
            continue;
        };
        n_bsns += 1;
        let (factor, blinded) = blind(&PersonalId::Bsn(value)).unwrap();
        let token = ExchangeToken::new(registered.evaluate(&blinded, NOW).unwrap(), factor);
        assert!(seen.insert(nvi.open(&token, NOW).unwrap()));
    }
    assert!(n_bsns > 150, "{n_bsns}");
}

#[test]
fn service_types_can_be_shared_between_threads() {
    fn shareable<T: Send + Sync>() {}
    shareable::<Prs>();
    shareable::<zorgnet_pseudonym::PrsRecipient>();
    shareable::<RecipientKeys>();
    shareable::<RecipientPublicKey>();
    shareable::<ExchangeToken>();
}

proptest! {
    /// Whatever arrives from the network gives a value or a typed error, never a panic.
    #[test]
    fn arbitrary_input_never_panics(text in ".{0,200}", bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let lossy = String::from_utf8_lossy(&bytes).into_owned();
        for input in [&text, &lossy] {
            let _ = ExchangeToken::from_json(input);
            let _ = zorgnet_pseudonym::BlindedInput::from_base64(input);
            let _ = zorgnet_pseudonym::BlindFactor::from_base64(input);
            let _ = RecipientPublicKey::from_jwk(input);
            let _ = RecipientId::parse(input);
            let _ = Zvn::parse(input);
            let _ = Bsn::parse(input);
            let _ = parse_birth_date(input);
            let _ = zorgnet_pseudonym::normalise_sedula(input);
        }
    }

    #[test]
    fn arbitrary_jwes_never_panic(parts in proptest::collection::vec("[A-Za-z0-9_-]{0,60}", 0..7)) {
        static PARTIES: std::sync::OnceLock<(Prs, RecipientKeys)> = std::sync::OnceLock::new();
        let (prs, keys) =
            PARTIES.get_or_init(|| (Prs::new(PrsKeys::generate()), recipient("nvi", KeyAlgorithm::X25519)));
        let jwe = parts.join(".");
        let _ = prs.zvn_from_sealed_bsn(&jwe);
        let (factor, _) = blind(&bsn("123456782")).unwrap();
        prop_assert!(keys.open(&ExchangeToken::new(jwe, factor), NOW).is_err());
    }
}

#[test]
fn rotating_a_recipient_encryption_key_keeps_its_pseudonyms() {
    let prs = Prs::new(PrsKeys::generate());
    let person = bsn("123456782");
    let old = recipient("ura:12345678", KeyAlgorithm::Rsa);
    let new = old.rotate_encryption_key(KeyAlgorithm::X25519).unwrap();
    assert_ne!(old.public_key().key_id(), new.public_key().key_id());
    assert_eq!(
        pseudonym(&prs, &old, &person),
        pseudonym(&prs, &new, &person)
    );
    // Tokens for the old key do not open with the new one.
    assert!(matches!(
        new.open(&token_for(&prs, &old, &person), NOW),
        Err(Error::WrongRecipient)
    ));
    let dir = tempfile::tempdir().unwrap();
    assert!(new.save_new(dir.path()).unwrap());
    assert!(
        !new.save_new(dir.path()).unwrap(),
        "never overwrites a key file"
    );
    let loaded = RecipientKeys::load(dir.path()).unwrap().unwrap();
    assert_eq!(
        pseudonym(&prs, &loaded, &person),
        pseudonym(&prs, &old, &person)
    );
}

#[test]
fn rotating_the_sealing_key_keeps_pseudonyms_and_zvns() {
    let keys = PrsKeys::generate();
    let rotated = keys.rotate_sealing_key();
    assert_eq!(rotated.generation(), keys.generation());
    let old = Prs::new(keys);
    let new = Prs::new(rotated);
    assert_ne!(
        old.sealing_public_key().key_id(),
        new.sealing_public_key().key_id()
    );
    let value = Bsn::parse("123456782").unwrap();
    let zvn_old = old
        .zvn_from_sealed_bsn(&seal_bsn_for_prs(&value, old.sealing_public_key()).unwrap())
        .unwrap();
    let zvn_new = new
        .zvn_from_sealed_bsn(&seal_bsn_for_prs(&value, new.sealing_public_key()).unwrap())
        .unwrap();
    assert_eq!(zvn_old, zvn_new);
    let nvi = recipient("nvi", KeyAlgorithm::X25519);
    assert_eq!(
        pseudonym(&old, &nvi, &bsn("123456782")),
        pseudonym(&new, &nvi, &bsn("123456782"))
    );
}
