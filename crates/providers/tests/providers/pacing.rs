//! `max_requests_per_second`: every request a process sends to a provider waits for its
//! turn, measured by the simulator's request log.
//!
//! The figures are printed; the one assertion is the cap itself (pacing can only make the
//! busiest second emptier on a slow machine, never fuller).

use std::time::Duration;

use byok_providers::{CredentialCheck, ProviderId, Registry};
use futures::future::join_all;
use serde_json::json;

use crate::sim_lifecycle::{credentials, sim, submit};

/// Requests per second the test paces Runway to.
const RATE: f64 = 10.0;

#[tokio::test]
async fn a_paced_provider_gets_at_most_its_rate_and_every_request_still_goes_out() {
    let sim = sim(Duration::from_millis(50)).await;
    let mut options = byok_providers::RegistryOptions::defaults();
    options.provider_mut(ProviderId::RUNWAY).unwrap().base_url = sim.runway_url();
    options
        .provider_mut(ProviderId::RUNWAY)
        .unwrap()
        .max_requests_per_second = Some(RATE);
    // Stability stays unpaced: the baseline of the same burst.
    options
        .provider_mut(ProviderId::STABILITY)
        .unwrap()
        .base_url = sim.stability_url();
    options.allow_private_networks = true;
    let registry = Registry::new(&options).unwrap();

    let runway = registry.get(ProviderId::RUNWAY).unwrap();
    let stability = registry.get(ProviderId::STABILITY).unwrap();
    let runway_key = credentials(&*runway, &json!({ "api_key": "sim_paced" }));
    let stability_key = credentials(&*stability, &json!({ "api_key": "sim_unpaced" }));

    // One burst of 30 requests to each: key checks, submits and polls of a job at once.
    let job = submit(
        &*runway,
        &runway_key,
        json!({ "model": "gen4.5", "prompt": "a cat" }),
        None,
    )
    .await
    .expect("the submit is paced, not refused");
    let runway_burst = (0..29).map(|i| {
        let (runway, key, job) = (&runway, &runway_key, &job);
        async move {
            if i % 2 == 0 {
                matches!(runway.check_credentials(key).await, CredentialCheck::Valid)
            } else {
                runway.poll(key, job).await.is_ok()
            }
        }
    });
    let stability_burst = (0..30).map(|_| stability.check_credentials(&stability_key));
    let (runway_answers, stability_answers) =
        tokio::join!(join_all(runway_burst), join_all(stability_burst));
    assert!(
        runway_answers.into_iter().all(|ok| ok),
        "every paced request was answered"
    );
    assert!(
        stability_answers
            .iter()
            .all(|a| matches!(a, CredentialCheck::Valid))
    );

    let stats = sim.stats().await;
    let paced = &stats.runway;
    let unpaced = &stats.stability;
    assert_eq!(
        paced.request_times_ms.len(),
        30,
        "every request reached Runway once"
    );
    assert_eq!(unpaced.request_times_ms.len(), 30);
    let span_s =
        |times: &[i64]| (times.iter().max().unwrap() - times.iter().min().unwrap()) as f64 / 1000.0;
    let paced_rate = 29.0 / span_s(&paced.request_times_ms).max(0.001);
    println!(
        "pacing at {RATE}/s: 30 requests over {:.2} s = {paced_rate:.1}/s, busiest second {}; \
         unpaced: 30 requests over {:.3} s, busiest second {}",
        span_s(&paced.request_times_ms),
        paced.max_requests_in_window(1000),
        span_s(&unpaced.request_times_ms),
        unpaced.max_requests_in_window(1000),
    );
    // Evenly spaced at 100 ms, a second holds 10 (11 at its edges); 3 more for arrival
    // jitter on loopback. The unpaced burst puts all 30 into one.
    assert!(
        paced.max_requests_in_window(1000) <= RATE as usize + 3,
        "busiest second {} at a pace of {RATE}/s",
        paced.max_requests_in_window(1000)
    );
}
