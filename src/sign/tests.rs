//! Unit tests with keys made by rPGP itself (gpg interoperability is in tests/sign_gpg.rs).

use std::io::Read;
use std::path::Path;

use pgp::composed::{
    ArmorOptions, KeyType, SecretKeyParamsBuilder, SignedSecretKey, SubkeyParamsBuilder,
};
use pgp::types::{KeyVersion, Password};

use super::keys::cleartext_canonical_form;
use super::*;

/// An Ed25519 (legacy, v4) key; `signing_subkey` chooses the cert-only-primary layout.
fn generate_key(user_id: &str, signing_subkey: bool, version: KeyVersion) -> SignedSecretKey {
    let mut rng = rand::thread_rng();
    let key_type = match version {
        KeyVersion::V6 => KeyType::Ed25519,
        _ => KeyType::Ed25519Legacy,
    };
    let mut params = SecretKeyParamsBuilder::default();
    params
        .version(version)
        .key_type(key_type.clone())
        .can_certify(true)
        .can_sign(!signing_subkey)
        .primary_user_id(user_id.into());
    if signing_subkey {
        params.subkeys(vec![SubkeyParamsBuilder::default()
            .version(version)
            .key_type(key_type)
            .can_sign(true)
            .build()
            .expect("subkey params")]);
    }
    params
        .build()
        .expect("key params")
        .generate(&mut rng)
        .expect("key generation")
}

fn armored_secret(key: &SignedSecretKey) -> String {
    key.to_armored_string(ArmorOptions::default())
        .expect("armor secret key")
}

fn armored_public(key: &SignedSecretKey) -> String {
    key.to_public_key()
        .to_armored_string(ArmorOptions::default())
        .expect("armor public key")
}

fn signing_key(key: &SignedSecretKey) -> SigningKey {
    SigningKey::from_armored_str(&armored_secret(key), None).expect("load signing key")
}

#[test]
fn handles_are_shareable_across_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<SigningKey>();
    assert_send_sync::<Keyring>();
}

#[test]
fn subkey_layout_signs_with_the_subkey_and_verifies() {
    let secret = generate_key("Sub Layout <sub@example.org>", true, KeyVersion::V4);
    let primary = fingerprint_hex(&pgp::types::KeyDetails::fingerprint(&secret.primary_key));
    let subkey = fingerprint_hex(&pgp::types::KeyDetails::fingerprint(
        &secret.secret_subkeys[0].key,
    ));
    let key = signing_key(&secret);
    assert_eq!(key.fingerprint(), primary);
    assert_eq!(key.signing_fingerprint(), subkey);
    assert_eq!(primary.len(), 40);
    assert!(primary
        .chars()
        .all(|c| c.is_ascii_digit() || c.is_ascii_uppercase()));

    let keyring = Keyring::from_armored(armored_public(&secret).as_bytes()).expect("keyring");
    assert_eq!(keyring.len(), 1);
    assert_eq!(keyring.primary_fingerprints(), vec![primary.clone()]);

    let data = b"image.tar.zst bytes \x00\x01\xff\r\n".repeat(1000);
    let signature = key.sign_detached(&mut data.as_slice()).expect("sign");
    assert!(signature.starts_with("-----BEGIN PGP SIGNATURE-----"));
    let signer = keyring
        .verify_detached(signature.as_bytes(), &mut data.as_slice())
        .expect("verify");
    assert_eq!(
        signer,
        Signer {
            signing_fingerprint: subkey,
            primary_fingerprint: primary,
            user_id: Some("Sub Layout <sub@example.org>".to_string()),
        }
    );
    assert_eq!(&signer, key.signer());
}

#[test]
fn primary_layout_signs_with_the_primary() {
    let secret = generate_key("Primary Layout <p@example.org>", false, KeyVersion::V4);
    let key = signing_key(&secret);
    assert_eq!(key.signing_fingerprint(), key.fingerprint());
    let keyring = Keyring::from_armored(key.public_key_armored().expect("export").as_bytes())
        .expect("keyring from exported public key");
    let text = "DATA metadata.tar.zst 123 BLAKE2B aa SHA512 bb\n";
    let signed = key.sign_cleartext(text).expect("clearsign");
    let (returned, signer) = keyring.verify_cleartext(&signed).expect("verify");
    assert_eq!(returned, text);
    assert_eq!(signer.signing_fingerprint, key.fingerprint());
}

