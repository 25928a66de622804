//! The edge of the API: the per-token rate, the failed-authentication limit per client
//! address, the request timeout, the header-read timeout and connection cap against slow
//! clients, `/metrics` on a listener of its own, and `/readyz` reusing its connections.

use std::time::{Duration, Instant};

use byok_config::RequestRate;
use byok_core::{DEFAULT_PROJECT_ID, Scopes};
use secrecy::SecretString;
use serde_json::json;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use wiremock::matchers::method;
use wiremock::{Mock, ResponseTemplate};

use crate::{error_code, send, sqlite_api_with};

fn rate(text: &str) -> Option<RequestRate> {
    Some(RequestRate::parse(text).unwrap())
}

fn header<'a>(response: &'a reqwest::Response, name: &str) -> &'a str {
    response
        .headers()
        .get(name)
        .unwrap_or_else(|| panic!("no {name} header"))
        .to_str()
        .unwrap()
}

#[tokio::test]
async fn a_token_past_its_burst_gets_429_with_retry_after_and_the_ratelimit_fields() {
    let api = sqlite_api_with(|s| s.api.rate_limit = rate("1/min, burst 3")).await;
    for remaining in [2, 1, 0] {
        let response = api
            .req(reqwest::Method::GET, "/v1/providers")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(header(&response, "ratelimit-policy"), "\"token\";q=3;w=180");
        let state = header(&response, "ratelimit");
        assert!(
            state.starts_with(&format!("\"token\";r={remaining};t=")),
            "{state}"
        );
    }
    let response = api
        .req(reqwest::Method::GET, "/v1/providers")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 429);
    let retry_after: u64 = header(&response, "retry-after").parse().unwrap();
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    assert_eq!(header(&response, "ratelimit-policy"), "\"token\";q=3;w=180");
    assert_eq!(
        header(&response, "ratelimit"),
        format!("\"token\";r=0;t={retry_after}")
    );
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(error_code(&body), "rate_limited");
    assert_eq!(body["error"]["details"]["policy"], "token");

    // The limit is the token's: another token of the same project is served.
    let other = api.token(DEFAULT_PROJECT_ID, Scopes::producer()).await;
    let (status, _) = send(api.req_as(&other, reqwest::Method::GET, "/v1/providers")).await;
    assert_eq!(status, 200);
    // Unauthenticated routes are not limited per token.
    let (status, _) = send(api.http.get(api.url("/healthz"))).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn an_address_with_too_many_failed_authentications_is_refused_before_any_lookup() {
    let api = sqlite_api_with(|s| s.api.auth_failure_limit = rate("1/h, burst 2")).await;
    for bad in ["Bearer byok_wrong", "Basic abc"] {
        let (status, body) = send(
            api.http
                .get(api.url("/v1/providers"))
                .header("authorization", bad),
        )
        .await;
        assert_eq!((status, error_code(&body)), (401, "unauthorized"));
    }
    let response = api
        .http
        .get(api.url("/v1/providers"))
        .bearer_auth("byok_still_wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 429);
    assert_eq!(
        header(&response, "ratelimit-policy"),
        "\"auth-failures\";q=2;w=7200"
    );
    assert!(header(&response, "retry-after").parse::<u64>().unwrap() > 0);
    // From then on the address is refused, whatever it presents, until the bucket lets
    // one through again: a valid token from it waits too.
    let (status, body) = api.get("/v1/providers").await;
    assert_eq!((status, error_code(&body)), (429, "rate_limited"), "{body}");
    assert_eq!(body["error"]["details"]["policy"], "auth-failures");
}

#[tokio::test]
async fn behind_a_trusted_proxy_the_forwarded_client_is_limited_not_the_proxy() {
    let api = sqlite_api_with(|s| {
        s.api.auth_failure_limit = rate("1/h, burst 1");
        s.api.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
    })
    .await;
    let from = |client: &str| {
        api.http
            .get(api.url("/v1/providers"))
            .header("x-forwarded-for", format!("6.6.6.6, {client}"))
    };
    let (status, _) = send(from("198.51.100.1").bearer_auth("byok_wrong")).await;
    assert_eq!(status, 401);
    let (status, _) = send(from("198.51.100.1").bearer_auth("byok_wrong")).await;
    assert_eq!(status, 429);
    // Another client through the same proxy, and the same one's left-most claim, are
    // not the refused address.
    let (status, _) = send(from("198.51.100.2").bearer_auth(&api.token)).await;
    assert_eq!(status, 200);
    let (status, _) = send(
        api.http
            .get(api.url("/v1/providers"))
            .header("x-forwarded-for", "198.51.100.1, 198.51.100.3")
            .bearer_auth(&api.token),
    )
    .await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn a_request_past_the_request_timeout_gets_503_timeout() {
    let api = sqlite_api_with(|s| s.api.request_timeout = Duration::from_millis(300)).await;
    // Runway's key check takes longer than the request may.
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(200).set_delay(Duration::from_secs(3)))
        .mount(&api.runway)
        .await;
    let user = uuid::Uuid::new_v4();
    let (status, body) = api
        .put_json(
            &format!("/v1/users/{user}/providers/runway/credentials"),
            &json!({ "credentials": { "api_key": "key_slow" }, "validate": true }),
        )
        .await;
    assert_eq!((status, error_code(&body)), (503, "timeout"), "{body}");
    // The API goes on serving.
    let (status, _) = api.get("/v1/providers").await;
    assert_eq!(status, 200);
}

/// Opens a connection that sends the start of a request and then one header byte every
/// `every`, never finishing; returns when the server closes it, with the time it did.
/// With `served`, the connection first gets one whole request answered (so the server
/// has accepted it and holds its slot) and says so on `served` before it dribbles.
async fn dribble(
    address: std::net::SocketAddr,
    every: Duration,
    served: Option<tokio::sync::oneshot::Sender<()>>,
) -> Instant {
    let mut stream = TcpStream::connect(address).await.unwrap();
    let mut buf = [0u8; 256];
    if let Some(served) = served {
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut answer = Vec::new();
        while !answer.ends_with(b"\"ok\"}") {
            let n = stream.read(&mut buf).await.unwrap();
            assert!(n > 0, "closed before answering");
            answer.extend_from_slice(&buf[..n]);
        }
        let _ = served.send(());
    }
    let _ = stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        .await;
    loop {
        tokio::select! {
            read = stream.read(&mut buf) => match read {
                // Closed (or reset) by the server; a 408 may come first.
                Ok(0) | Err(_) => return Instant::now(),
                Ok(_) => continue,
            },
            // The slowness is what is under test: a byte every `every`, as a slowloris
            // client sends them, so this sleep is the client's pace, not a wait for an
            // event.
            () = tokio::time::sleep(every) => {
                if stream.write_all(b"a").await.is_err() {
                    return Instant::now();
                }
            }
        }
    }
}

#[tokio::test]
async fn slow_clients_are_cut_at_the_header_timeout_while_others_are_served() {
    const SLOW: usize = 500;
    let header_timeout = Duration::from_secs(2);
    let api = sqlite_api_with(|s| s.api.header_read_timeout = header_timeout).await;
    let address: std::net::SocketAddr = api.base.trim_start_matches("http://").parse().unwrap();

    let started = Instant::now();
    let slow: Vec<_> = (0..SLOW)
        .map(|_| tokio::spawn(dribble(address, Duration::from_millis(200), None)))
        .collect();
    // While they dribble, a normal request is answered.
    let (status, _) = api.get("/v1/providers").await;
    assert_eq!(status, 200);
    let answered_after = started.elapsed();

    let mut closed_after = Vec::with_capacity(SLOW);
    for task in slow {
        closed_after.push(task.await.unwrap() - started);
    }
    closed_after.sort();
    println!(
        "{SLOW} slow clients: a normal request answered after {:.0} ms; the server cut them \
         after {:.2} s (first) to {:.2} s (last), header timeout {:.0} s",
        answered_after.as_secs_f64() * 1000.0,
        closed_after[0].as_secs_f64(),
        closed_after[SLOW - 1].as_secs_f64(),
        header_timeout.as_secs_f64()
    );
    // Every slow client was cut by the server (a client that is never cut never returns
    // and the test hangs rather than passes), and not before the timeout.
    assert!(closed_after[0] >= header_timeout, "{:?}", closed_after[0]);
}

#[tokio::test]
async fn past_the_connection_cap_a_client_waits_until_a_slot_frees() {
    let api = sqlite_api_with(|s| {
        s.api.max_connections = 4;
        s.api.header_read_timeout = Duration::from_secs(1);
    })
    .await;
    let address: std::net::SocketAddr = api.base.trim_start_matches("http://").parse().unwrap();
    let (slow, served): (Vec<_>, Vec<_>) = (0..4)
        .map(|_| {
            let (tx, rx) = tokio::sync::oneshot::channel();
            let task = tokio::spawn(dribble(address, Duration::from_millis(100), Some(tx)));
            (task, rx)
        })
        .unzip();
    // The four hold every slot (each was served once) before the fifth connects.
    for rx in served {
        rx.await.expect("each slow client was served once");
    }
    let (status, _) = send(api.http.get(api.url("/healthz"))).await;
    let answered = Instant::now();
    assert_eq!(status, 200);
    let first_cut = futures::future::join_all(slow)
        .await
        .into_iter()
        .map(Result::unwrap)
        .min()
        .unwrap();
    assert!(
        answered >= first_cut,
        "the fifth connection was served only once one of the four was cut"
    );
}

#[tokio::test]
async fn metrics_can_move_to_a_listener_of_their_own() {
    let port = byok_testing::free_port();
    let metrics = format!("127.0.0.1:{port}");
    let api = sqlite_api_with(|s| s.api.metrics_listen = Some(metrics.parse().unwrap())).await;
    let (status, _) = send(api.http.get(api.url("/metrics"))).await;
    assert_eq!(status, 404, "not on api.listen any more");
    let response = api
        .http
        .get(format!("http://{metrics}/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.text().await.unwrap().contains("byok_"));
}

#[tokio::test]
async fn readiness_reuses_its_connections() {
    // A Redis of the test's own, so its connection count is this API's alone.
    let Some(redis) = byok_testing::spawn_redis(&[]) else {
        return;
    };
    let url = redis.url.clone();
    let api = sqlite_api_with(|s| s.queue.url = SecretString::from(url)).await;
    let client = redis::Client::open(redis.url.as_str()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let received = async |conn: &mut redis::aio::MultiplexedConnection| -> u64 {
        let info: String = redis::cmd("INFO")
            .arg("stats")
            .query_async(conn)
            .await
            .unwrap();
        info.lines()
            .find_map(|l| l.strip_prefix("total_connections_received:"))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    };
    let (status, _) = send(api.http.get(api.url("/readyz"))).await;
    assert_eq!(status, 200);
    let before = received(&mut conn).await;
    for _ in 0..50 {
        let (status, _) = send(api.http.get(api.url("/readyz"))).await;
        assert_eq!(status, 200);
    }
    let after = received(&mut conn).await;
    assert_eq!(
        after,
        before,
        "50 probes opened {} connections",
        after - before
    );
}

/// The dashboard's sign-in form is no way around the guard: its wrong tokens count as failed
/// authentications of the address, and a refused address gets 429 there and on `/v1`.
#[tokio::test]
async fn wrong_tokens_on_the_dashboard_sign_in_count_as_failed_authentications() {
    let api = sqlite_api_with(|s| s.api.auth_failure_limit = rate("1/h, burst 2")).await;
    let sign_in = |token: &'static str| {
        api.http
            .post(api.url("/dashboard/sign-in"))
            .form(&[("token", token)])
            .send()
    };
    for _ in 0..2 {
        assert_eq!(sign_in("byok_wrong").await.unwrap().status(), 401);
    }
    let refused = sign_in("byok_still_wrong").await.unwrap();
    assert_eq!(refused.status(), 429);
    assert!(header(&refused, "retry-after").parse::<u64>().unwrap() > 0);
    let (status, body) = api.get("/v1/providers").await;
    assert_eq!((status, error_code(&body)), (429, "rate_limited"), "{body}");
    // Not even a valid token signs in from the refused address.
    let valid = api
        .http
        .post(api.url("/dashboard/sign-in"))
        .form(&[("token", api.token.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(valid.status(), 429);
}
