//! binfarm's OpenPGP signatures against real gpg, both ways.
//!
//! Keys are made with gpg in temporary GNUPGHOMEs, in the layouts people use: a certify-only
//! primary with a signing subkey, and a primary that signs; Ed25519 and RSA-3072; with and
//! without a passphrase. binfarm's signatures are checked the way Portage checks binpkgs:
//! `gpg --verify` with `--status-fd`, requiring GOODSIG and TRUST_ULTIMATE/TRUST_FULLY from a
//! keyring where the public key was imported and given ownertrust 6. gpg's signatures are
//! checked with binfarm's Keyring.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use binfarm::sign::{Keyring, SignError, Signer, SigningKey};

/// A temporary gpg home; its agent is stopped when it goes away, even if a test fails.
struct GpgHome {
    dir: tempfile::TempDir,
}

impl Drop for GpgHome {
    fn drop(&mut self) {
        let _ = Command::new("gpgconf")
            .arg("--homedir")
            .arg(self.dir.path())
            .args(["--kill", "all"])
            .status();
    }
}

/// Fingerprints of a key made by gpg.
struct GpgKey {
    primary: String,
    /// The component gpg (and binfarm) signs with: the signing subkey, or the primary.
    signing: String,
    user_id: String,
}

/// Status lines (`[GNUPG:] ...`) from gpg's output, without the prefix.
fn status_lines(text: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(text)
        .lines()
        .filter_map(|line| line.strip_prefix("[GNUPG:] "))
        .map(str::to_string)
        .collect()
}

