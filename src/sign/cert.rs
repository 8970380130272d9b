//! What a key's self-signatures say: which components may sign, and whether they are
//! revoked or expired. rPGP parses keys but leaves this evaluation to its users.

use std::time::{SystemTime, UNIX_EPOCH};

use pgp::composed::SignedKeyDetails;
use pgp::crypto::public_key::PublicKeyAlgorithm;
use pgp::packet::{PublicKey, PublicSubkey, Signature, SignatureType};
use pgp::types::{Fingerprint, KeyDetails, KeyId, Tag};

use super::fingerprint_hex;

/// One component key (the primary or a subkey) as its self-signatures describe it.
#[derive(Debug, Clone)]
pub(crate) struct Component {
    pub fingerprint: Fingerprint,
    pub key_id: KeyId,
    /// Creation time of the key material (Unix seconds).
    pub created: u32,
    /// Key flags (or, without a key flags subpacket, the algorithm) allow data signatures.
    pub can_sign: bool,
    /// Why the component may never be used (revoked, unbound, ...), if it may not.
    pub problem: Option<String>,
    /// When the component stops being valid: its own or its primary key's expiry, whichever
    /// comes first. Checked at use time, as processes outlive key lifetimes.
    pub expires: Option<Expiry>,
    /// Creation time of the self-signature that binds it (newest wins among signing subkeys).
    pub bound_at: u32,
}

impl Component {
    pub fn fingerprint_hex(&self) -> String {
        fingerprint_hex(&self.fingerprint)
    }

    /// Why this component may not make data signatures at `now`, if it may not.
    pub fn signing_problem(&self, now: u32) -> Option<String> {
        if let Some(problem) = &self.problem {
            return Some(problem.clone());
        }
        if let Some(expiry) = &self.expires {
            if expiry.at <= u64::from(now) {
                let date = utc_date(u32::try_from(expiry.at).unwrap_or(u32::MAX));
                return Some(format!("the {} expired on {date}", expiry.what));
            }
        }
        if !self.can_sign {
            return Some("its key flags do not allow signing".to_string());
        }
        None
    }
}

/// The end of a component's validity (Unix seconds), and which key's lifetime sets it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Expiry {
    pub at: u64,
    pub what: &'static str,
}

fn earliest(a: Option<Expiry>, b: Option<Expiry>) -> Option<Expiry> {
    match (a, b) {
        (Some(x), Some(y)) => Some(if y.at < x.at { y } else { x }),
        (x, None) => x,
        (None, y) => y,
    }
}

/// A certificate summarized: components[0] is the primary key, then the subkeys in the
/// order they were given.
#[derive(Debug, Clone)]
pub(crate) struct CertSummary {
    pub primary_fingerprint: String,
    pub user_id: Option<String>,
    pub components: Vec<Component>,
}

pub(crate) fn now_unix() -> u32 {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_secs())
        .unwrap_or(0);
    u32::try_from(secs).unwrap_or(u32::MAX)
}

/// `YYYY-MM-DD` (UTC) for a Unix time, for messages.
pub(crate) fn utc_date(unix: u32) -> String {
    crate::utc::UtcTime::from_unix(i64::from(unix)).date()
}

fn signature_time(sig: &Signature) -> u32 {
    sig.created().map(|t| t.as_secs()).unwrap_or(0)
}

/// A self-signature is only in force before its own expiration time, if it has one.
fn signature_expired(sig: &Signature, now: u32) -> bool {
    match sig.signature_expiration_time() {
        Some(lifetime) if lifetime.as_secs() > 0 => {
            u64::from(signature_time(sig)) + u64::from(lifetime.as_secs()) <= u64::from(now)
        }
        _ => false,
    }
}

fn algorithm_can_sign(algorithm: PublicKeyAlgorithm) -> bool {
    matches!(
        algorithm,
        PublicKeyAlgorithm::RSA
            | PublicKeyAlgorithm::RSASign
            | PublicKeyAlgorithm::DSA
            | PublicKeyAlgorithm::ECDSA
            | PublicKeyAlgorithm::EdDSALegacy
            | PublicKeyAlgorithm::Ed25519
            | PublicKeyAlgorithm::Ed448
    )
}

