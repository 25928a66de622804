//! `open_credentials`, the one path from a stored sealed value to provider credentials:
//! it opens only for its own (user, provider), says why not without secrets, and leaves
//! no copy of the key behind in freed memory.

use std::io::{Read as _, Seek as _, SeekFrom};

use byok_core::{DEFAULT_PROJECT_ID, ProjectUser, ProviderId};
use byok_crypto::{KeyRing, SealContext};
use byok_providers::{
    Credentials, OpenError, Registry, RegistryOptions, open_credentials, wipe_json,
};
use secrecy::{ExposeSecret as _, SecretString};
use serde_json::{Map, Value};
use uuid::Uuid;
use zeroize::{Zeroize as _, Zeroizing};

fn key_ring() -> KeyRing {
    KeyRing::parse(&SecretString::from(format!("1:{}", "cd".repeat(32)))).unwrap()
}

/// `key_` and 40 random hex digits, written into a buffer allocated once (a growing
/// string would leave copies of its prefix behind in the blocks it outgrew).
fn random_key() -> Zeroizing<String> {
    let mut bytes = Zeroizing::new([0u8; 20]);
    getrandom::fill(&mut bytes[..]).unwrap();
    let mut key = Zeroizing::new(String::with_capacity(44));
    key.push_str("key_");
    for b in bytes.iter() {
        for nibble in [b >> 4, b & 15] {
            key.push(char::from_digit(u32::from(nibble), 16).unwrap());
        }
    }
    key
}

/// Parses `{"api_key": key}` for Runway and wipes the JSON it built.
fn runway_credentials(registry: &Registry, key: &str) -> Credentials {
    let mut raw = Value::Object(Map::from_iter([(
        "api_key".to_owned(),
        Value::String(key.to_owned()),
    )]));
    let parsed = registry
        .get(ProviderId::RUNWAY)
        .unwrap()
        .parse_credentials(&raw)
        .unwrap();
    wipe_json(&mut raw);
    parsed
}