#[test]
fn detached_signature_is_binary_mode_sha512_with_issuer_and_time() {
    let key = signing_key(&generate_key(
        "Fields <f@example.org>",
        true,
        KeyVersion::V4,
    ));
    let armored = key.sign_detached(&mut &b"payload"[..]).expect("sign");
    let (signature, _) =
        <pgp::composed::DetachedSignature as pgp::composed::Deserializable>::from_string(&armored)
            .expect("parse");
    let signature = signature.signature;
    assert_eq!(signature.typ(), Some(pgp::packet::SignatureType::Binary));
    assert_eq!(
        signature.hash_alg(),
        Some(pgp::crypto::hash::HashAlgorithm::Sha512)
    );
    let issuers: Vec<String> = signature
        .issuer_fingerprint()
        .into_iter()
        .map(fingerprint_hex)
        .collect();
    assert_eq!(issuers, vec![key.signing_fingerprint()]);
    let created = signature.created().expect("creation time").as_secs();
    assert!(created.abs_diff(super::cert::now_unix()) < 60);
}

#[test]
fn cleartext_layout_and_round_trip_of_awkward_text() {
    let secret = generate_key("Clear <c@example.org>", true, KeyVersion::V4);
    let key = signing_key(&secret);
    let keyring = Keyring::from_armored(armored_public(&secret).as_bytes()).expect("keyring");

    let text = "- leading dash\n-----BEGIN not armor\nspaces at end   \t\n\nFrom here\nlast\n";
    let signed = key.sign_cleartext(text).expect("clearsign");
    assert!(signed.starts_with("-----BEGIN PGP SIGNED MESSAGE-----\nHash: SHA512\n\n"));
    assert!(signed.contains("\n- - leading dash\n- -----BEGIN not armor\n"));
    // The final line ending of the text is the one before the armor, as gpg lays it out.
    assert!(signed.contains("\nlast\n-----BEGIN PGP SIGNATURE-----\n"));

    let (returned, _) = keyring.verify_cleartext(&signed).expect("verify");
    assert_eq!(
        returned,
        "- leading dash\n-----BEGIN not armor\nspaces at end\n\nFrom here\nlast\n"
    );

    // No final newline, and an empty text.
    let (returned, _) = keyring
        .verify_cleartext(&key.sign_cleartext("a\nb").expect("sign"))
        .expect("verify");
    assert_eq!(returned, "a\nb\n");
    let (returned, _) = keyring
        .verify_cleartext(&key.sign_cleartext("").expect("sign"))
        .expect("verify");
    assert_eq!(returned, "");
}

#[test]
fn cleartext_canonical_form_trims_and_uses_crlf() {
    assert_eq!(
        cleartext_canonical_form("a \nb\t\r\n\nc"),
        "a\r\nb\r\n\r\nc"
    );
    assert_eq!(cleartext_canonical_form(""), "");
}

#[test]
fn tampering_is_a_bad_signature() {
    let secret = generate_key("Tamper <t@example.org>", true, KeyVersion::V4);
    let key = signing_key(&secret);
    let keyring = Keyring::from_armored(armored_public(&secret).as_bytes()).expect("keyring");

    let signature = key.sign_detached(&mut &b"original"[..]).expect("sign");
    let err = keyring
        .verify_detached(signature.as_bytes(), &mut &b"originaL"[..])
        .expect_err("tampered data must fail");
    assert!(
        matches!(&err, SignError::BadSignature { fingerprint } if *fingerprint == key.signing_fingerprint()),
        "{err}"
    );

    let signed = key.sign_cleartext("SIZE 10\n").expect("clearsign");
    let tampered = signed.replace("SIZE 10", "SIZE 11");
    let err = keyring
        .verify_cleartext(&tampered)
        .expect_err("tampered text must fail");
    assert!(matches!(err, SignError::BadSignature { .. }), "{err}");
}

#[test]
fn a_key_outside_the_keyring_is_unknown() {
    let trusted = generate_key("Trusted <t@example.org>", true, KeyVersion::V4);
    let stranger = signing_key(&generate_key(
        "Stranger <s@example.org>",
        true,
        KeyVersion::V4,
    ));
    let keyring = Keyring::from_armored(armored_public(&trusted).as_bytes()).expect("keyring");
    let signature = stranger.sign_detached(&mut &b"x"[..]).expect("sign");
    let err = keyring
        .verify_detached(signature.as_bytes(), &mut &b"x"[..])
        .expect_err("unknown key");
    assert!(
        matches!(&err, SignError::UnknownKey { issuer } if *issuer == stranger.signing_fingerprint()),
        "{err}"
    );
}

