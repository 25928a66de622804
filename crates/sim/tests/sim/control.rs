//! `/_sim`: stats, knobs, reset; the listener and public URL.

use std::time::Duration;

use byok_sim::{SimConfig, Simulator, Stats};
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

use crate::helpers::{client, fast, png_data_uri, start, start_with};

async fn runway_submit(sim: &byok_sim::RunningSim, key: &str) -> String {
    let response = client()
        .post(format!("{}/v1/image_to_video", sim.runway_url()))
        .bearer_auth(key)
        .header("X-Runway-Version", "2024-11-06")
        .json(&json!({"model": "gen4_turbo", "promptImage": png_data_uri(), "ratio": "960:960"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    body["id"].as_str().unwrap().to_owned()
}

async fn runway_poll(sim: &byok_sim::RunningSim, key: &str, id: &str) -> Value {
    client()
        .get(format!("{}/v1/tasks/{id}", sim.runway_url()))
        .bearer_auth(key)
        .header("X-Runway-Version", "2024-11-06")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// The key id computed here, independently of the simulator.
fn key_id(key: &str) -> String {
    Sha256::digest(key.as_bytes())
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[tokio::test]
async fn stats_count_submits_polls_and_their_times_per_key() {
    let sim = start(fast()).await;
    let (a, b) = ("sim_stats_key_a_secret", "sim_stats_key_b_secret");
    let before = sim.stats().await.now_ms;
    let first = runway_submit(&sim, a).await;
    let second = runway_submit(&sim, a).await;
    runway_submit(&sim, b).await;
    runway_poll(&sim, a, &first).await;
    runway_poll(&sim, a, &first).await;
    let after = sim.stats().await.now_ms;

    let response = client()
        .get(format!("{}/_sim/stats", sim.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let text = response.text().await.unwrap();
    assert!(!text.contains(a) && !text.contains(b), "keys never appear");
    let stats: Stats = serde_json::from_str(&text).unwrap();
    assert_eq!(stats.runway.keys.len(), 2);
    let ka = &stats.runway.keys[&key_id(a)];
    assert_eq!(byok_sim::key_id(a), key_id(a));
    assert_eq!(
        (ka.counters.submits, ka.counters.accepted, ka.counters.polls),
        (2, 2, 2)
    );
    assert_eq!(ka.submit_times_ms.len(), 2);
    assert!(
        ka.submit_times_ms
            .iter()
            .all(|t| (before..=after).contains(t))
    );
    assert!(ka.submit_times_ms.windows(2).all(|w| w[0] <= w[1]));
    assert_eq!(ka.max_submits_in_window(60_000), 2);
    // Each accepted submit is kept with the task it created (these had no prompt).
    let accepted: Vec<(&str, Option<&str>)> = ka
        .accepted_submits
        .iter()
        .map(|s| (s.job_id.as_str(), s.prompt.as_deref()))
        .collect();
    assert_eq!(accepted, [(first.as_str(), None), (second.as_str(), None)]);
    assert_eq!(
        ka.accepted_submits
            .iter()
            .map(|s| s.at_ms)
            .collect::<Vec<_>>(),
        ka.submit_times_ms
    );
    assert_eq!(stats.runway.keys[&key_id(b)].counters.submits, 1);
    assert_eq!(stats.runway.totals.submits, 3);
    assert_eq!(stats.totals.polls, 2);
    assert_eq!(stats.stability, byok_sim::ProviderStats::default());

    // The JSON names the fields the README documents.
    let raw: Value = serde_json::from_str(&text).unwrap();
    let key = &raw["runway"]["keys"][key_id(a)];
    for field in [
        "submits",
        "accepted",
        "rejected",
        "throttled",
        "polls",
        "cancels",
        "unauthorized",
        "tokens",
        "submit_times_ms",
        "accepted_submits",
    ] {
        assert!(!key[field].is_null(), "{field} in {key}");
    }
}

#[tokio::test]
async fn the_knobs_can_be_read_and_changed_at_run_time() {
    let sim = start(fast()).await;
    let url = format!("{}/_sim/config", sim.base_url());
    let config: Value = client()
        .get(&url)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(config["render_time_ms"], 0);
    assert_eq!(config["token_lifetime_secs"], 3599);
    assert_eq!(config["moderation_trigger"], "sim:moderate");

    let changed = client()
        .put(&url)
        .json(&json!({"failure_rate": 1.0, "retry_after_ms": 500}))
        .send()
        .await
        .unwrap();
    assert_eq!(changed.status(), 200);
    let body: Value = changed.json().await.unwrap();
    assert_eq!(body["failure_rate"], 1.0);
    assert_eq!(body["render_time_ms"], 0, "other knobs unchanged");
    assert_eq!(sim.config().retry_after, Duration::from_millis(500));
    let id = runway_submit(&sim, "sim_knobs").await;
    assert_eq!(
        runway_poll(&sim, "sim_knobs", &id).await["status"],
        "FAILED"
    );

    for bad in [
        json!({"failure_rate": 1.5}),
        json!({"no_such_knob": 1}),
        json!({"render_time_ms": "fast"}),
        json!([1]),
    ] {
        let response = client().put(&url).json(&bad).send().await.unwrap();
        assert_eq!(response.status(), 400, "{bad}");
        let body: Value = response.json().await.unwrap();
        assert!(body["error"].is_string());
    }
    assert!((sim.config().failure_rate - 1.0).abs() < f64::EPSILON);
    assert!(
        sim.set_config(SimConfig {
            throttle_rate: -0.1,
            ..SimConfig::default()
        })
        .is_err()
    );
}

#[tokio::test]
async fn reset_forgets_tasks_and_stats() {
    let sim = start(fast()).await;
    let id = runway_submit(&sim, "sim_reset").await;
    let reset = client()
        .post(format!("{}/_sim/reset", sim.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(reset.status(), 204);
    assert_eq!(sim.stats().await.totals, byok_sim::Counters::default());
    let gone = client()
        .get(format!("{}/v1/tasks/{id}", sim.runway_url()))
        .bearer_auth("sim_reset")
        .header("X-Runway-Version", "2024-11-06")
        .send()
        .await
        .unwrap();
    assert_eq!(gone.status(), 404);
}

#[tokio::test]
async fn unknown_routes_are_404() {
    let sim = start(fast()).await;
    for path in [
        "/",
        "/nothing",
        "/_sim/nothing",
        "/stability/v2beta/nothing",
        "/vertex/v1/x",
    ] {
        let response = client()
            .get(format!("{}{path}", sim.base_url()))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 404, "{path}");
    }
}

#[tokio::test]
async fn the_public_url_is_what_output_urls_and_accounts_use() {
    let sim = start_with(Simulator::new(fast()).public_url("http://sim.example:8443/")).await;
    assert_eq!(sim.base_url(), "http://sim.example:8443");
    assert_eq!(sim.runway_url(), "http://sim.example:8443/runway");
    let account = sim.new_service_account("proj-url").unwrap();
    assert_eq!(account["token_uri"], "http://sim.example:8443/oauth2/token");
    // Requests still go to the listening address.
    let id = {
        let response = client()
            .post(format!(
                "http://{}/runway/v1/image_to_video",
                sim.local_addr()
            ))
            .bearer_auth("sim_url")
            .header("X-Runway-Version", "2024-11-06")
            .json(
                &json!({"model": "gen4_turbo", "promptImage": png_data_uri(), "ratio": "960:960"}),
            )
            .send()
            .await
            .unwrap();
        let body: Value = response.json().await.unwrap();
        body["id"].as_str().unwrap().to_owned()
    };
    let task: Value = client()
        .get(format!("http://{}/runway/v1/tasks/{id}", sim.local_addr()))
        .bearer_auth("sim_url")
        .header("X-Runway-Version", "2024-11-06")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        task["output"][0],
        format!("http://sim.example:8443/files/{id}.mp4")
    );
}

#[tokio::test]
async fn shutdown_stops_serving() {
    let sim = start(fast()).await;
    let url = format!("{}/_sim/stats", sim.base_url());
    assert_eq!(client().get(&url).send().await.unwrap().status(), 200);
    sim.shutdown().await;
    // A new connection is refused once the listener is closed.
    let fresh = reqwest::Client::new();
    assert!(fresh.get(&url).send().await.is_err());
}

#[tokio::test]
async fn dropping_the_handle_stops_serving() {
    let sim = start(fast()).await;
    let addr = sim.local_addr();
    drop(sim);
    // The server notices the drop on its own task: wait for it, bounded.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while tokio::net::TcpStream::connect(addr).await.is_ok() {
        assert!(
            std::time::Instant::now() < deadline,
            "still accepting after drop"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn many_jobs_in_parallel_are_all_accounted_for() {
    let sim = start(fast()).await;
    let mut tasks = tokio::task::JoinSet::new();
    let http = client();
    for i in 0..200 {
        let url = sim.runway_url();
        let http = http.clone();
        tasks.spawn(async move {
            let key = format!("sim_par_{}", i % 10);
            let response = http
                .post(format!("{url}/v1/text_to_video"))
                .bearer_auth(&key)
                .header("X-Runway-Version", "2024-11-06")
                .json(&json!({"model": "veo3.1_fast", "promptText": "x", "ratio": "1280:720"}))
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 200);
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap();
    }
    let stats = sim.stats().await;
    assert_eq!(stats.runway.totals.accepted, 200);
    assert_eq!(stats.runway.keys.len(), 10);
    assert!(stats.runway.keys.values().all(|k| k.counters.submits == 20));
}