fn has_key_flags_subpacket(sig: &Signature) -> bool {
    sig.config().is_some_and(|config| {
        config
            .hashed_subpackets()
            .any(|sub| matches!(sub.data, pgp::packet::SubpacketData::KeyFlags(_)))
    })
}

/// Signing capability from a binding self-signature: its key flags, or the algorithm when
/// the signature carries no key flags (old v4 keys).
fn binding_allows_signing(sig: &Signature, algorithm: PublicKeyAlgorithm) -> bool {
    if has_key_flags_subpacket(sig) {
        sig.key_flags().sign() && algorithm_can_sign(algorithm)
    } else {
        algorithm_can_sign(algorithm)
    }
}

/// The key expiry a binding signature sets, if any (a zero lifetime means none).
fn expiry_of(sig: &Signature, key_created: u32, what: &'static str) -> Option<Expiry> {
    let lifetime = sig.key_expiration_time()?.as_secs();
    (lifetime > 0).then(|| Expiry {
        at: u64::from(key_created) + u64::from(lifetime),
        what,
    })
}

fn user_id_text(id: &pgp::packet::UserId) -> String {
    match id.as_str() {
        Some(text) => text.to_string(),
        None => String::from_utf8_lossy(id.id()).into_owned(),
    }
}

/// The primary key's self-signature that is in force, and the user id to report.
struct PrimaryVerdict {
    problem: Option<String>,
    can_sign: bool,
    bound_at: u32,
    expires: Option<Expiry>,
    user_id: Option<String>,
}

/// The newest valid, unexpired certification of a user id, unless a later revocation voids it.
fn user_id_certification<'a>(
    primary: &PublicKey,
    user: &'a pgp::types::SignedUser,
    now: u32,
) -> Option<&'a Signature> {
    let valid: Vec<&Signature> = user
        .signatures
        .iter()
        .filter(|sig| {
            sig.verify_certification(primary, Tag::UserId, &user.id)
                .is_ok()
        })
        .collect();
    let newest = valid
        .iter()
        .filter(|sig| sig.is_certification() && sig.typ() != Some(SignatureType::CertRevocation))
        .filter(|sig| !signature_expired(sig, now))
        .max_by_key(|sig| signature_time(sig))
        .copied()?;
    let revoked_later = valid
        .iter()
        .filter(|sig| sig.typ() == Some(SignatureType::CertRevocation))
        .any(|sig| signature_time(sig) >= signature_time(newest));
    (!revoked_later).then_some(newest)
}

fn evaluate_primary(primary: &PublicKey, details: &SignedKeyDetails, now: u32) -> PrimaryVerdict {
    let revoked = details.revocation_signatures.iter().any(|sig| {
        sig.typ() == Some(SignatureType::KeyRevocation) && sig.verify_key(primary).is_ok()
    });

    // Valid user ids in key order, each with its certification in force.
    let users: Vec<(&Signature, String)> = details
        .users
        .iter()
        .filter_map(|user| {
            user_id_certification(primary, user, now).map(|sig| (sig, user_id_text(&user.id)))
        })
        .collect();
    // Like gpg: the user id flagged primary (newest such), else the first one.
    let chosen_user = users
        .iter()
        .filter(|(sig, _)| sig.is_primary())
        .max_by_key(|(sig, _)| signature_time(sig))
        .or_else(|| users.first());

    let binding = match chosen_user {
        Some((sig, _)) => Some(*sig),
        None => details
            .direct_signatures
            .iter()
            .filter(|sig| sig.typ() == Some(SignatureType::Key))
            .filter(|sig| !signature_expired(sig, now))
            .filter(|sig| sig.verify_key(primary).is_ok())
            .max_by_key(|sig| signature_time(sig)),
    };
    let user_id = chosen_user.map(|(_, text)| text.clone());

    let Some(binding) = binding else {
        return PrimaryVerdict {
            problem: Some("the primary key has no valid self-signature".to_string()),
            can_sign: false,
            bound_at: 0,
            expires: None,
            user_id,
        };
    };
    PrimaryVerdict {
        problem: revoked.then(|| "the primary key is revoked".to_string()),
        can_sign: binding_allows_signing(binding, primary.algorithm()),
        bound_at: signature_time(binding),
        expires: expiry_of(binding, primary.created_at().as_secs(), "primary key"),
        user_id,
    }
}

