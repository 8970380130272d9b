//! Trusted public keys, and checking signatures against them.

use std::io::Read;
use std::path::{Path, PathBuf};

use pgp::composed::{CleartextSignedMessage, Deserializable, DetachedSignature, SignedPublicKey};
use pgp::crypto::hash::HashAlgorithm;
use pgp::packet::{Signature, SignatureType, SignatureVersion};
use pgp::types::{KeyDetails, KeyVersion};

use super::armor::{armor_blocks, looks_binary};
use super::cert::{self, CertSummary, Component};
use super::keys::RecordingReader;
use super::{fingerprint_hex, SignError, Signer};

const PUBLIC_KEY_LABEL: &str = "PGP PUBLIC KEY BLOCK";

/// How far in the future a signature's creation time may lie (clock skew between hosts).
const ALLOWED_CLOCK_SKEW_SECS: u32 = 300;

/// A public key in the keyring, with its self-signatures evaluated.
struct TrustedCert {
    public: SignedPublicKey,
    summary: CertSummary,
}

impl TrustedCert {
    /// Checks `signature` over `data` with component `index` (0 = primary key).
    fn verify(
        &self,
        index: usize,
        signature: &Signature,
        data: impl Read,
    ) -> pgp::errors::Result<()> {
        match index {
            0 => signature.verify(&self.public.primary_key, data),
            _ => signature.verify(&self.public.public_subkeys[index - 1].key, data),
        }
    }
}

/// A set of trusted public keys.
pub struct Keyring {
    certs: Vec<TrustedCert>,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keyring")
            .field("primary_fingerprints", &self.primary_fingerprints())
            .finish()
    }
}

