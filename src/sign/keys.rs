//! Secret keys: loading, choosing the signing component, and making signatures.

use std::io::{self, Read};
use std::path::{Path, PathBuf};

use pgp::composed::{
    ArmorOptions, CleartextSignedMessage, Deserializable, DetachedSignature, SignedSecretKey,
};
use pgp::crypto::hash::HashAlgorithm;
use pgp::packet::{
    SecretKey, SecretSubkey, Signature, SignatureConfig, SignatureType, Subpacket, SubpacketData,
};
use pgp::types::{
    KeyDetails, KeyVersion, Password, S2kParams, SecretParams, StringToKey, Timestamp,
};

use super::armor::{armor_blocks, looks_binary};
use super::cert::{self, CertSummary, Component};
use super::{SignError, Signer};

/// The label gpg and rPGP put on armored secret keys.
const SECRET_KEY_LABEL: &str = "PGP PRIVATE KEY BLOCK";

/// The unlocked secret key material that makes signatures.
enum SigningComponent {
    Primary(SecretKey),
    Subkey(SecretSubkey),
}

/// A secret key able to sign: the primary key, or its signing-capable subkey.
///
/// The chosen component is unlocked once at load time, so signing needs no passphrase and
/// does no S2K work. Share it across threads behind an `Arc`.
pub struct SigningKey {
    secret: SignedSecretKey,
    component: SigningComponent,
    /// What the self-signatures say about `component` (its expiry is checked at each use).
    validity: Component,
    signer: Signer,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never prints key material.
        f.debug_struct("SigningKey")
            .field("signer", &self.signer)
            .finish_non_exhaustive()
    }
}

/// Passes reads through and keeps the first real I/O error, so that a failure to read the
/// data can be told apart from a signing or verification failure after rPGP wrapped it.
pub(crate) struct RecordingReader<'a> {
    inner: &'a mut dyn Read,
    pub error: Option<io::Error>,
}

impl<'a> RecordingReader<'a> {
    pub fn new(inner: &'a mut dyn Read) -> Self {
        RecordingReader { inner, error: None }
    }
}

impl Read for RecordingReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.inner.read(buf) {
            Err(error) if error.kind() != io::ErrorKind::Interrupted => {
                let copy = io::Error::new(error.kind(), error.to_string());
                self.error.get_or_insert(error);
                Err(copy)
            }
            other => other,
        }
    }
}

fn is_gnu_stub(params: &SecretParams) -> bool {
    // gpg marks secret keys kept offline or on a card with its private S2K type 101.
    let SecretParams::Encrypted(encrypted) = params else {
        return false;
    };
    let s2k = match encrypted.string_to_key_params() {
        S2kParams::Cfb { s2k, .. }
        | S2kParams::MalleableCfb { s2k, .. }
        | S2kParams::Aead { s2k, .. } => s2k,
        S2kParams::Unprotected | S2kParams::LegacyCfb { .. } => return false,
    };
    matches!(s2k, StringToKey::Private { typ: 101, .. })
}