impl GpgHome {
    fn new() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("binfarm-gpg-")
            .tempdir()
            .expect("temp gpg home");
        // gpg refuses homes readable by others.
        std::fs::set_permissions(
            dir.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o700),
        )
        .expect("chmod gpg home");
        GpgHome { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn file(&self, name: &str) -> PathBuf {
        self.path().join(name)
    }

    /// Runs gpg in this home with `stdin`; returns the output whatever the exit status.
    fn run_unchecked(&self, args: &[&str], stdin: &[u8]) -> Output {
        let mut child = Command::new("gpg")
            .arg("--homedir")
            .arg(self.path())
            .args(["--batch", "--no-tty"])
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run gpg");
        let mut input = child.stdin.take().expect("gpg stdin");
        // gpg may exit before reading everything when it fails; that shows in its status.
        let _ = input.write_all(stdin);
        drop(input);
        child.wait_with_output().expect("wait for gpg")
    }

    fn run(&self, args: &[&str], stdin: &[u8]) -> Vec<u8> {
        let output = self.run_unchecked(args, stdin);
        assert!(
            output.status.success(),
            "gpg {args:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        output.stdout
    }

    fn passphrase_args(passphrase: &str) -> Vec<&str> {
        vec!["--pinentry-mode", "loopback", "--passphrase", passphrase]
    }

    /// Makes a key: the primary with `primary_usage` ("cert" or "sign"), plus a signing
    /// subkey of `subkey_algo` when given.
    fn generate(
        &self,
        user_id: &str,
        algo: &str,
        primary_usage: &str,
        subkey_algo: Option<&str>,
        passphrase: &str,
    ) -> GpgKey {
        let mut args = Self::passphrase_args(passphrase);
        args.extend(["--quick-gen-key", user_id, algo, primary_usage, "never"]);
        self.run(&args, b"");
        let primary = self.fingerprints(user_id)[0].clone();
        if let Some(subkey_algo) = subkey_algo {
            let mut args = Self::passphrase_args(passphrase);
            args.extend(["--quick-add-key", &primary, subkey_algo, "sign", "never"]);
            self.run(&args, b"");
        }
        let fingerprints = self.fingerprints(&primary);
        let signing = fingerprints.last().expect("a fingerprint").clone();
        assert_eq!(fingerprints.len(), 1 + usize::from(subkey_algo.is_some()));
        GpgKey {
            primary,
            signing,
            user_id: user_id.to_string(),
        }
    }

    /// Primary then subkey fingerprints of the key matching `query`.
    fn fingerprints(&self, query: &str) -> Vec<String> {
        let listing = self.run(&["--with-colons", "--list-keys", query], b"");
        String::from_utf8_lossy(&listing)
            .lines()
            .filter_map(|line| line.strip_prefix("fpr:"))
            .filter_map(|rest| rest.split(':').nth(8))
            .map(str::to_string)
            .collect()
    }

    fn export_secret(&self, fingerprint: &str, passphrase: &str, name: &str) -> PathBuf {
        let mut args = Self::passphrase_args(passphrase);
        args.extend(["--armor", "--export-secret-keys", fingerprint]);
        let path = self.file(name);
        std::fs::write(&path, self.run(&args, b"")).expect("write secret key");
        path
    }

    fn export_public(&self, fingerprint: &str, name: &str) -> PathBuf {
        let path = self.file(name);
        std::fs::write(&path, self.run(&["--armor", "--export", fingerprint], b""))
            .expect("write public key");
        path
    }

    /// A home that trusts `armored_public_key` ultimately, as Portage's verify keyring does.
    fn portage_verifier(armored_public_key: &[u8], primary: &str) -> GpgHome {
        let home = GpgHome::new();
        home.run(&["--import"], armored_public_key);
        home.run(
            &["--import-ownertrust"],
            format!("{primary}:6:\n").as_bytes(),
        );
        // Portage verifies with --no-auto-check-trustdb: the trust database must be current.
        home.run(&["--check-trustdb"], b"");
        home
    }

    /// Portage's check: `gpg --verify` with status on fd 2, then GOODSIG and full or ultimate
    /// trust. Returns the VALIDSIG fields (fingerprint, ..., pubkey algo, hash algo, class,
    /// primary fingerprint), or the reason the check fails.
    fn portage_check(&self, args: &[&str], stdin: &[u8]) -> Result<(Vec<String>, Vec<u8>), String> {
        let mut full = vec!["--verify", "--no-auto-check-trustdb", "--status-fd", "2"];
        full.extend(args);
        let output = self.run_unchecked(&full, stdin);
        let status = status_lines(&output.stderr);
        let good = status.iter().any(|line| line.starts_with("GOODSIG "));
        let trusted = status
            .iter()
            .any(|line| line.starts_with("TRUST_ULTIMATE") || line.starts_with("TRUST_FULLY"));
        if !(output.status.success() && good && trusted) {
            return Err(format!(
                "portage would refuse: exit {:?}, status {status:?}",
                output.status.code()
            ));
        }
        let validsig = status
            .iter()
            .find_map(|line| line.strip_prefix("VALIDSIG "))
            .ok_or("no VALIDSIG")?;
        Ok((
            validsig.split(' ').map(str::to_string).collect(),
            output.stdout,
        ))
    }

    /// Checks a detached signature over `data` like Portage: `gpg --verify sig -`.
    fn portage_check_detached(&self, signature: &str, data: &[u8]) -> Result<Vec<String>, String> {
        let sig_file = self.file("member.sig");
        std::fs::write(&sig_file, signature).expect("write signature");
        let sig_path = sig_file.to_str().expect("utf-8 path");
        self.portage_check(&[sig_path, "-"], data)
            .map(|(validsig, _)| validsig)
    }

    /// Checks a clear-signed document like Portage: `gpg --verify --output - -`; returns the
    /// VALIDSIG fields and the text gpg prints.
    fn portage_check_cleartext(&self, signed: &str) -> Result<(Vec<String>, String), String> {
        self.portage_check(&["--output", "-", "-"], signed.as_bytes())
            .map(|(validsig, text)| (validsig, String::from_utf8_lossy(&text).into_owned()))
    }

    /// Packet dump of a signature, to check its subpackets.
    fn list_packets(&self, signature: &str) -> String {
        String::from_utf8_lossy(&self.run(&["--list-packets"], signature.as_bytes())).into_owned()
    }
}

/// Member bytes with NULs, CR LF and a trailing space: binary mode must keep them all.
fn member_bytes() -> Vec<u8> {
    let mut data = b"\x28\xb5\x2f\xfd compressed \x00\xff\r\nline \r\n".repeat(4096);
    data.extend_from_slice(b"end without newline ");
    data
}

const MANIFEST: &str = "DATA image.tar.zst 1234 BLAKE2B 00aa SHA512 11bb\n\
                        DATA metadata.tar.zst 567 BLAKE2B 22cc SHA512 33dd\n\
                        - not a real manifest line, dash-escaped\n\
                        DATA image.tar.zst.sig 833 BLAKE2B 44ee SHA512 55ff\n";

/// Signs with binfarm and has the result checked the way Portage does, and by binfarm.
fn check_binfarm_signatures_with_gpg(home: &GpgHome, gpg_key: &GpgKey, key: &SigningKey) {
    assert_eq!(key.fingerprint(), gpg_key.primary);
    assert_eq!(key.signing_fingerprint(), gpg_key.signing);

    let exported = key.public_key_armored().expect("export public key");
    let verifier = GpgHome::portage_verifier(exported.as_bytes(), &gpg_key.primary);

    let data = member_bytes();
    let signature = key
        .sign_detached(&mut data.as_slice())
        .expect("sign detached");
    let validsig = verifier
        .portage_check_detached(&signature, &data)
        .expect("portage accepts the detached signature");
    // VALIDSIG <fpr> <date> <ts> <expire> <ver> <reserved> <pkalgo> <hashalgo> <class> <primary>
    assert_eq!(validsig[0], gpg_key.signing, "{validsig:?}");
    assert_eq!(validsig[7], "10", "SHA-512: {validsig:?}");
    assert_eq!(validsig[8], "00", "binary mode: {validsig:?}");
    assert_eq!(validsig[9], gpg_key.primary, "{validsig:?}");
    let packets = home.list_packets(&signature);
    assert!(
        packets.contains(&format!("issuer fpr v4 {}", gpg_key.signing)),
        "{packets}"
    );
    assert!(
        packets.contains("hashed subpkt 2 len 4 (sig created"),
        "{packets}"
    );

    let mut tampered = data.clone();
    tampered[10] ^= 1;
    assert!(verifier
        .portage_check_detached(&signature, &tampered)
        .is_err());

    let signed = key.sign_cleartext(MANIFEST).expect("clearsign");
    let (validsig, text) = verifier
        .portage_check_cleartext(&signed)
        .expect("portage accepts the clear-signed manifest");
    assert_eq!(text, MANIFEST);
    assert_eq!(validsig[7], "10", "SHA-512: {validsig:?}");
    assert_eq!(validsig[8], "01", "text mode: {validsig:?}");
    assert_eq!(validsig[9], gpg_key.primary);

    // binfarm checks its own signatures against the key as gpg exported it.
    let public_file = home.export_public(&gpg_key.primary, "public.asc");
    let keyring = Keyring::load(&public_file).expect("keyring");
    let expected = Signer {
        signing_fingerprint: gpg_key.signing.clone(),
        primary_fingerprint: gpg_key.primary.clone(),
        user_id: Some(gpg_key.user_id.clone()),
    };
    let signer = keyring
        .verify_detached(signature.as_bytes(), &mut data.as_slice())
        .expect("binfarm verifies its detached signature");
    assert_eq!(signer, expected);
    let (text, signer) = keyring
        .verify_cleartext(&signed)
        .expect("binfarm verifies its clear signature");
    assert_eq!((text.as_str(), &signer), (MANIFEST, &expected));
}

#[test]
fn binfarm_signatures_pass_portage_gpg_check_in_every_key_layout() {
    let layouts = [
        ("ed25519", "cert", Some("ed25519")),
        ("ed25519", "sign", None),
        ("rsa3072", "cert", Some("rsa3072")),
        ("rsa3072", "sign", None),
    ];
    for (algo, primary_usage, subkey) in layouts {
        let home = GpgHome::new();
        let user_id =
            format!("Binfarm {algo} {primary_usage} <{algo}-{primary_usage}@example.org>");
        let gpg_key = home.generate(&user_id, algo, primary_usage, subkey, "");
        let secret_file = home.export_secret(&gpg_key.primary, "", "secret.asc");
        let key = SigningKey::from_armored_file(&secret_file, None)
            .unwrap_or_else(|e| panic!("{algo} {primary_usage}: {e}"));
        check_binfarm_signatures_with_gpg(&home, &gpg_key, &key);
    }
}

#[test]
fn passphrase_protected_gpg_key() {
    let home = GpgHome::new();
    let passphrase = "binfarm test passphrase";
    let gpg_key = home.generate(
        "Locked Key <locked@example.org>",
        "ed25519",
        "cert",
        Some("ed25519"),
        passphrase,
    );
    let secret_file = home.export_secret(&gpg_key.primary, passphrase, "secret.asc");
    assert!(std::fs::read_to_string(&secret_file)
        .expect("read")
        .contains("PRIVATE KEY"));

    let err = SigningKey::from_armored_file(&secret_file, None).expect_err("needs passphrase");
    let message = err.to_string();
    assert!(
        message.starts_with(secret_file.to_str().expect("utf-8")),
        "{message}"
    );
    assert!(message.contains("passphrase-protected"), "{message}");

    let wrong = home.file("wrong-passphrase");
    std::fs::write(&wrong, "not it\n").expect("write");
    let err = SigningKey::from_armored_file(&secret_file, Some(&wrong)).expect_err("wrong");
    assert!(
        matches!(&err, SignError::Key { path, message } if path == &secret_file && message.contains("wrong passphrase")),
        "{err}"
    );

    let right = home.file("passphrase");
    std::fs::write(&right, format!("{passphrase}\n")).expect("write");
    let key = SigningKey::from_armored_file(&secret_file, Some(&right)).expect("unlocks");
    check_binfarm_signatures_with_gpg(&home, &gpg_key, &key);
}

#[test]
fn gpg_signatures_verify_with_binfarm_keyring() {
    let subkey_home = GpgHome::new();
    let subkey_key = subkey_home.generate(
        "Gpg Subkey Signer <gpg-sub@example.org>",
        "ed25519",
        "cert",
        Some("ed25519"),
        "",
    );
    let rsa_home = GpgHome::new();
    let rsa_key = rsa_home.generate(
        "Gpg Rsa Signer <gpg-rsa@example.org>",
        "rsa3072",
        "sign",
        None,
        "",
    );

    // A keyring directory: one armored file, one binary export.
    let keys_dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        keys_dir.path().join("subkey.asc"),
        subkey_home.run(&["--armor", "--export", &subkey_key.primary], b""),
    )
    .expect("write");
    std::fs::write(
        keys_dir.path().join("rsa.gpg"),
        rsa_home.run(&["--export", &rsa_key.primary], b""),
    )
    .expect("write");
    let keyring = Keyring::load(keys_dir.path()).expect("keyring directory");
    assert_eq!(keyring.len(), 2);

    // One armored block holding both keys, as `gpg --armor --export A B` writes it.
    subkey_home.run(
        &["--import"],
        &rsa_home.run(&["--export", &rsa_key.primary], b""),
    );
    let both_file = subkey_home.file("both.asc");
    let both = subkey_home.run(
        &["--armor", "--export", &subkey_key.primary, &rsa_key.primary],
        b"",
    );
    assert_eq!(
        String::from_utf8_lossy(&both)
            .matches("BEGIN PGP PUBLIC KEY BLOCK")
            .count(),
        1
    );
    std::fs::write(&both_file, both).expect("write");
    let single_file = Keyring::load(&both_file).expect("one file, two keys");
    assert_eq!(
        single_file.primary_fingerprints(),
        vec![subkey_key.primary.clone(), rsa_key.primary.clone()]
    );

    let data = member_bytes();
    for (home, gpg_key) in [(&subkey_home, &subkey_key), (&rsa_home, &rsa_key)] {
        let expected = Signer {
            signing_fingerprint: gpg_key.signing.clone(),
            primary_fingerprint: gpg_key.primary.clone(),
            user_id: Some(gpg_key.user_id.clone()),
        };
        // gpg's defaults, as Portage's signing command uses them (plus SHA-512 once).
        for digest in [None, Some("SHA512")] {
            let mut args = vec!["--armor", "--detach-sign"];
            if let Some(digest) = digest {
                args.extend(["--digest-algo", digest]);
            }
            let signature = String::from_utf8(home.run(&args, &data)).expect("armored");
            for keyring in [&keyring, &single_file] {
                let signer = keyring
                    .verify_detached(signature.as_bytes(), &mut data.as_slice())
                    .expect("gpg detached signature verifies");
                assert_eq!(signer, expected);
            }

            let mut tampered = data.clone();
            tampered.push(b'\n');
            let err = keyring
                .verify_detached(signature.as_bytes(), &mut tampered.as_slice())
                .expect_err("tampered data");
            assert!(
                matches!(&err, SignError::BadSignature { fingerprint } if *fingerprint == gpg_key.signing),
                "{err}"
            );
        }

        let signed =
            String::from_utf8(home.run(&["--clearsign"], MANIFEST.as_bytes())).expect("armored");
        let (text, signer) = keyring
            .verify_cleartext(&signed)
            .expect("gpg clear signature verifies");
        assert_eq!(signer, expected);
        assert_eq!(text, MANIFEST);
        let gpg_text = home.run(&["--output", "-", "--verify"], signed.as_bytes());
        assert_eq!(
            text.as_bytes(),
            gpg_text.as_slice(),
            "same text as gpg prints"
        );

        let tampered = signed.replace("1234", "1235");
        let err = keyring.verify_cleartext(&tampered).expect_err("tampered");
        assert!(matches!(err, SignError::BadSignature { .. }), "{err}");
    }
}

