//! Each adapter against the simulator: a whole job from submit to video
//! bytes, cancel where the provider has one, and the simulator's moderation
//! and throttling classified as the adapters classify the real providers.
//!
//! The simulator was written from the protocol notes without the adapters'
//! code, so agreement here is a second reading of the same specification.

use std::time::{Duration, Instant};

use byok_core::{ErrorCode, JobError, RetryClass};
use byok_providers::{
    CancelOutcome, Credentials, InputImage, ProviderId, Registry, RemoteStatus, VideoOutput,
    VideoProvider,
};
use byok_sim::{Clock, RunningSim, SimConfig, Simulator};
use serde_json::{Value, json};

use crate::support::FetchVideo as _;
use crate::support::{input_png, is_mp4, validate_and_submit};

pub(crate) async fn sim(render_time: Duration) -> RunningSim {
    sim_with(
        SimConfig {
            render_time,
            ..SimConfig::default()
        },
        Clock::system(),
    )
    .await
}

/// A simulator on loopback with these knobs and this clock.
pub(crate) async fn sim_with(config: SimConfig, clock: Clock) -> RunningSim {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    Simulator::new(config)
        .clock(clock)
        .start(listener)
        .await
        .unwrap()
}

pub(crate) fn registry(sim: &RunningSim) -> Registry {
    let mut options = byok_providers::RegistryOptions::defaults();
    options.provider_mut(ProviderId::RUNWAY).unwrap().base_url = sim.runway_url();
    options
        .provider_mut(ProviderId::STABILITY)
        .unwrap()
        .base_url = sim.stability_url();
    options.provider_mut(ProviderId::STABILITY).unwrap().models =
        Some(crate::support::stability_catalogue_available());
    options.provider_mut(ProviderId::VEO).unwrap().base_url = sim.vertex_url();
    options.provider_mut(ProviderId::FAL).unwrap().base_url = sim.fal_url();
    options
        .provider_mut(ProviderId::REPLICATE)
        .unwrap()
        .base_url = sim.replicate_url();
    options.allow_private_networks = true;
    options.request_timeout = Duration::from_secs(10);
    options.token_uri_allowlist = vec![sim.token_url().parse().unwrap()];
    Registry::new(&options).unwrap()
}

pub(crate) fn credentials(adapter: &dyn VideoProvider, raw: &Value) -> Credentials {
    adapter.parse_credentials(raw).unwrap()
}

/// Credentials of a new service account of `sim-project` (with `account_id`, e.g.
/// `sim-throttled-…`, when given), naming `location`.
pub(crate) fn service_account_credentials(
    sim: &RunningSim,
    adapter: &dyn VideoProvider,
    account_id: Option<&str>,
    location: &str,
) -> Credentials {
    let account = sim
        .new_service_account_with_id("sim-project", account_id)
        .unwrap();
    credentials(
        adapter,
        &json!({ "service_account": account, "location": location }),
    )
}

fn veo_credentials(
    sim: &RunningSim,
    adapter: &dyn VideoProvider,
    account_id: Option<&str>,
) -> Credentials {
    service_account_credentials(sim, adapter, account_id, "us-central1")
}

/// Submits `fields` for `provider` and returns the provider's job id.
pub(crate) async fn submit(
    adapter: &dyn VideoProvider,
    creds: &Credentials,
    fields: Value,
    image: Option<&InputImage>,
) -> Result<String, JobError> {
    validate_and_submit(adapter, creds, fields, image)
        .await
        .map(|s| s.provider_job_id)
}

