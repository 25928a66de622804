//! The official Python `standardwebhooks` package (PyPI, pinned) against this crate: it
//! verifies what `SigningSecret::sign` makes, refuses a tampered body, and what it signs
//! passes `verify`. Without python3, pip or PyPI the test is skipped loudly (a failure under
//! `BYOK_TEST_SERVICES=required`).

use std::path::Path;
use std::process::Command;

use byok_webhooks::{SigningSecret, verify};

const REQUIREMENTS: &str = "standardwebhooks==1.1.0\n";

/// Verifies argv[2..] with the official library, then signs a fixed message; prints one
/// line per result.
const SCRIPT: &str = r#"
import sys
from datetime import datetime, timezone
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

secret, msg_id, timestamp, signature, body = sys.argv[1:6]
hook = Webhook(secret)
headers = {"webhook-id": msg_id, "webhook-timestamp": timestamp, "webhook-signature": signature}
try:
    hook.verify(body, headers)
    print("verified")
except WebhookVerificationError as e:
    print("refused", e)
try:
    hook.verify(body + " ", headers)
    print("tampered verified")
except WebhookVerificationError:
    print("tampered refused")
when = datetime.fromtimestamp(int(timestamp), tz=timezone.utc)
print("signed", hook.sign("msg_from_python", when, '{"type":"job.succeeded"}'))
"#;

#[test]
fn the_official_python_library_agrees_with_our_signatures() {
    let venv = Path::new(env!("CARGO_TARGET_TMPDIR")).join("byok-webhooks-python");
    let python = match byok_testing::python_venv(&venv, REQUIREMENTS) {
        Ok(python) => python,
        Err(why) => {
            byok_testing::skip_or_fail(
                "standardwebhooks",
                &why,
                "python3 with pip (and PyPI access)",
            );
            return;
        }
    };
    let secret = SigningSecret::generate().unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let body = r#"{"type":"job.running","timestamp":"2026-12-03T00:00:00Z","data":{"id":"x"}}"#;
    let msg_id = "msg_2f1c9a";
    let signature = secret.sign(msg_id, now, body.as_bytes());
    let out = Command::new(python)
        .arg("-c")
        .arg(SCRIPT)
        .args([
            secret.to_text().as_str(),
            msg_id,
            &now.to_string(),
            &signature,
            body,
        ])
        .output()
        .expect("python runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines[0], "verified", "{stdout}");
    assert_eq!(lines[1], "tampered refused", "{stdout}");
    let theirs = lines[2].strip_prefix("signed ").expect("a signature");
    assert_eq!(
        verify(
            std::slice::from_ref(&secret),
            "msg_from_python",
            &now.to_string(),
            theirs,
            br#"{"type":"job.succeeded"}"#,
            now
        ),
        Ok(()),
        "{theirs}"
    );
    assert_eq!(
        theirs,
        secret.sign("msg_from_python", now, br#"{"type":"job.succeeded"}"#)
    );
}