#[test]
fn signatures_from_keys_outside_the_keyring_are_unknown() {
    let trusted_home = GpgHome::new();
    let trusted =
        trusted_home.generate("Trusted <trusted@example.org>", "ed25519", "sign", None, "");
    let stranger_home = GpgHome::new();
    let stranger = stranger_home.generate(
        "Stranger <stranger@example.org>",
        "ed25519",
        "cert",
        Some("ed25519"),
        "",
    );
    let keyring = Keyring::load(&trusted_home.export_public(&trusted.primary, "trusted.asc"))
        .expect("keyring");

    let data = b"package bytes";
    let gpg_signature =
        String::from_utf8(stranger_home.run(&["--armor", "--detach-sign"], data)).expect("armored");
    let err = keyring
        .verify_detached(gpg_signature.as_bytes(), &mut &data[..])
        .expect_err("unknown");
    assert!(
        matches!(&err, SignError::UnknownKey { issuer } if *issuer == stranger.signing),
        "{err}"
    );

    // And the other way: a binfarm signature from the stranger fails Portage's check.
    let secret_file = stranger_home.export_secret(&stranger.primary, "", "secret.asc");
    let key = SigningKey::from_armored_file(&secret_file, None).expect("load");
    let signature = key.sign_detached(&mut &data[..]).expect("sign");
    let verifier = GpgHome::portage_verifier(
        &trusted_home.run(&["--armor", "--export", &trusted.primary], b""),
        &trusted.primary,
    );
    let refusal = verifier
        .portage_check_detached(&signature, data)
        .expect_err("portage refuses an unknown key");
    assert!(refusal.contains("NO_PUBKEY"), "{refusal}");
}