/// Polls until the job leaves the queued/running states (or 10 s pass),
/// counting how many answers said it was still in progress.
pub(crate) async fn poll_to_end(
    adapter: &dyn VideoProvider,
    creds: &Credentials,
    id: &str,
) -> (RemoteStatus, usize) {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut in_progress = 0;
    loop {
        let status = adapter.poll(creds, id).await.unwrap();
        match status {
            RemoteStatus::Queued | RemoteStatus::Running { .. } if Instant::now() < deadline => {
                in_progress += 1;
                // The remote job renders for the simulator's render time; polling
                // is how every provider tells its end.
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            other => return (other, in_progress),
        }
    }
}

#[tokio::test]
async fn every_adapter_runs_a_job_to_video_bytes_at_the_simulator() {
    let sim = sim(Duration::from_millis(150)).await;
    let registry = registry(&sim);
    let image = input_png(1280, 720);

    let cases: Vec<(ProviderId, Credentials, Value, Option<&InputImage>)> = vec![
        (
            ProviderId::RUNWAY,
            credentials(
                &*registry.get(ProviderId::RUNWAY).unwrap(),
                &json!({ "api_key": "sim_runway_lifecycle" }),
            ),
            json!({ "model": "gen4_turbo", "image_url": "https://example.com/a.png", "prompt": "a slow dolly-in", "duration_seconds": 5, "seed": 7 }),
            Some(&image),
        ),
        (
            ProviderId::RUNWAY,
            credentials(
                &*registry.get(ProviderId::RUNWAY).unwrap(),
                &json!({ "api_key": "sim_runway_text" }),
            ),
            json!({ "model": "gen4.5", "prompt": "a lighthouse at dusk", "aspect_ratio": "9:16" }),
            None,
        ),
        (
            ProviderId::STABILITY,
            credentials(
                &*registry.get(ProviderId::STABILITY).unwrap(),
                &json!({ "api_key": "sim_stability_lifecycle" }),
            ),
            json!({ "model": "stable-video-diffusion", "image_url": "https://example.com/a.png", "seed": 42 }),
            Some(&image),
        ),
        (
            ProviderId::VEO,
            veo_credentials(&sim, &*registry.get(ProviderId::VEO).unwrap(), None),
            json!({ "model": "veo-3.1-generate-001", "prompt": "waves on a rocky shore", "duration_seconds": 6, "negative_prompt": "people" }),
            None,
        ),
        (
            ProviderId::VEO,
            veo_credentials(&sim, &*registry.get(ProviderId::VEO).unwrap(), None),
            json!({ "model": "veo-3.1-fast-generate-001", "image_url": "https://example.com/a.png", "resolution": "1080p" }),
            Some(&image),
        ),
    ];

    for (provider, creds, fields, image) in cases {
        let adapter = registry.get(provider).unwrap();
        let id = submit(&*adapter, &creds, fields.clone(), image)
            .await
            .unwrap_or_else(|e| panic!("{provider} {fields}: {e}"));
        let (status, in_progress) = poll_to_end(&*adapter, &creds, &id).await;
        assert!(
            in_progress >= 1,
            "{provider}: the job was seen in progress before it ended"
        );
        let RemoteStatus::Succeeded(output, _) = status else {
            panic!("{provider} {fields}: ended {status:?}");
        };
        let video = adapter.fetch_video(&creds, &output).await.unwrap();
        assert!(is_mp4(&video.bytes), "{provider}: an MP4 came back");
        if provider == ProviderId::RUNWAY {
            assert!(
                matches!(output, VideoOutput::Urls(_)),
                "Runway hands out URLs"
            );
        }
    }

    let stats = sim.stats().await;
    assert_eq!(stats.runway.totals.accepted, 2);
    assert_eq!(stats.stability.totals.accepted, 1);
    assert_eq!(stats.vertex.totals.accepted, 2);
    assert_eq!(stats.totals.unauthorized, 0, "every request authenticated");
    assert_eq!(
        stats.totals.rejected, 0,
        "the simulator accepted every request the adapters built"
    );
}

#[tokio::test]
async fn cancel_reaches_the_provider_that_has_one() {
    let sim = sim(Duration::from_secs(30)).await;
    let registry = registry(&sim);

    let runway = registry.get(ProviderId::RUNWAY).unwrap();
    let creds = credentials(&*runway, &json!({ "api_key": "sim_cancel" }));
    let id = submit(
        &*runway,
        &creds,
        json!({ "model": "gen4.5", "prompt": "a cat" }),
        None,
    )
    .await
    .unwrap();
    assert_eq!(
        runway.cancel(&creds, &id).await.unwrap(),
        CancelOutcome::Cancelled
    );
    assert_eq!(
        sim.stats().await.runway.totals.cancels,
        1,
        "the DELETE reached Runway"
    );
    // The task is gone at Runway: asking again is no success.
    assert!(!matches!(
        runway.poll(&creds, &id).await,
        Ok(RemoteStatus::Succeeded(_, _))
    ));

    let stability = registry.get(ProviderId::STABILITY).unwrap();
    let creds = credentials(&*stability, &json!({ "api_key": "sim_cancel" }));
    let id = submit(
        &*stability,
        &creds,
        json!({ "model": "stable-video-diffusion", "image_url": "https://e.com/a.png" }),
        Some(&input_png(800, 800)),
    )
    .await
    .unwrap();
    assert_eq!(
        stability.cancel(&creds, &id).await.unwrap(),
        CancelOutcome::NotSupported
    );

    let veo = registry.get(ProviderId::VEO).unwrap();
    let creds = veo_credentials(&sim, &*veo, None);
    let id = submit(
        &*veo,
        &creds,
        json!({ "model": "veo-3.1-generate-001", "prompt": "a cat" }),
        None,
    )
    .await
    .unwrap();
    assert_eq!(
        veo.cancel(&creds, &id).await.unwrap(),
        CancelOutcome::NotSupported
    );
    assert_eq!(
        sim.stats().await.totals.cancels,
        1,
        "no cancel request where none exists"
    );
}

/// Submits and polls to the end; a refused submit is the outcome too.
async fn outcome(
    adapter: &dyn VideoProvider,
    creds: &Credentials,
    fields: Value,
    image: Option<&InputImage>,
) -> Result<RemoteStatus, JobError> {
    let id = submit(adapter, creds, fields, image).await?;
    Ok(poll_to_end(adapter, creds, &id).await.0)
}

#[tokio::test]
async fn moderation_throttling_and_bad_keys_at_the_simulator_are_classified() {
    let sim = sim(Duration::ZERO).await;
    let registry = registry(&sim);
    let runway = registry.get(ProviderId::RUNWAY).unwrap();
    let stability = registry.get(ProviderId::STABILITY).unwrap();
    let veo = registry.get(ProviderId::VEO).unwrap();
    let image = input_png(800, 800);
    let cat = json!({ "model": "gen4.5", "prompt": "a cat" });
    let veo_cat = json!({ "model": "veo-3.1-generate-001", "prompt": "a cat" });
    let throttled = RetryClass::RetryAfter(Duration::from_secs(2));

    // (what, adapter, credentials, request, image, expected code, expected class)
    let cases = [
        (
            "runway moderation",
            &runway,
            credentials(&*runway, &json!({ "api_key": "sim_moderation" })),
            json!({ "model": "gen4.5", "prompt": "please sim:moderate this" }),
            None,
            ErrorCode::ContentRejected,
            RetryClass::Permanent,
        ),
        (
            "veo moderation (RAI filter)",
            &veo,
            veo_credentials(&sim, &*veo, None),
            json!({ "model": "veo-3.1-generate-001", "prompt": "sim:moderate" }),
            None,
            ErrorCode::ContentRejected,
            RetryClass::Permanent,
        ),
        (
            "stability moderation (403)",
            &stability,
            credentials(&*stability, &json!({ "api_key": "sim_moderation" })),
            json!({ "model": "stable-video-diffusion", "image_url": "https://e.com/a.png", "seed": 666 }),
            Some(&image),
            ErrorCode::ContentRejected,
            RetryClass::Permanent,
        ),
        (
            "runway sim_throttled (Retry-After)",
            &runway,
            credentials(&*runway, &json!({ "api_key": "sim_throttled_runway" })),
            cat.clone(),
            None,
            ErrorCode::ProviderUnavailable,
            throttled,
        ),
        (
            "veo sim-throttled (RetryInfo)",
            &veo,
            veo_credentials(&sim, &*veo, Some("sim-throttled-veo")),
            veo_cat.clone(),
            None,
            ErrorCode::ProviderUnavailable,
            throttled,
        ),
        (
            "runway bad key",
            &runway,
            credentials(&*runway, &json!({ "api_key": "key_not_a_simulator_key" })),
            cat.clone(),
            None,
            ErrorCode::CredentialsInvalid,
            RetryClass::Permanent,
        ),
        (
            "stability bad key",
            &stability,
            credentials(&*stability, &json!({ "api_key": "sk-not-a-simulator-key" })),
            json!({ "model": "stable-video-diffusion", "image_url": "https://e.com/a.png" }),
            Some(&image),
            ErrorCode::CredentialsInvalid,
            RetryClass::Permanent,
        ),
    ];
    for (what, adapter, creds, fields, image, code, class) in cases {
        let error = match outcome(&**adapter, &creds, fields.clone(), image).await {
            Ok(RemoteStatus::Failed(e)) | Err(e) => e,
            other => panic!("{what}: expected {code}, got {other:?}"),
        };
        assert_eq!((error.code, error.class), (code, class), "{what}: {error}");
        // A throttled key goes through on its second try.
        if class == throttled {
            assert!(
                submit(&**adapter, &creds, fields, None).await.is_ok(),
                "{what}: second try"
            );
        }
    }
}