#[test]
fn a_stored_credential_opens_for_its_own_row_only() {
    let registry = Registry::new(&RegistryOptions::defaults()).unwrap();
    let runway = registry.get(ProviderId::RUNWAY).unwrap();
    let ring = key_ring();
    let (user, other) = (Uuid::new_v4(), Uuid::new_v4());
    let key = random_key();
    let credentials = runway_credentials(&registry, &key);
    let sealed = ring
        .seal(
            &SealContext::new(
                ProjectUser::new(DEFAULT_PROJECT_ID, user),
                ProviderId::RUNWAY,
            ),
            &credentials.to_plaintext(),
        )
        .unwrap();

    let opened = open_credentials(
        &ring,
        runway.as_ref(),
        ProjectUser::new(DEFAULT_PROJECT_ID, user),
        &sealed,
    )
    .unwrap();
    assert_eq!(opened, credentials);

    // Another user's row, another provider: unreadable, and the message has no secret.
    let err = open_credentials(
        &ring,
        runway.as_ref(),
        ProjectUser::new(DEFAULT_PROJECT_ID, other),
        &sealed,
    )
    .unwrap_err();
    assert!(matches!(err, OpenError::Unreadable(_)), "{err:?}");
    let stability = registry.get(ProviderId::STABILITY).unwrap();
    let err = open_credentials(
        &ring,
        stability.as_ref(),
        ProjectUser::new(DEFAULT_PROJECT_ID, user),
        &sealed,
    )
    .unwrap_err();
    assert!(matches!(err, OpenError::Unreadable(_)), "{err:?}");
    assert!(!err.to_string().contains(key.as_str()));

    // Opened, but not JSON; JSON, but not Runway's shape.
    let context = SealContext::new(
        ProjectUser::new(DEFAULT_PROJECT_ID, user),
        ProviderId::RUNWAY,
    );
    let not_json = ring.seal(&context, b"key_not_json").unwrap();
    let err = open_credentials(
        &ring,
        runway.as_ref(),
        ProjectUser::new(DEFAULT_PROJECT_ID, user),
        &not_json,
    )
    .unwrap_err();
    assert_eq!(err.to_string(), "the stored credential is not valid JSON");
    let wrong_shape = ring.seal(&context, br#"{"token":"x"}"#).unwrap();
    let err = open_credentials(
        &ring,
        runway.as_ref(),
        ProjectUser::new(DEFAULT_PROJECT_ID, user),
        &wrong_shape,
    )
    .unwrap_err();
    assert!(matches!(err, OpenError::Malformed { .. }), "{err:?}");
}

/// Counts places in this process's writable memory that hold the last 24 characters of
/// `key` (the first 16 bytes of a freed block are overwritten by the allocator's free-list
/// links; the rest of a block freed unwiped keeps its bytes until reused). The needle is
/// kept XOR-masked so that it is not itself a copy of what it looks for.
#[cfg(target_os = "linux")]
fn copies_in_memory(masked_tail: &[u8]) -> usize {
    const MASK: u8 = 0x5a;
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    let mut mem = std::fs::File::open("/proc/self/mem").unwrap();
    let mut buffer = vec![0u8; 1 << 20];
    let mut found = 0;
    for line in maps.lines() {
        let mut fields = line.split_whitespace();
        let (Some(range), Some(perms)) = (fields.next(), fields.next()) else {
            continue;
        };
        if !perms.starts_with("rw") {
            continue;
        }
        let Some((start, end)) = range.split_once('-') else {
            continue;
        };
        let (Ok(start), Ok(end)) = (u64::from_str_radix(start, 16), u64::from_str_radix(end, 16))
        else {
            continue;
        };
        let mut at = start;
        while at < end {
            // Chunks overlap by the needle's length, so no match straddles two reads.
            let len = ((end - at) as usize).min(buffer.len());
            if mem.seek(SeekFrom::Start(at)).is_err() {
                break;
            }
            let Ok(read) = mem.read(&mut buffer[..len]) else {
                break;
            };
            if read == 0 {
                break;
            }
            let chunk = &buffer[..read];
            let first = masked_tail[0] ^ MASK;
            let mut i = 0;
            while let Some(offset) = chunk[i..].iter().position(|&b| b == first) {
                let p = i + offset;
                if p + masked_tail.len() <= chunk.len()
                    && chunk[p..p + masked_tail.len()]
                        .iter()
                        .zip(masked_tail)
                        .all(|(b, m)| *b == m ^ MASK)
                {
                    found += 1;
                }
                i = p + 1;
            }
            if read < masked_tail.len() || at + read as u64 >= end {
                break;
            }
            at += (read - masked_tail.len()) as u64;
        }
    }
    buffer.zeroize();
    found
}

#[cfg(target_os = "linux")]
fn masked_tail(key: &str) -> Vec<u8> {
    key.as_bytes()[key.len() - 24..]
        .iter()
        .map(|b| b ^ 0x5a)
        .collect()
}

#[cfg(target_os = "linux")]
#[test]
fn opening_leaves_no_copy_of_the_key_in_freed_memory() {
    let registry = Registry::new(&RegistryOptions::defaults()).unwrap();
    let runway = registry.get(ProviderId::RUNWAY).unwrap();
    let ring = key_ring();
    let user = Uuid::new_v4();

    // The scanner sees what a careless path leaves behind: copies dropped unwiped.
    let careless = random_key();
    let careless_tail = masked_tail(&careless);
    let copies: Vec<String> = (0..100).map(|_| careless.as_str().to_owned()).collect();
    std::hint::black_box(&copies);
    drop(copies);
    drop(careless);
    assert!(
        copies_in_memory(&careless_tail) > 0,
        "the scanner must find copies that were freed without wiping"
    );

    // The key goes in through zeroizing buffers only, and comes out of the one path.
    let key = random_key();
    let tail = masked_tail(&key);
    let sealed = {
        let credentials = runway_credentials(&registry, &key);
        ring.seal(
            &SealContext::new(
                ProjectUser::new(DEFAULT_PROJECT_ID, user),
                ProviderId::RUNWAY,
            ),
            &credentials.to_plaintext(),
        )
        .unwrap()
    };
    drop(key);
    assert_eq!(copies_in_memory(&tail), 0, "before opening");
    for _ in 0..100 {
        let credentials = open_credentials(
            &ring,
            runway.as_ref(),
            ProjectUser::new(DEFAULT_PROJECT_ID, user),
            &sealed,
        )
        .unwrap();
        let byok_providers::CredentialsKind::ApiKey { api_key, .. } = credentials.kind() else {
            panic!("an API key");
        };
        assert_eq!(api_key.expose_secret().len(), 44);
    }
    assert_eq!(
        copies_in_memory(&tail),
        0,
        "opening a credential left a plaintext copy of the key in freed memory"
    );
}
