//! A new farm signing key, for a first start without one: the usual gpg layout (a primary
//! that only certifies, an Ed25519 subkey that signs), v4 so gpg and Portage take it.

use pgp::composed::{ArmorOptions, KeyType, SecretKeyParamsBuilder, SubkeyParamsBuilder};
use pgp::types::KeyVersion;

use super::SignError;

/// Generates an unprotected key and returns it ASCII-armored.
pub fn generate_signing_key(user_id: &str) -> Result<String, SignError> {
    let fail = |what: &str, e: &dyn std::fmt::Display| {
        SignError::Signature(format!("generating a key: {what}: {e}"))
    };
    let subkey = SubkeyParamsBuilder::default()
        .version(KeyVersion::V4)
        .key_type(KeyType::Ed25519Legacy)
        .can_sign(true)
        .build()
        .map_err(|e| fail("subkey parameters", &e))?;
    let params = SecretKeyParamsBuilder::default()
        .version(KeyVersion::V4)
        .key_type(KeyType::Ed25519Legacy)
        .can_certify(true)
        .can_sign(false)
        .primary_user_id(user_id.into())
        .subkeys(vec![subkey])
        .build()
        .map_err(|e| fail("key parameters", &e))?;
    let key = params
        .generate(rand::thread_rng())
        .map_err(|e| fail("key", &e))?;
    key.to_armored_string(ArmorOptions::default())
        .map_err(|e| fail("armor", &e))
}

#[cfg(test)]
mod tests {
    #[test]
    fn generated_key_signs_and_verifies() {
        let armored = super::generate_signing_key("test <t@example.invalid>").unwrap();
        let key = crate::sign::SigningKey::from_armored_str(&armored, None).unwrap();
        assert_ne!(
            key.fingerprint(),
            key.signing_fingerprint(),
            "signs with the subkey"
        );
        let public = key.public_key_armored().unwrap();
        let keyring = crate::sign::Keyring::from_armored(public.as_bytes()).unwrap();
        let sig = key.sign_detached(&mut &b"data"[..]).unwrap();
        keyring
            .verify_detached(sig.as_bytes(), &mut &b"data"[..])
            .unwrap();
    }
}