#[test]
fn malformed_signatures_are_signature_errors() {
    let secret = generate_key("Armor <a@example.org>", false, KeyVersion::V4);
    let keyring = Keyring::from_armored(armored_public(&secret).as_bytes()).expect("keyring");
    let key = signing_key(&secret);
    let good = key.sign_detached(&mut &b"x"[..]).expect("sign");

    let truncated = &good[..good.len() / 2];
    let corrupt_base64 = good.replacen("\n", "\n!!!!", 3);
    for bad in [
        "",
        "not a signature",
        truncated,
        corrupt_base64.as_str(),
        "-----BEGIN PGP MESSAGE-----\n\nAAAA\n-----END PGP MESSAGE-----\n",
    ] {
        let err = keyring
            .verify_detached(bad.as_bytes(), &mut &b"x"[..])
            .expect_err("malformed");
        assert!(matches!(err, SignError::Signature(_)), "{bad:?}: {err}");
    }
    let err = keyring
        .verify_cleartext("hello\n")
        .expect_err("not clear-signed");
    assert!(matches!(err, SignError::Signature(_)), "{err}");
}

#[test]
fn several_signatures_must_all_verify() {
    let first = generate_key("One <1@example.org>", true, KeyVersion::V4);
    let second = generate_key("Two <2@example.org>", false, KeyVersion::V4);
    let third = signing_key(&generate_key(
        "Three <3@example.org>",
        false,
        KeyVersion::V4,
    ));
    let both = format!("{}{}", armored_public(&first), armored_public(&second));
    let keyring = Keyring::from_armored(both.as_bytes()).expect("two concatenated blocks");
    assert_eq!(keyring.len(), 2);

    let data = b"shared data";
    let (one, two) = (signing_key(&first), signing_key(&second));
    let signatures = format!(
        "{}{}",
        one.sign_detached(&mut &data[..]).expect("sign"),
        two.sign_detached(&mut &data[..]).expect("sign")
    );
    let signer = keyring
        .verify_detached(signatures.as_bytes(), &mut &data[..])
        .expect("both good");
    assert_eq!(signer.primary_fingerprint, one.fingerprint());

    let with_stranger = format!(
        "{}{}",
        one.sign_detached(&mut &data[..]).expect("sign"),
        third.sign_detached(&mut &data[..]).expect("sign")
    );
    let err = keyring
        .verify_detached(with_stranger.as_bytes(), &mut &data[..])
        .expect_err("one unknown signer fails the whole check");
    assert!(matches!(err, SignError::UnknownKey { .. }), "{err}");
}

#[test]
fn read_errors_on_the_data_are_reported_as_such() {
    struct FailingReader;
    impl Read for FailingReader {
        fn read(&mut self, _: &mut [u8]) -> std::io::Result<usize> {
            Err(std::io::Error::other("disk on fire"))
        }
    }
    let secret = generate_key("Io <io@example.org>", false, KeyVersion::V4);
    let key = signing_key(&secret);
    let err = key
        .sign_detached(&mut FailingReader)
        .expect_err("read error");
    assert!(
        matches!(&err, SignError::Data(e) if e.to_string() == "disk on fire"),
        "{err}"
    );
    let keyring = Keyring::from_armored(armored_public(&secret).as_bytes()).expect("keyring");
    let signature = key.sign_detached(&mut &b"x"[..]).expect("sign");
    let err = keyring
        .verify_detached(signature.as_bytes(), &mut FailingReader)
        .expect_err("read error");
    assert!(matches!(err, SignError::Data(_)), "{err}");
}

#[test]
fn v6_keys_are_refused() {
    let v6 = generate_key("Six <6@example.org>", false, KeyVersion::V6);
    let err = SigningKey::from_armored_str(&armored_secret(&v6), None).expect_err("v6");
    assert!(
        err.to_string().contains("only v4 keys are supported"),
        "{err}"
    );
    let err = Keyring::from_armored(armored_public(&v6).as_bytes()).expect_err("v6");
    assert!(
        err.to_string().contains("only v4 keys are supported"),
        "{err}"
    );
}

#[test]
fn key_files_that_cannot_sign_are_refused_with_their_path() {
    let dir = tempfile::tempdir().expect("tempdir");
    let secret = generate_key("Files <files@example.org>", true, KeyVersion::V4);

    let public_only = dir.path().join("public.asc");
    std::fs::write(&public_only, armored_public(&secret)).expect("write");
    let err = SigningKey::from_armored_file(&public_only, None).expect_err("public only");
    let message = err.to_string();
    assert!(
        message.starts_with(&public_only.display().to_string()),
        "{message}"
    );
    assert!(message.contains("only a public key"), "{message}");

    let garbage = dir.path().join("garbage.asc");
    std::fs::write(&garbage, "hello\n").expect("write");
    let err = SigningKey::from_armored_file(&garbage, None).expect_err("garbage");
    assert!(
        matches!(&err, SignError::Key { path, .. } if path == &garbage),
        "{err}"
    );

    let missing = dir.path().join("missing.asc");
    let err = SigningKey::from_armored_file(&missing, None).expect_err("missing");
    assert!(
        matches!(&err, SignError::Io { path, .. } if path == &missing),
        "{err}"
    );

    let two = dir.path().join("two.asc");
    let other = generate_key("Other <o@example.org>", false, KeyVersion::V4);
    std::fs::write(&two, armored_secret(&secret) + &armored_secret(&other)).expect("write");
    let err = SigningKey::from_armored_file(&two, None).expect_err("two keys");
    assert!(err.to_string().contains("holds 2 secret keys"), "{err}");

    // A keyring is not made of secret keys.
    let err = Keyring::load(&two).expect_err("secret keys in keyring");
    assert!(err.to_string().contains("public keys only"), "{err}");
}