#[test]
fn unusable_gpg_keys_are_refused_with_reasons() {
    // Certify-only primary and no signing subkey.
    let home = GpgHome::new();
    let cert_only = home.generate("Cert Only <cert@example.org>", "ed25519", "cert", None, "");
    let secret_file = home.export_secret(&cert_only.primary, "", "cert-only.asc");
    let message = SigningKey::from_armored_file(&secret_file, None)
        .expect_err("cannot sign")
        .to_string();
    assert!(message.contains("no key can sign"), "{message}");
    assert!(message.contains(&cert_only.primary), "{message}");

    // A key that expired in 2020.
    let user_id = "Expired <expired@example.org>";
    home.run(
        &[
            "--faked-system-time",
            "20200101T000000!",
            "--pinentry-mode",
            "loopback",
            "--passphrase",
            "",
            "--quick-gen-key",
            user_id,
            "ed25519",
            "sign",
            "1d",
        ],
        b"",
    );
    let expired = home.fingerprints(user_id)[0].clone();
    let secret_file = home.export_secret(&expired, "", "expired.asc");
    let message = SigningKey::from_armored_file(&secret_file, None)
        .expect_err("expired")
        .to_string();
    assert!(message.contains("expired on 2020-01-02"), "{message}");

    // A public key file is not a secret key.
    let public_file = home.export_public(&cert_only.primary, "public.asc");
    let message = SigningKey::from_armored_file(&public_file, None)
        .expect_err("public only")
        .to_string();
    assert!(message.contains("only a public key"), "{message}");
}

