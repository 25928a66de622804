//! What an attacker with a copy of the database gets: no key, no token.

use byok_core::{DEFAULT_PROJECT_ID, ProjectUser, ProviderId};
use byok_crypto::{KeyRing, SealContext};
use byok_store::{NewCredential, NewToken};
use secrecy::{ExposeSecret, SecretString};
use uuid::Uuid;

use crate::backends;

const API_KEY: &str = "key_4f3c2b1a0f9e8d7c6b5a49382716050403020100ffeeddccbbaa998877665544";

#[tokio::test]
async fn a_dump_of_either_database_holds_no_key_and_no_token_secret() {
    let ring = KeyRing::parse(&SecretString::from(format!("1:{}", "ab".repeat(32)))).unwrap();
    for b in backends().await {
        let user = Uuid::new_v4();
        let plaintext = format!(r#"{{"api_key":"{API_KEY}"}}"#);
        let sealed = ring
            .seal(
                &SealContext::new(
                    ProjectUser::new(DEFAULT_PROJECT_ID, user),
                    ProviderId::RUNWAY,
                ),
                plaintext.as_bytes(),
            )
            .unwrap();
        b.store
            .credentials()
            .upsert(&NewCredential {
                owner: ProjectUser::new(DEFAULT_PROJECT_ID, user),
                provider: ProviderId::RUNWAY,
                sealed: sealed.clone(),
                credential_hint: "key_…5544".into(),
                validated_at: None,
            })
            .await
            .unwrap();
        let (_, token) = b
            .store
            .tokens()
            .create(&NewToken::new("dump-test", DEFAULT_PROJECT_ID))
            .await
            .unwrap();
        let token = token.expose_secret().to_owned();

        let dump = if b.name == "postgres" {
            let Some(dump) = pg_dump(&b.url) else {
                continue;
            };
            dump
        } else {
            b.store.close().await;
            sqlite_bytes(&b.url)
        };
        // The dump really holds the rows: the sealed value and the hint are there...
        assert!(
            contains(&dump, sealed.as_bytes()),
            "{}: dump holds the sealed row",
            b.name
        );
        assert!(
            contains(&dump, "dump-test".as_bytes()),
            "{}: dump holds the token row",
            b.name
        );
        // ...but neither the key, nor any long piece of it, nor the token.
        assert!(
            !contains(&dump, API_KEY.as_bytes()),
            "{}: API key in the dump",
            b.name
        );
        assert!(
            !contains(&dump, &API_KEY.as_bytes()[4..24]),
            "{}: part of the key in the dump",
            b.name
        );
        assert!(
            !contains(&dump, token.as_bytes()),
            "{}: token in the dump",
            b.name
        );
        assert!(
            !contains(&dump, &token.as_bytes()[5..25]),
            "{}: part of the token in the dump",
            b.name
        );
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

fn pg_dump(url: &str) -> Option<Vec<u8>> {
    match std::process::Command::new("pg_dump")
        .arg("--dbname")
        .arg(url)
        .output()
    {
        Ok(out) if out.status.success() => Some(out.stdout),
        Ok(out) => panic!("pg_dump failed: {}", String::from_utf8_lossy(&out.stderr)),
        Err(e) => {
            byok_testing::skip_or_fail("pg_dump", &e.to_string(), "the PostgreSQL client tools");
            None
        }
    }
}

/// The SQLite file and its write-ahead log, byte for byte.
fn sqlite_bytes(url: &str) -> Vec<u8> {
    let path = url
        .trim_start_matches("sqlite://")
        .split('?')
        .next()
        .unwrap();
    let mut bytes = std::fs::read(path).unwrap();
    if let Ok(wal) = std::fs::read(format!("{path}-wal")) {
        bytes.extend(wal);
    }
    bytes
}