#[test]
fn certify_only_key_without_signing_subkey_is_refused() {
    let mut rng = rand::thread_rng();
    let mut params = SecretKeyParamsBuilder::default();
    params
        .key_type(KeyType::Ed25519Legacy)
        .can_certify(true)
        .can_sign(false)
        .primary_user_id("Cert Only <c@example.org>".into());
    let secret = params
        .build()
        .expect("params")
        .generate(&mut rng)
        .expect("generate");
    let err =
        SigningKey::from_armored_str(&armored_secret(&secret), None).expect_err("cannot sign");
    let message = err.to_string();
    assert!(message.contains("no key can sign"), "{message}");
    assert!(
        message.contains("key flags do not allow signing"),
        "{message}"
    );
}

#[test]
fn passphrase_protected_key_needs_the_right_passphrase() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut secret = generate_key("Locked <l@example.org>", true, KeyVersion::V4);
    let mut rng = rand::thread_rng();
    secret
        .primary_key
        .set_password(&mut rng, &Password::from("correct horse"))
        .expect("lock primary");
    secret.secret_subkeys[0]
        .key
        .set_password(&mut rng, &Password::from("correct horse"))
        .expect("lock subkey");
    let key_file = dir.path().join("locked.asc");
    std::fs::write(&key_file, armored_secret(&secret)).expect("write");

    let err = SigningKey::from_armored_file(&key_file, None).expect_err("no passphrase");
    assert!(err.to_string().contains("passphrase-protected"), "{err}");

    let wrong = dir.path().join("wrong");
    std::fs::write(&wrong, "battery staple\n").expect("write");
    let err = SigningKey::from_armored_file(&key_file, Some(&wrong)).expect_err("wrong passphrase");
    let message = err.to_string();
    assert!(message.contains("wrong passphrase"), "{message}");
    assert!(message.contains(&wrong.display().to_string()), "{message}");

    let right = dir.path().join("right");
    std::fs::write(&right, "correct horse\nsecond line ignored\n").expect("write");
    let key = SigningKey::from_armored_file(&key_file, Some(&right)).expect("unlocks");
    let keyring = Keyring::from_armored(armored_public(&secret).as_bytes()).expect("keyring");
    let signature = key.sign_detached(&mut &b"locked"[..]).expect("sign");
    keyring
        .verify_detached(signature.as_bytes(), &mut &b"locked"[..])
        .expect("verifies");
}

#[test]
fn keyring_directory_takes_asc_and_gpg_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    let one = generate_key("Dir One <d1@example.org>", true, KeyVersion::V4);
    let two = generate_key("Dir Two <d2@example.org>", false, KeyVersion::V4);
    std::fs::write(dir.path().join("one.asc"), armored_public(&one)).expect("write");
    let binary = pgp::ser::Serialize::to_bytes(&two.to_public_key()).expect("binary key");
    std::fs::write(dir.path().join("two.gpg"), binary).expect("write");
    std::fs::write(dir.path().join("README"), "not a key").expect("write");

    let keyring = Keyring::load(dir.path()).expect("directory keyring");
    assert_eq!(keyring.len(), 2);
    for secret in [&one, &two] {
        let key = signing_key(secret);
        let signature = key.sign_detached(&mut &b"d"[..]).expect("sign");
        let signer = keyring
            .verify_detached(signature.as_bytes(), &mut &b"d"[..])
            .expect("verify");
        assert_eq!(signer.primary_fingerprint, key.fingerprint());
    }

    let empty = tempfile::tempdir().expect("tempdir");
    let err = Keyring::load(empty.path()).expect_err("empty directory");
    assert!(err.to_string().contains("no *.asc or *.gpg"), "{err}");
    let err = Keyring::load(Path::new("/nonexistent/keys.asc")).expect_err("missing");
    assert!(matches!(err, SignError::Io { .. }), "{err}");
}

#[test]
fn fingerprints_group_like_gpg() {
    assert_eq!(
        fingerprint_grouped("71310F82908402EECFC791F615CD71D2E97382A5"),
        "7131 0F82 9084 02EE CFC7  91F6 15CD 71D2 E973 82A5"
    );
    assert_eq!(fingerprint_grouped("ABCD1234"), "ABCD 1234");
}