fn key_error(path: &Path, message: impl Into<String>) -> SignError {
    SignError::Key {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

/// Parses every public key in armored (one or more blocks) or binary data from `origin`.
fn parse_public_keys(data: &[u8], origin: &Path) -> Result<Vec<SignedPublicKey>, SignError> {
    let keys: Vec<SignedPublicKey> = if looks_binary(data) {
        SignedPublicKey::from_bytes_many(data)
            .and_then(|keys| keys.collect::<Result<Vec<_>, _>>())
            .map_err(|e| key_error(origin, format!("malformed binary public key: {e}")))?
    } else {
        let text = std::str::from_utf8(data).map_err(|_| {
            key_error(
                origin,
                "is neither ASCII-armored text nor binary OpenPGP data",
            )
        })?;
        let blocks = armor_blocks(text).map_err(|message| key_error(origin, message))?;
        if blocks
            .iter()
            .any(|block| block.label == "PGP PRIVATE KEY BLOCK")
        {
            return Err(key_error(
                origin,
                "holds a secret key; a keyring takes public keys only \
                 (`gpg --armor --export FINGERPRINT`)",
            ));
        }
        let mut keys = Vec::new();
        for block in blocks
            .iter()
            .filter(|block| block.label == PUBLIC_KEY_LABEL)
        {
            let (iter, _headers) = SignedPublicKey::from_armor_many(block.text.as_bytes())
                .map_err(|e| key_error(origin, format!("malformed armored public key: {e}")))?;
            for key in iter {
                keys.push(
                    key.map_err(|e| key_error(origin, format!("malformed public key: {e}")))?,
                );
            }
        }
        keys
    };
    if keys.is_empty() {
        return Err(key_error(origin, "holds no OpenPGP public key"));
    }
    if let Some(key) = keys
        .iter()
        .find(|key| key.primary_key.version() != KeyVersion::V4)
    {
        return Err(key_error(
            origin,
            format!(
                "holds a {:?} key ({:X}); only v4 keys are supported",
                key.primary_key.version(),
                key.primary_key.fingerprint()
            ),
        ));
    }
    Ok(keys)
}

fn read_file(path: &Path) -> Result<Vec<u8>, SignError> {
    std::fs::read(path).map_err(|source| SignError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// The `*.asc` and `*.gpg` files of a directory, sorted by name (not recursive).
fn key_files_in(dir: &Path) -> Result<Vec<PathBuf>, SignError> {
    let io_error = |source| SignError::Io {
        path: dir.to_path_buf(),
        source,
    };
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io_error)? {
        let path = entry.map_err(io_error)?.path();
        let wanted = path
            .extension()
            .is_some_and(|ext| ext == "asc" || ext == "gpg");
        if wanted && path.is_file() {
            files.push(path);
        }
    }
    files.sort();
    if files.is_empty() {
        return Err(key_error(dir, "holds no *.asc or *.gpg key files"));
    }
    Ok(files)
}

/// Refuses signatures gpg would refuse or that are not data signatures of the expected kind.
fn check_signature_packet(
    signature: &Signature,
    allowed: &[SignatureType],
    now: u32,
) -> Result<(), SignError> {
    if signature.version() != SignatureVersion::V4 {
        return Err(SignError::Signature(format!(
            "a {:?} signature; only v4 signatures are accepted",
            signature.version()
        )));
    }
    match signature.typ() {
        Some(typ) if allowed.contains(&typ) => {}
        other => {
            return Err(SignError::Signature(format!(
                "signature type {other:?} where {allowed:?} was expected"
            )))
        }
    }
    if let Some(hash) = signature.hash_alg() {
        if matches!(
            hash,
            HashAlgorithm::Md5 | HashAlgorithm::Sha1 | HashAlgorithm::Ripemd160
        ) {
            return Err(SignError::Signature(format!("the {hash} hash is too weak")));
        }
    }
    let Some(created) = signature.created().map(|t| t.as_secs()) else {
        return Err(SignError::Signature(
            "the signature has no creation time".to_string(),
        ));
    };
    if u64::from(created) > u64::from(now) + u64::from(ALLOWED_CLOCK_SKEW_SECS) {
        return Err(SignError::Signature(format!(
            "the signature is dated in the future ({})",
            cert::utc_date(created)
        )));
    }
    if let Some(lifetime) = signature.signature_expiration_time() {
        if lifetime.as_secs() > 0
            && u64::from(created) + u64::from(lifetime.as_secs()) <= u64::from(now)
        {
            return Err(SignError::Signature(
                "the signature has expired".to_string(),
            ));
        }
    }
    Ok(())
}

/// The issuer as the signature names it, for `UnknownKey` errors.
fn issuer_text(signature: &Signature) -> String {
    if let Some(fingerprint) = signature.issuer_fingerprint().first() {
        return fingerprint_hex(fingerprint);
    }
    match signature.issuer_key_id().first() {
        Some(key_id) => key_id.to_string().to_uppercase(),
        None => "not named in the signature".to_string(),
    }
}

/// Undoes dash-escaping and prints the lines the way `gpg --verify --output -` does: trailing
/// spaces and tabs dropped (they are not signed), every line ending in `\n`.
fn cleartext_as_signed(csf_text: &str) -> String {
    if csf_text.is_empty() {
        return String::new();
    }
    let mut out = String::with_capacity(csf_text.len() + 1);
    for line in csf_text.split('\n') {
        let line = line.strip_suffix('\r').unwrap_or(line);
        let line = line.strip_prefix("- ").unwrap_or(line);
        out.push_str(line.trim_end_matches([' ', '\t']));
        out.push('\n');
    }
    out
}

impl Keyring {
    /// An ASCII-armored public key file (may hold several keys), or a directory of them.
    ///
    /// A directory contributes its `*.asc` and `*.gpg` files (armored or binary), not
    /// recursively. A file may hold several keys in one block or several concatenated blocks.
    pub fn load(path: &Path) -> Result<Self, SignError> {
        let metadata = std::fs::metadata(path).map_err(|source| SignError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let files = if metadata.is_dir() {
            key_files_in(path)?
        } else {
            vec![path.to_path_buf()]
        };
        let mut keys = Vec::new();
        for file in &files {
            keys.extend(parse_public_keys(&read_file(file)?, file)?);
        }
        Ok(Self::from_keys(keys))
    }

    /// A keyring from armored (or binary) public key data in memory, e.g.
    /// [`SigningKey::public_key_armored`](super::SigningKey::public_key_armored); errors
    /// name it `<armored public keys>`.
    pub fn from_armored(data: &[u8]) -> Result<Self, SignError> {
        let keys = parse_public_keys(data, Path::new("<armored public keys>"))?;
        Ok(Self::from_keys(keys))
    }

    fn from_keys(keys: Vec<SignedPublicKey>) -> Self {
        let now = cert::now_unix();
        let certs = keys
            .into_iter()
            .map(|public| {
                let subkeys = public
                    .public_subkeys
                    .iter()
                    .map(|sub| (&sub.key, sub.signatures.as_slice()));
                let summary = cert::summarize(&public.primary_key, &public.details, subkeys, now);
                TrustedCert { public, summary }
            })
            .collect();
        Keyring { certs }
    }

    /// Number of keys (certificates) in the keyring.
    pub fn len(&self) -> usize {
        self.certs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.certs.is_empty()
    }

    /// Primary key fingerprints (upper-case hex), in load order.
    pub fn primary_fingerprints(&self) -> Vec<String> {
        self.certs
            .iter()
            .map(|cert| cert.summary.primary_fingerprint.clone())
            .collect()
    }

    /// The certificate and component a signature names as its issuer: by issuer fingerprint,
    /// else by key id.
    fn find_issuer(&self, signature: &Signature) -> Option<(&TrustedCert, usize)> {
        let fingerprints = signature.issuer_fingerprint();
        let key_ids = signature.issuer_key_id();
        let find = |matches: &dyn Fn(&Component) -> bool| {
            self.certs.iter().find_map(|cert| {
                cert.summary
                    .components
                    .iter()
                    .position(matches)
                    .map(|index| (cert, index))
            })
        };
        if !fingerprints.is_empty() {
            return find(&|component| fingerprints.contains(&&component.fingerprint));
        }
        find(&|component| key_ids.contains(&&component.key_id))
    }

    /// Checks everything but the cryptography; returns the key to verify with.
    fn accept(
        &self,
        signature: &Signature,
        allowed: &[SignatureType],
        now: u32,
    ) -> Result<(&TrustedCert, usize), SignError> {
        check_signature_packet(signature, allowed, now)?;
        let Some((cert, index)) = self.find_issuer(signature) else {
            return Err(SignError::UnknownKey {
                issuer: issuer_text(signature),
            });
        };
        let component = &cert.summary.components[index];
        let invalid = |reason: String| SignError::InvalidKey {
            fingerprint: component.fingerprint_hex(),
            reason,
        };
        if let Some(reason) = component.signing_problem(now) {
            return Err(invalid(reason));
        }
        if signature
            .created()
            .is_some_and(|t| t.as_secs() < component.created)
        {
            return Err(invalid("the key is newer than the signature".to_string()));
        }
        Ok((cert, index))
    }

    fn signer(cert: &TrustedCert, index: usize) -> Signer {
        Signer {
            signing_fingerprint: cert.summary.components[index].fingerprint_hex(),
            primary_fingerprint: cert.summary.primary_fingerprint.clone(),
            user_id: cert.summary.user_id.clone(),
        }
    }

    fn bad_signature(cert: &TrustedCert, index: usize) -> SignError {
        SignError::BadSignature {
            fingerprint: cert.summary.components[index].fingerprint_hex(),
        }
    }

    /// Checks an ASCII-armored detached signature over `data`.
    ///
    /// Binary (0x00) and text (0x01) signatures are accepted, as gpg does. When the armor holds
    /// several signatures, every one must verify (gpg's exit status needs that too) and the
    /// first one's signer is returned; the data is then held in memory to be read once per
    /// signature.
    pub fn verify_detached(
        &self,
        armored_signature: &[u8],
        data: &mut dyn Read,
    ) -> Result<Signer, SignError> {
        let signatures = parse_detached(armored_signature)?;
        let now = cert::now_unix();
        let allowed = [SignatureType::Binary, SignatureType::Text];
        let accepted = signatures
            .iter()
            .map(|signature| self.accept(signature, &allowed, now))
            .collect::<Result<Vec<_>, _>>()?;

        if let [(cert, index)] = accepted[..] {
            let mut reader = RecordingReader::new(data);
            let verified = cert.verify(index, &signatures[0], &mut reader);
            return match (verified, reader.error) {
                (_, Some(error)) => Err(SignError::Data(error)),
                (Ok(()), None) => Ok(Self::signer(cert, index)),
                (Err(_), None) => Err(Self::bad_signature(cert, index)),
            };
        }

        let mut content = Vec::new();
        data.read_to_end(&mut content).map_err(SignError::Data)?;
        for (signature, &(cert, index)) in signatures.iter().zip(&accepted) {
            if cert.verify(index, signature, content.as_slice()).is_err() {
                return Err(Self::bad_signature(cert, index));
            }
        }
        let (cert, index) = accepted[0];
        Ok(Self::signer(cert, index))
    }

    /// Checks a clear-signed message; returns the signed text (dash-escaping undone) and the signer.
    ///
    /// The text comes back as `gpg --verify --output -` prints it: each line ending in `\n`,
    /// trailing spaces and tabs dropped (the signature does not cover them). Every signature
    /// in the message must verify; the first one's signer is returned.
    pub fn verify_cleartext(&self, armored: &str) -> Result<(String, Signer), SignError> {
        let (message, _headers) = CleartextSignedMessage::from_string(armored)
            .map_err(|e| SignError::Signature(format!("malformed clear-signed message: {e}")))?;
        let signatures = message.signatures();
        if signatures.is_empty() {
            return Err(SignError::Signature(
                "the clear-signed message holds no signature".to_string(),
            ));
        }
        let now = cert::now_unix();
        let allowed = [SignatureType::Text, SignatureType::Binary];
        let signed_text = message.signed_text();
        let mut first_signer = None;
        for signature in signatures {
            let (cert, index) = self.accept(signature, &allowed, now)?;
            if cert
                .verify(index, signature, signed_text.as_bytes())
                .is_err()
            {
                return Err(Self::bad_signature(cert, index));
            }
            first_signer.get_or_insert_with(|| Self::signer(cert, index));
        }
        let signer = first_signer.ok_or_else(|| {
            SignError::Signature("the clear-signed message holds no signature".to_string())
        })?;
        Ok((cleartext_as_signed(message.text()), signer))
    }
}

/// Signature packets from an armored (or binary) detached signature.
fn parse_detached(data: &[u8]) -> Result<Vec<Signature>, SignError> {
    let malformed =
        |e: pgp::errors::Error| SignError::Signature(format!("malformed detached signature: {e}"));
    let signatures: Vec<DetachedSignature> = if looks_binary(data) {
        DetachedSignature::from_bytes_many(data)
            .and_then(|sigs| sigs.collect::<Result<Vec<_>, _>>())
            .map_err(malformed)?
    } else {
        let text = std::str::from_utf8(data).map_err(|_| {
            SignError::Signature("the detached signature is not ASCII armor".to_string())
        })?;
        let blocks = armor_blocks(text).map_err(SignError::Signature)?;
        let mut signatures = Vec::new();
        for block in &blocks {
            if block.label != "PGP SIGNATURE" {
                return Err(SignError::Signature(format!(
                    "expected a `PGP SIGNATURE` block, found `{}`",
                    block.label
                )));
            }
            let (iter, _headers) =
                DetachedSignature::from_armor_many(block.text.as_bytes()).map_err(malformed)?;
            for signature in iter {
                signatures.push(signature.map_err(malformed)?);
            }
        }
        signatures
    };
    if signatures.is_empty() {
        return Err(SignError::Signature(
            "no signature packet found (expected `-----BEGIN PGP SIGNATURE-----`)".to_string(),
        ));
    }
    Ok(signatures
        .into_iter()
        .map(|detached| detached.signature)
        .collect())
}