fn key_error(path: &Path, message: impl Into<String>) -> SignError {
    SignError::Key {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

/// The passphrase is the first line of the file, without its line ending.
fn read_passphrase(path: &Path) -> Result<String, SignError> {
    let content = std::fs::read(path).map_err(|source| SignError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let first_line = content
        .split(|&byte| byte == b'\n')
        .next()
        .unwrap_or_default();
    let first_line = first_line.strip_suffix(b"\r").unwrap_or(first_line);
    String::from_utf8(first_line.to_vec())
        .map_err(|_| key_error(path, "the passphrase is not valid UTF-8"))
}

/// Parses exactly one secret key from armored (or binary) data read from `origin`.
fn parse_one_secret_key(data: &[u8], origin: &Path) -> Result<SignedSecretKey, SignError> {
    let parsed: Vec<SignedSecretKey> = if looks_binary(data) {
        SignedSecretKey::from_bytes_many(data)
            .and_then(|keys| keys.collect::<Result<Vec<_>, _>>())
            .map_err(|e| key_error(origin, format!("malformed binary secret key: {e}")))?
    } else {
        let text = std::str::from_utf8(data).map_err(|_| {
            key_error(
                origin,
                "is neither ASCII-armored text nor binary OpenPGP data",
            )
        })?;
        let blocks = armor_blocks(text).map_err(|message| key_error(origin, message))?;
        let secret_blocks: Vec<_> = blocks
            .iter()
            .filter(|b| b.label == SECRET_KEY_LABEL)
            .collect();
        if secret_blocks.is_empty() {
            let message = match blocks.first() {
                None => "holds no ASCII-armored OpenPGP block".to_string(),
                Some(block) if block.label == "PGP PUBLIC KEY BLOCK" => {
                    "holds only a public key; export the secret key with \
                     `gpg --armor --export-secret-keys FINGERPRINT`"
                        .to_string()
                }
                Some(block) => format!("holds a `{}` block, not a secret key", block.label),
            };
            return Err(key_error(origin, message));
        }
        let mut keys = Vec::new();
        for block in secret_blocks {
            let (iter, _headers) = SignedSecretKey::from_armor_many(block.text.as_bytes())
                .map_err(|e| key_error(origin, format!("malformed armored secret key: {e}")))?;
            for key in iter {
                keys.push(
                    key.map_err(|e| key_error(origin, format!("malformed secret key: {e}")))?,
                );
            }
        }
        keys
    };
    let mut parsed = parsed.into_iter();
    match (parsed.next(), parsed.next()) {
        (Some(key), None) => Ok(key),
        (None, _) => Err(key_error(origin, "holds no secret key")),
        (Some(first), Some(second)) => {
            let more = parsed.count();
            Err(key_error(
                origin,
                format!(
                    "holds {} secret keys ({:X}, {:X}, ...); give a file with exactly one",
                    2 + more,
                    first.primary_key.fingerprint(),
                    second.primary_key.fingerprint()
                ),
            ))
        }
    }
}

/// Why no component was chosen, component by component.
fn no_signing_key_message(
    summary: &CertSummary,
    now: u32,
    has_secret: &dyn Fn(usize) -> bool,
) -> String {
    let reasons: Vec<String> = summary
        .components
        .iter()
        .enumerate()
        .map(|(index, component)| {
            let what = if index == 0 { "primary key" } else { "subkey" };
            let why = component.signing_problem(now).unwrap_or_else(|| {
                if has_secret(index) {
                    "usable".to_string()
                } else {
                    "its secret material is not in the file (gpg stub: offline or on a card)"
                        .to_string()
                }
            });
            format!("{what} {}: {why}", component.fingerprint_hex())
        })
        .collect();
    format!("no key can sign ({})", reasons.join("; "))
}

fn sign_with(
    key: &impl pgp::types::SigningKey,
    typ: SignatureType,
    data: impl Read,
) -> pgp::errors::Result<Signature> {
    let mut config = SignatureConfig::v4(typ, key.algorithm(), HashAlgorithm::Sha512);
    config.hashed_subpackets = vec![
        Subpacket::regular(SubpacketData::IssuerFingerprint(key.fingerprint()))?,
        Subpacket::regular(SubpacketData::SignatureCreationTime(Timestamp::now()))?,
    ];
    config.unhashed_subpackets = vec![Subpacket::regular(SubpacketData::IssuerKeyId(
        key.legacy_key_id(),
    ))?];
    // The secret material was unlocked at load time.
    config.sign(key, &Password::empty(), data)
}

/// The bytes a text-mode (0x01) signature covers for clear-signed `body`: lines without
/// trailing spaces and tabs, joined by CR LF, and no line ending after the last line.
pub(crate) fn cleartext_canonical_form(body: &str) -> String {
    body.split('\n')
        .map(|line| {
            line.strip_suffix('\r')
                .unwrap_or(line)
                .trim_end_matches([' ', '\t'])
        })
        .collect::<Vec<_>>()
        .join("\r\n")
}

impl SigningKey {
    /// Reads an ASCII-armored v4 secret key; `passphrase_file` holds the passphrase
    /// (first line, trailing newline stripped) when the key is protected.
    pub fn from_armored_file(
        path: &Path,
        passphrase_file: Option<&Path>,
    ) -> Result<Self, SignError> {
        let data = std::fs::read(path).map_err(|source| SignError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let passphrase = match passphrase_file {
            Some(passphrase_path) => Some((read_passphrase(passphrase_path)?, passphrase_path)),
            None => None,
        };
        Self::from_data(
            &data,
            passphrase
                .as_ref()
                .map(|(text, from)| (text.as_str(), *from)),
            path,
        )
    }

    /// Like [`SigningKey::from_armored_file`], from armored text in memory; errors name the
    /// key `<armored secret key>`.
    pub fn from_armored_str(armored: &str, passphrase: Option<&str>) -> Result<Self, SignError> {
        let origin = PathBuf::from("<armored secret key>");
        let from = PathBuf::from("<passphrase>");
        Self::from_data(
            armored.as_bytes(),
            passphrase.map(|text| (text, from.as_path())),
            &origin,
        )
    }

    fn from_data(
        data: &[u8],
        passphrase: Option<(&str, &Path)>,
        origin: &Path,
    ) -> Result<Self, SignError> {
        let secret = parse_one_secret_key(data, origin)?;
        let version = secret.primary_key.version();
        if version != KeyVersion::V4 {
            return Err(key_error(
                origin,
                format!(
                    "is a {version:?} key ({:X}); only v4 keys are supported (gpg cannot import v6 keys)",
                    secret.primary_key.fingerprint()
                ),
            ));
        }

        let subkeys = secret
            .secret_subkeys
            .iter()
            .map(|sub| (sub.key.public_key(), sub.signatures.as_slice()))
            .chain(
                secret
                    .public_subkeys
                    .iter()
                    .map(|sub| (&sub.key, sub.signatures.as_slice())),
            );
        let now = cert::now_unix();
        let summary = cert::summarize(
            secret.primary_key.public_key(),
            &secret.details,
            subkeys,
            now,
        );
        // Components past the secret subkeys are public-only subkeys: nothing to sign with.
        let has_secret = |index: usize| match index {
            0 => !is_gnu_stub(secret.primary_key.secret_params()),
            _ => secret
                .secret_subkeys
                .get(index - 1)
                .is_some_and(|sub| !is_gnu_stub(sub.key.secret_params())),
        };
        let Some(index) = cert::pick_signing_component(&summary, now, has_secret) else {
            return Err(key_error(
                origin,
                no_signing_key_message(&summary, now, &has_secret),
            ));
        };
        let chosen = &summary.components[index];
        let fingerprint = chosen.fingerprint_hex();

        let (params, mut component) = if index == 0 {
            (
                secret.primary_key.secret_params(),
                SigningComponent::Primary(secret.primary_key.clone()),
            )
        } else {
            let sub = &secret.secret_subkeys[index - 1].key;
            (sub.secret_params(), SigningComponent::Subkey(sub.clone()))
        };
        if params.is_encrypted() {
            let Some((passphrase, passphrase_path)) = passphrase else {
                return Err(key_error(
                    origin,
                    format!("the secret key {fingerprint} is passphrase-protected; give a passphrase file"),
                ));
            };
            let password = Password::from(passphrase);
            let unlocked = match &mut component {
                SigningComponent::Primary(key) => key.remove_password(&password),
                SigningComponent::Subkey(key) => key.remove_password(&password),
            };
            unlocked.map_err(|e| {
                key_error(
                    origin,
                    format!(
                        "cannot unlock the secret key {fingerprint} with the passphrase from {} \
                         (wrong passphrase?): {e}",
                        passphrase_path.display()
                    ),
                )
            })?;
        }

        let signer = Signer {
            signing_fingerprint: fingerprint.clone(),
            primary_fingerprint: summary.primary_fingerprint.clone(),
            user_id: summary.user_id.clone(),
        };
        let key = SigningKey {
            validity: summary.components[index].clone(),
            secret,
            component,
            signer,
        };
        key.self_test().map_err(|why| {
            key_error(
                origin,
                format!("the secret key {fingerprint} fails a test signature (wrong passphrase?): {why}"),
            )
        })?;
        Ok(key)
    }

    /// Signs a few bytes and checks the result with the public half: a wrong passphrase can
    /// get past the 16-bit checksum of old-style protected keys.
    fn self_test(&self) -> Result<(), String> {
        const PROBE: &[u8] = b"binfarm signing key self-test";
        let signature = self
            .signature(SignatureType::Binary, PROBE)
            .map_err(|e| e.to_string())?;
        let verified = match &self.component {
            SigningComponent::Primary(key) => signature.verify(key.public_key(), PROBE),
            SigningComponent::Subkey(key) => signature.verify(key.public_key(), PROBE),
        };
        verified.map_err(|e| e.to_string())
    }

    fn signature(&self, typ: SignatureType, data: impl Read) -> Result<Signature, SignError> {
        if let Some(reason) = self.validity.signing_problem(cert::now_unix()) {
            return Err(SignError::InvalidKey {
                fingerprint: self.signer.signing_fingerprint.clone(),
                reason,
            });
        }
        let made = match &self.component {
            SigningComponent::Primary(key) => sign_with(key, typ, data),
            SigningComponent::Subkey(key) => sign_with(key, typ, data),
        };
        made.map_err(|e| self.signing_failed(e))
    }

    /// Primary key fingerprint, upper-case hex.
    pub fn fingerprint(&self) -> String {
        self.signer.primary_fingerprint.clone()
    }

    /// Fingerprint of the component that signs (a subkey, or the primary), upper-case hex.
    pub fn signing_fingerprint(&self) -> String {
        self.signer.signing_fingerprint.clone()
    }

    /// Who signatures made with this key come from, as [`Keyring`](super::Keyring) reports it.
    pub fn signer(&self) -> &Signer {
        &self.signer
    }

    /// ASCII-armored detached SHA-512 signature over `data` (what goes into a gpkg `.sig`).
    ///
    /// Binary mode (type 0x00): the bytes are signed as they are, as `gpg --detach-sign` does.
    pub fn sign_detached(&self, data: &mut dyn Read) -> Result<String, SignError> {
        let mut reader = RecordingReader::new(data);
        let signature = self.signature(SignatureType::Binary, &mut reader);
        let signature = match (signature, reader.error) {
            (_, Some(error)) => return Err(SignError::Data(error)),
            (result, None) => result?,
        };
        DetachedSignature::new(signature)
            .to_armored_string(ArmorOptions::default())
            .map_err(|e| self.signing_failed(e))
    }

    /// Clear-signed text (`-----BEGIN PGP SIGNED MESSAGE-----`, Hash: SHA512), as for a gpkg Manifest.
    ///
    /// Laid out as `gpg --clearsign` does: one final line ending of `text` is the one before
    /// the signature armor, so `gpg --verify --output -` gives `text` back (with `\n` line
    /// endings; trailing spaces and tabs are not signed, by the standard, and gpg drops them).
    pub fn sign_cleartext(&self, text: &str) -> Result<String, SignError> {
        let body = text
            .strip_suffix("\r\n")
            .or_else(|| text.strip_suffix('\n'))
            .unwrap_or(text);
        let canonical = cleartext_canonical_form(body);
        let signature = self.signature(SignatureType::Text, canonical.as_bytes())?;
        let message = CleartextSignedMessage::new_many(body, |_| Ok(vec![signature]))
            .map_err(|e| self.signing_failed(e))?;
        message
            .to_armored_string(ArmorOptions::default())
            .map_err(|e| self.signing_failed(e))
    }

    /// The public key (ASCII-armored), to hand to clients.
    pub fn public_key_armored(&self) -> Result<String, SignError> {
        self.secret
            .to_public_key()
            .to_armored_string(ArmorOptions::default())
            .map_err(|e| {
                SignError::Signature(format!(
                    "exporting public key {}: {e}",
                    self.signer.primary_fingerprint
                ))
            })
    }

    fn signing_failed(&self, error: pgp::errors::Error) -> SignError {
        SignError::Signature(format!(
            "signing with key {} failed: {error}",
            self.signer.signing_fingerprint
        ))
    }
}