fn evaluate_subkey(
    primary: &PublicKey,
    primary_verdict: &PrimaryVerdict,
    subkey: &PublicSubkey,
    signatures: &[Signature],
    now: u32,
) -> Component {
    let key_created = subkey.created_at().as_secs();
    let valid: Vec<&Signature> = signatures
        .iter()
        .filter(|sig| sig.verify_subkey_binding(primary, subkey).is_ok())
        .collect();
    let revoked = valid
        .iter()
        .any(|sig| sig.typ() == Some(SignatureType::SubkeyRevocation));
    let binding = valid
        .iter()
        .filter(|sig| sig.typ() == Some(SignatureType::SubkeyBinding))
        .filter(|sig| !signature_expired(sig, now))
        .max_by_key(|sig| signature_time(sig))
        .copied();

    let mut component = Component {
        fingerprint: subkey.fingerprint(),
        key_id: subkey.legacy_key_id(),
        created: key_created,
        can_sign: false,
        problem: None,
        expires: primary_verdict.expires,
        bound_at: 0,
    };
    let Some(binding) = binding else {
        component.problem = Some("the subkey has no valid binding signature".to_string());
        return component;
    };
    component.bound_at = signature_time(binding);
    component.can_sign = binding_allows_signing(binding, subkey.algorithm());
    component.expires = earliest(
        primary_verdict.expires,
        expiry_of(binding, key_created, "subkey"),
    );

    // A signing subkey must sign the primary back, or anyone could claim it (gpg checks too).
    let cross_certified = || {
        binding.embedded_signature().is_some_and(|back| {
            back.typ() == Some(SignatureType::KeyBinding)
                && back.verify_primary_key_binding(subkey, primary).is_ok()
        })
    };
    component.problem = if let Some(problem) = &primary_verdict.problem {
        Some(problem.clone())
    } else if revoked {
        Some("the subkey is revoked".to_string())
    } else if component.can_sign && !cross_certified() {
        Some("the signing subkey has no valid back-signature (cross-certification)".to_string())
    } else {
        None
    };
    component
}

/// Summarizes a certificate at time `now` (self-signatures expired by then are ignored).
pub(crate) fn summarize<'a>(
    primary: &PublicKey,
    details: &SignedKeyDetails,
    subkeys: impl IntoIterator<Item = (&'a PublicSubkey, &'a [Signature])>,
    now: u32,
) -> CertSummary {
    let verdict = evaluate_primary(primary, details, now);
    let mut components = vec![Component {
        fingerprint: primary.fingerprint(),
        key_id: primary.legacy_key_id(),
        created: primary.created_at().as_secs(),
        can_sign: verdict.can_sign,
        problem: verdict.problem.clone(),
        expires: verdict.expires,
        bound_at: verdict.bound_at,
    }];
    for (subkey, signatures) in subkeys {
        components.push(evaluate_subkey(primary, &verdict, subkey, signatures, now));
    }
    CertSummary {
        primary_fingerprint: fingerprint_hex(&primary.fingerprint()),
        user_id: verdict.user_id,
        components,
    }
}

/// Index of the component that should sign at `now`: the newest usable signing subkey, else
/// the primary key if it may sign.
pub(crate) fn pick_signing_component(
    summary: &CertSummary,
    now: u32,
    has_secret: impl Fn(usize) -> bool,
) -> Option<usize> {
    let usable = |index: usize| {
        summary.components[index].signing_problem(now).is_none() && has_secret(index)
    };
    let newest_subkey = (1..summary.components.len())
        .filter(|&index| usable(index))
        .max_by_key(|&index| {
            let component = &summary.components[index];
            (component.bound_at, component.created)
        });
    newest_subkey.or_else(|| usable(0).then_some(0))
}

#[cfg(test)]
mod tests {
    use super::utc_date;

    #[test]
    fn utc_dates() {
        assert_eq!(utc_date(0), "1970-01-01");
        assert_eq!(utc_date(951_782_400), "2000-02-29");
        assert_eq!(utc_date(1_795_708_383), "2026-11-26");
        assert_eq!(utc_date(u32::MAX), "2106-02-07");
    }
}
