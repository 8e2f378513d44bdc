//! RFC 9497 Appendix A.1.1: the test vectors of the OPRF mode of ristretto255-SHA512,
//! copied from the RFC text, replayed through voprf exactly as this crate calls it:
//! `DeriveKeyPair` (how the PRS derives per-recipient keys), `Blind`, `BlindEvaluate`,
//! `Finalize`. The recipient-side unblinding is checked against the same vectors in
//! `src/recipient.rs`.

use voprf::{BlindedElement, EvaluationElement, OprfClient, OprfServer, Ristretto255};

const SEED: &str = "a3a3a3a3a3a3a3a3a3a3a3a3a3a3a3a3a3a3a3a3a3a3a3a3a3a3a3a3a3a3a3a3";
const KEY_INFO: &str = "74657374206b6579";
const SK_SM: &str = "5ebcea5ee37023ccb9fc2d2019f9d7737be85591ae8652ffa9ef0f4d37063b0e";
const BLIND: &str = "64d37aed22a27f5191de1c1d69fadb899d8862b58eb4220029e036ec4c1f6706";

struct Vector {
    input: &'static str,
    blinded_element: &'static str,
    evaluation_element: &'static str,
    output: &'static str,
}

const VECTORS: [Vector; 2] = [
    Vector {
        input: "00",
        blinded_element: "609a0ae68c15a3cf6903766461307e5c8bb2f95e7e6550e1ffa2dc99e412803c",
        evaluation_element: "7ec6578ae5120958eb2db1745758ff379e77cb64fe77b0b2d8cc917ea0869c7e",
        output: "527759c3d9366f277d8c6020418d96bb393ba2afb20ff90df23fb7708264e2f3ab9135e3bd69955851de4b1f9fe8a0973396719b7912ba9ee8aa7d0b5e24bcf6",
    },
    Vector {
        input: "5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a",
        blinded_element: "da27ef466870f5f15296299850aa088629945a17d1f5b7f5ff043f76b3c06418",
        evaluation_element: "b4cbf5a4f1eeda5a63ce7b77c7d23f461db3fcab0dd28e4e17cecb5c90d02c25",
        output: "f4a74c9c592497375e796aa837e907b1a045d34306a749db9f34221f7e750cb4f2a6413a6bf6fa5e19ba6348eb673934a722a7ede2e7621306d18951e7cf2c73",
    },
];

fn hex(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
        .collect()
}

#[test]
fn derive_key_pair_gives_the_rfc_key() {
    let server = OprfServer::<Ristretto255>::new_from_seed(&hex(SEED), &hex(KEY_INFO)).unwrap();
    assert_eq!(server.serialize().to_vec(), hex(SK_SM));
}

#[test]
fn blind_evaluate_finalize_give_the_rfc_values() {
    let server = OprfServer::<Ristretto255>::new_from_seed(&hex(SEED), &hex(KEY_INFO)).unwrap();
    let blind_bytes = hex(BLIND);
    let blind = OprfClient::<Ristretto255>::deserialize(&blind_bytes).unwrap();
    let scalar: curve25519_dalek::Scalar = Option::from(
        curve25519_dalek::Scalar::from_canonical_bytes(blind_bytes.clone().try_into().unwrap()),
    )
    .unwrap();
    for vector in VECTORS {
        let input = hex(vector.input);
        let blinded =
            OprfClient::<Ristretto255>::deterministic_blind_unchecked(&input, scalar).unwrap();
        assert_eq!(
            blinded.message.serialize().to_vec(),
            hex(vector.blinded_element)
        );
        assert_eq!(
            blinded.state.serialize().to_vec(),
            blind.serialize().to_vec()
        );

        // The PRS receives the blinded element as bytes, as over the wire.
        let received =
            BlindedElement::<Ristretto255>::deserialize(&hex(vector.blinded_element)).unwrap();
        let evaluation = server.blind_evaluate(&received);
        assert_eq!(
            evaluation.serialize().to_vec(),
            hex(vector.evaluation_element)
        );

        let evaluation =
            EvaluationElement::<Ristretto255>::deserialize(&hex(vector.evaluation_element))
                .unwrap();
        let output = blind.finalize(&input, &evaluation).unwrap();
        assert_eq!(output.to_vec(), hex(vector.output));
        assert_eq!(
            server.evaluate(&input).unwrap().to_vec(),
            hex(vector.output)
        );
    }
}
