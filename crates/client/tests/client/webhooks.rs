//! Receiving: a delivery signed by `byok-webhooks` (what the API's deliveries use) verifies
//! and reads back as its event; anything altered, signed with another secret or too old
//! is refused.

use std::time::{SystemTime, UNIX_EPOCH};

use byok_client::{
    EventType, GenerationRequest, JobStatus, ProviderId, SigningSecret, VerifyError, WebhookError,
    verify_webhook,
};
use http::{HeaderMap, HeaderValue};
use serde_json::json;
use uuid::Uuid;

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// The headers of a delivery of `body` signed by `secrets` at `timestamp`.
fn signed(secrets: &[&SigningSecret], id: &str, timestamp: i64, body: &[u8]) -> HeaderMap {
    let signature = secrets
        .iter()
        .map(|s| s.sign(id, timestamp, body))
        .collect::<Vec<_>>()
        .join(" ");
    let mut headers = HeaderMap::new();
    headers.insert("webhook-id", HeaderValue::from_str(id).unwrap());
    headers.insert("webhook-timestamp", HeaderValue::from(timestamp));
    headers.insert(
        "webhook-signature",
        HeaderValue::from_str(&signature).unwrap(),
    );
    headers
}

fn job_payload() -> serde_json::Value {
    let user = Uuid::new_v4();
    let request = GenerationRequest {
        prompt: Some("a lighthouse".into()),
        ..GenerationRequest::new(user, ProviderId::RUNWAY, "gen4.5")
    };
    json!({
        "type": "job.succeeded",
        "timestamp": "2026-12-04T10:00:00Z",
        "data": {
            "id": Uuid::now_v7(), "user_id": user, "provider": "runway", "model": "gen4.5",
            "status": "succeeded", "progress": 1.0, "attempts": 1, "provider_job_id": "task-1",
            "request": request,
            "result": { "video_url": "/v1/jobs/x/video", "provider_urls": [], "bytes": 10,
                        "content_type": "video/mp4", "note": null,
                        "provider_usage": { "compute_ms": null } },
            "error": null, "metadata": {},
            "created_at": "2026-12-04T09:59:00Z", "updated_at": "2026-12-04T10:00:00Z",
            "started_at": "2026-12-04T09:59:01Z", "finished_at": "2026-12-04T10:00:00Z",
        },
    })
}

#[test]
fn a_signed_delivery_verifies_and_reads_back_as_its_event() {
    let secret = SigningSecret::generate().unwrap();
    let body = serde_json::to_vec(&job_payload()).unwrap();
    let headers = signed(&[&secret], "msg_0001", now(), &body);

    let event = verify_webhook(std::slice::from_ref(&secret), &headers, &body).unwrap();
    assert_eq!(event.id, "msg_0001");
    assert_eq!(event.event_type, "job.succeeded");
    assert_eq!(event.kind(), Some(EventType::JobSucceeded));
    let job = event.job().unwrap().expect("a job event");
    assert_eq!(job.status, JobStatus::Succeeded);
    assert_eq!(job.request.prompt.as_deref(), Some("a lighthouse"));

    // During a rotation the delivery carries both signatures; either secret verifies it.
    let next = SigningSecret::generate().unwrap();
    let both = signed(&[&secret, &next], "msg_0002", now(), &body);
    verify_webhook(std::slice::from_ref(&next), &both, &body).unwrap();
    verify_webhook(&[secret.clone(), next], &both, &body).unwrap();

    // The secret as the endpoint's owner was shown it.
    let parsed = SigningSecret::parse(&secret.to_text()).unwrap();
    verify_webhook(&[parsed], &headers, &body).unwrap();

    // An event that is not about a job has no job; a type newer than this client is
    // still an event.
    let other = serde_json::to_vec(&json!({
        "type": "credential.invalidated", "timestamp": "2026-12-04T10:00:00Z",
        "data": { "provider": "runway" },
    }))
    .unwrap();
    let event = verify_webhook(
        std::slice::from_ref(&secret),
        &signed(&[&secret], "msg_0003", now(), &other),
        &other,
    )
    .unwrap();
    assert_eq!(event.job().unwrap(), None);
    let newer = br#"{"type":"job.teleported","timestamp":"2026-12-04T10:00:00Z","data":{}}"#;
    let event = verify_webhook(
        std::slice::from_ref(&secret),
        &signed(&[&secret], "msg_0004", now(), newer),
        newer,
    )
    .unwrap();
    assert_eq!((event.kind(), event.job().unwrap()), (None, None));
}

#[test]
fn altered_foreign_stale_and_unsigned_deliveries_are_refused() {
    let secret = SigningSecret::generate().unwrap();
    let secrets = std::slice::from_ref(&secret);
    let body = serde_json::to_vec(&job_payload()).unwrap();
    let headers = signed(&[&secret], "msg_0005", now(), &body);

    // One byte changed in the body.
    let mut tampered = body.clone();
    let at = tampered.iter().position(|b| *b == b'1').unwrap();
    tampered[at] = b'2';
    assert!(matches!(
        verify_webhook(secrets, &headers, &tampered),
        Err(WebhookError::Signature(VerifyError::NoMatch))
    ));
    // Another event's id with this signature.
    let mut moved = headers.clone();
    moved.insert("webhook-id", HeaderValue::from_static("msg_other"));
    assert!(matches!(
        verify_webhook(secrets, &moved, &body),
        Err(WebhookError::Signature(VerifyError::NoMatch))
    ));
    // Signed with another endpoint's secret.
    let foreign = SigningSecret::generate().unwrap();
    assert!(matches!(
        verify_webhook(&[foreign], &headers, &body),
        Err(WebhookError::Signature(VerifyError::NoMatch))
    ));
    // Replayed ten minutes later.
    let stale = signed(&[&secret], "msg_0005", now() - 600, &body);
    assert!(matches!(
        verify_webhook(secrets, &stale, &body),
        Err(WebhookError::Signature(VerifyError::TooOld))
    ));
    // Without its signature.
    let mut unsigned = headers;
    unsigned.remove("webhook-signature");
    assert!(matches!(
        verify_webhook(secrets, &unsigned, &body),
        Err(WebhookError::MissingHeader("webhook-signature"))
    ));
    // Signed, but not an event.
    let junk = b"not json";
    assert!(matches!(
        verify_webhook(secrets, &signed(&[&secret], "msg_0006", now(), junk), junk),
        Err(WebhookError::Payload(_))
    ));
}