#[test]
fn revoked_gpg_key_neither_signs_nor_verifies() {
    let home = GpgHome::new();
    let gpg_key = home.generate("Revoked <revoked@example.org>", "ed25519", "sign", None, "");
    let before = home.export_secret(&gpg_key.primary, "", "before.asc");
    let key = SigningKey::from_armored_file(&before, None).expect("valid before revocation");
    let signature = key.sign_detached(&mut &b"data"[..]).expect("sign");

    // gpg keeps a revocation certificate, defused with a leading ':' on its armor line.
    let revocation_file = home
        .path()
        .join("openpgp-revocs.d")
        .join(format!("{}.rev", gpg_key.primary));
    let revocation = std::fs::read_to_string(&revocation_file)
        .expect("revocation certificate")
        .replace(
            ":-----BEGIN PGP PUBLIC KEY BLOCK-----",
            "-----BEGIN PGP PUBLIC KEY BLOCK-----",
        );
    home.run(&["--import"], revocation.as_bytes());

    let after = home.export_secret(&gpg_key.primary, "", "after.asc");
    let message = SigningKey::from_armored_file(&after, None)
        .expect_err("revoked")
        .to_string();
    assert!(message.contains("revoked"), "{message}");

    let keyring =
        Keyring::load(&home.export_public(&gpg_key.primary, "public.asc")).expect("keyring");
    let err = keyring
        .verify_detached(signature.as_bytes(), &mut &b"data"[..])
        .expect_err("revoked key");
    assert!(
        matches!(&err, SignError::InvalidKey { fingerprint, reason } if *fingerprint == gpg_key.primary && reason.contains("revoked")),
        "{err}"
    );
}

#[test]
fn offline_primary_key_signs_with_its_subkey() {
    // `--export-secret-subkeys` leaves a gpg stub in place of the primary's secret.
    let home = GpgHome::new();
    let gpg_key = home.generate(
        "Offline Primary <offline@example.org>",
        "ed25519",
        "cert",
        Some("ed25519"),
        "",
    );
    let path = home.file("subkeys-only.asc");
    std::fs::write(
        &path,
        home.run(
            &["--armor", "--export-secret-subkeys", &gpg_key.primary],
            b"",
        ),
    )
    .expect("write");
    let key = SigningKey::from_armored_file(&path, None).expect("subkey-only secret key");
    check_binfarm_signatures_with_gpg(&home, &gpg_key, &key);
}
