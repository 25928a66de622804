//! Limits at the edge of `/v1`, per process, with `governor`'s GCRA:
//!
//! * per token (`api.rate_limit`): every authenticated request takes one cell of its
//!   token's bucket; past the burst, 429 `rate_limited`;
//! * per client address (`api.auth_failure_limit`): every failed authentication (no
//!   token, an unknown, revoked or expired one) takes one cell of its address's bucket;
//!   past the burst the address is refused with 429 before its token is even looked up,
//!   until the bucket lets one through again. This is what keeps a token-guessing client
//!   from costing a database query per guess.
//!
//! And a time limit (`api.request_timeout`, [`time_limit`]): a `/v1` request whose
//! response has not started by then is answered 503 `timeout`.
//!
//! Every answer of a limited route carries the IETF `RateLimit-Policy` and `RateLimit`
//! fields (draft-ietf-httpapi-ratelimit-headers-10,
//! <https://datatracker.ietf.org/doc/draft-ietf-httpapi-ratelimit-headers/>); a 429 also
//! carries `Retry-After`. A GCRA of `N/s, burst B` is advertised as a quota of `q=B`
//! requests per window of `w = B / N` seconds, which admits the same burst and the same
//! long-run rate.
//!
//! Limits are per process: with several API replicas a token's effective rate is the
//! replicas' sum, which the load balancer spreads. The per-key quotas that protect the
//! user's provider account are a different thing and shared across every process (the
//! worker's sliding windows).

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock, Weak};
use std::time::{Duration, Instant};

use axum::extract::ConnectInfo;
use axum::http::{HeaderValue, Request, header};
use axum::response::{IntoResponse, Response};
use byok_config::RequestRate;
use governor::clock::{Clock, DefaultClock, QuantaInstant};
use governor::middleware::{StateInformationMiddleware, StateSnapshot};
use governor::state::keyed::HashMapStateStore;
use governor::{NotUntil, Quota, RateLimiter};
use ipnet::IpNet;
use serde_json::json;
use uuid::Uuid;

use crate::error::{ApiError, ApiErrorCode};

/// The `RateLimit-Policy` field.
const POLICY_HEADER: &str = "ratelimit-policy";
/// The `RateLimit` field.
const STATE_HEADER: &str = "ratelimit";
/// The policy name of the per-token limit.
const TOKEN_POLICY: &str = "token";
/// The policy name of the failed-authentication limit.
const AUTH_FAILURE_POLICY: &str = "auth-failures";
/// Blocked addresses kept before expired ones are swept on insert.
const BLOCKED_SWEEP_AT: usize = 10_000;
/// How often idle buckets are forgotten.
const SWEEP_EVERY: Duration = Duration::from_secs(60);

/// The edge limits' settings (`api.rate_limit`, `api.auth_failure_limit`,
/// `api.trusted_proxies`).
#[derive(Debug, Clone, Default)]
pub struct EdgeLimits {
    /// Requests per token; `None`: unlimited.
    pub per_token: Option<RequestRate>,
    /// Failed authentications per client address; `None`: unlimited.
    pub auth_failures: Option<RequestRate>,
    /// Proxies whose `X-Forwarded-For` names the client.
    pub trusted_proxies: Vec<IpNet>,
}

type KeyedLimiter<K> =
    RateLimiter<K, HashMapStateStore<K>, DefaultClock, StateInformationMiddleware>;

/// One limit: its GCRA buckets and how it is advertised.
struct Limit<K: std::hash::Hash + Eq + Clone> {
    name: &'static str,
    limiter: KeyedLimiter<K>,
    burst: u32,
    interval: Duration,
    /// `RateLimit-Policy`, formatted once.
    policy: HeaderValue,
}

impl<K: std::hash::Hash + Eq + Clone> Limit<K> {
    fn new(name: &'static str, rate: RequestRate) -> Self {
        let interval = rate.interval().max(Duration::from_nanos(1));
        let quota = Quota::with_period(interval)
            .unwrap_or_else(|| Quota::per_second(NonZeroU32::MAX))
            .allow_burst(rate.burst);
        let window = ceil_secs(interval * rate.burst.get());
        let policy = HeaderValue::from_str(&format!("\"{name}\";q={};w={window}", rate.burst))
            .expect("a policy is ASCII");
        Limit {
            name,
            limiter: RateLimiter::hashmap(quota).with_middleware::<StateInformationMiddleware>(),
            burst: rate.burst.get(),
            interval,
            policy,
        }
    }

    /// Takes one cell of `key`'s bucket.
    fn take(&self, key: &K) -> Result<StateSnapshot, NotUntil<QuantaInstant>> {
        self.limiter.check_key(key)
    }

    /// The fields after a granted request.
    fn granted(&self, snapshot: &StateSnapshot) -> RateLimitFields {
        let remaining = snapshot.remaining_burst_capacity().min(self.burst);
        let until_full = self.interval * (self.burst - remaining);
        self.fields(remaining, ceil_secs(until_full))
    }

    /// `RateLimit-Policy`, and `RateLimit` with `remaining` requests left and the bucket
    /// full again in `reset_secs`.
    fn fields(&self, remaining: u32, reset_secs: u64) -> RateLimitFields {
        RateLimitFields {
            policy: self.policy.clone(),
            state: HeaderValue::from_str(&format!(
                "\"{}\";r={remaining};t={reset_secs}",
                self.name
            ))
            .expect("a state is ASCII"),
        }
    }

    /// The 429 of a refused request that may retry after `wait`.
    fn refusal(&self, wait: Duration, message: &str) -> Response {
        let retry_after = ceil_secs(wait).max(1);
        let mut response = ApiError::new(ApiErrorCode::RateLimited, message)
            .with_details(json!({
                "policy": self.name,
                "retry_after_seconds": retry_after,
            }))
            .into_response();
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(retry_after));
        self.fields(0, retry_after).add_to(&mut response);
        response
    }
}

/// The `RateLimit-Policy` and `RateLimit` fields of one answer.
pub(crate) struct RateLimitFields {
    policy: HeaderValue,
    state: HeaderValue,
}

impl RateLimitFields {
    /// Puts both fields on `response`.
    pub(crate) fn add_to(self, response: &mut Response) {
        let headers = response.headers_mut();
        headers.insert(POLICY_HEADER, self.policy);
        headers.insert(STATE_HEADER, self.state);
    }
}

/// The limiters of one API process. Cheap to share (`Arc`).
pub(crate) struct Edge {
    per_token: Option<Limit<Uuid>>,
    auth_failures: Option<AuthFailures>,
    trusted_proxies: Vec<IpNet>,
}

/// The failed-authentication limit and the addresses it currently refuses.
struct AuthFailures {
    limit: Limit<IpAddr>,
    /// Addresses past their burst, until when. Read on every request, written only when
    /// an address runs out; `blocked_count` lets the common case (nobody blocked) skip
    /// the lock entirely.
    blocked: RwLock<HashMap<IpAddr, Instant>>,
    blocked_count: AtomicUsize,
}

impl std::fmt::Debug for Edge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Edge")
            .field("per_token", &self.per_token.as_ref().map(|l| &l.policy))
            .field(
                "auth_failures",
                &self.auth_failures.as_ref().map(|a| &a.limit.policy),
            )
            .field("trusted_proxies", &self.trusted_proxies)
            .finish()
    }
}

/// What the per-token check decided.
pub(crate) enum TokenVerdict {
    /// Go on; put this `RateLimit` state on the response (none when unlimited).
    Granted(Option<RateLimitFields>),
    /// Answer this 429.
    Refused(Response),
}

impl Edge {
    /// The limiters `limits` ask for. Starts a task (inside the current Tokio runtime)
    /// that forgets idle buckets, ending when the returned `Edge` is dropped.
    pub(crate) fn start(limits: EdgeLimits) -> Arc<Edge> {
        let edge = Arc::new(Edge {
            per_token: limits.per_token.map(|rate| Limit::new(TOKEN_POLICY, rate)),
            auth_failures: limits.auth_failures.map(|rate| AuthFailures {
                limit: Limit::new(AUTH_FAILURE_POLICY, rate),
                blocked: RwLock::new(HashMap::new()),
                blocked_count: AtomicUsize::new(0),
            }),
            trusted_proxies: limits.trusted_proxies,
        });
        if edge.per_token.is_some() || edge.auth_failures.is_some() {
            let weak: Weak<Edge> = Arc::downgrade(&edge);
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(SWEEP_EVERY);
                tick.tick().await;
                loop {
                    tick.tick().await;
                    let Some(edge) = weak.upgrade() else { return };
                    edge.sweep();
                }
            });
        }
        edge
    }

    /// Takes one request of `token`'s rate.
    pub(crate) fn check_token(&self, token: Uuid) -> TokenVerdict {
        let Some(limit) = &self.per_token else {
            return TokenVerdict::Granted(None);
        };
        match limit.take(&token) {
            Ok(snapshot) => TokenVerdict::Granted(Some(limit.granted(&snapshot))),
            Err(not_until) => {
                let wait = not_until.wait_time_from(DefaultClock::default().now());
                TokenVerdict::Refused(limit.refusal(
                    wait,
                    "this token sent more requests than api.rate_limit allows; retry after the time in Retry-After",
                ))
            }
        }
    }

    /// The 429 for `client` while it is refused for failed authentications.
    pub(crate) fn refused_client(&self, client: Option<IpAddr>) -> Option<Response> {
        let guard = self.auth_failures.as_ref()?;
        let client = client?;
        if guard.blocked_count.load(Ordering::Relaxed) == 0 {
            return None;
        }
        let until = *guard
            .blocked
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&client)?;
        let wait = until.checked_duration_since(Instant::now())?;
        Some(guard.limit.refusal(wait, TOO_MANY_FAILURES))
    }

    /// Notes a failed authentication from `client`: `Some(429)` when that was one too
    /// many, to answer instead of the 401.
    pub(crate) fn note_failure(&self, client: Option<IpAddr>) -> Option<Response> {
        let guard = self.auth_failures.as_ref()?;
        let client = client?;
        let not_until = guard.limit.take(&client).err()?;
        let wait = not_until.wait_time_from(DefaultClock::default().now());
        let mut blocked = guard
            .blocked
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let now = Instant::now();
        if blocked.len() >= BLOCKED_SWEEP_AT {
            blocked.retain(|_, until| *until > now);
        }
        blocked.insert(client, now + wait);
        guard.blocked_count.store(blocked.len(), Ordering::Relaxed);
        tracing::warn!(
            client = %client,
            retry_after_ms = wait.as_millis() as u64,
            "too many failed authentications from one address; refusing it for a while"
        );
        Some(guard.limit.refusal(wait, TOO_MANY_FAILURES))
    }

    /// The client's address: the peer, or when the peer is a trusted proxy, the
    /// right-most `X-Forwarded-For` entry that is not one (entries further left are
    /// whatever the client wrote). IPv6 clients are keyed by their /64, the smallest
    /// block one subscriber is usually given.
    pub(crate) fn client_of<B>(&self, request: &Request<B>) -> Option<IpAddr> {
        let peer = request
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(addr)| addr.ip().to_canonical())?;
        let trusted = |ip: &IpAddr| self.trusted_proxies.iter().any(|net| net.contains(ip));
        let mut client = peer;
        if trusted(&peer) {
            let forwarded = request
                .headers()
                .get_all("x-forwarded-for")
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(','))
                .map(str::trim)
                .collect::<Vec<_>>();
            for entry in forwarded.iter().rev() {
                let Ok(ip) = entry.parse::<IpAddr>() else {
                    break;
                };
                client = ip.to_canonical();
                if !trusted(&client) {
                    break;
                }
            }
        }
        Some(key_of(client))
    }

    /// Forgets buckets that are full again and blocks that ended.
    fn sweep(&self) {
        if let Some(limit) = &self.per_token {
            limit.limiter.retain_recent();
            limit.limiter.shrink_to_fit();
        }
        if let Some(guard) = &self.auth_failures {
            guard.limit.limiter.retain_recent();
            guard.limit.limiter.shrink_to_fit();
            let mut blocked = guard
                .blocked
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let now = Instant::now();
            blocked.retain(|_, until| *until > now);
            guard.blocked_count.store(blocked.len(), Ordering::Relaxed);
        }
    }
}

const TOO_MANY_FAILURES: &str =
    "too many failed authentications from this address; retry after the time in Retry-After";

/// The key an address is limited under: IPv4 as is, IPv6 by its /64.
fn key_of(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => {
            let mut segments = v6.segments();
            segments[4..].fill(0);
            IpAddr::V6(Ipv6Addr::from(segments))
        }
    }
}

/// Whole seconds, rounded up.
fn ceil_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

/// Answers 503 `timeout` when the request has no response within `limit`
/// (`api.request_timeout`). Dropping the handler's future at that point is safe by
/// construction: every write is one statement or transaction, and a job's insert is
/// handed to the batching task, which finishes it either way (hence "retry with the
/// same Idempotency-Key").
pub(crate) async fn time_limit(
    axum::extract::State(limit): axum::extract::State<Duration>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => {
            tracing::warn!(
                limit_ms = limit.as_millis() as u64,
                "request timed out before its response started"
            );
            ApiError::new(
                ApiErrorCode::Timeout,
                format!(
                    "the request took longer than {} s (api.request_timeout); a write it made may or may not have taken effect",
                    limit.as_secs_f64()
                ),
            )
            .into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rate(text: &str) -> RequestRate {
        RequestRate::parse(text).unwrap()
    }

    fn request(peer: &str, forwarded: Option<&str>) -> Request<()> {
        let mut builder = Request::builder();
        if let Some(f) = forwarded {
            builder = builder.header("x-forwarded-for", f);
        }
        let mut request = builder.body(()).unwrap();
        request
            .extensions_mut()
            .insert(ConnectInfo(peer.parse::<SocketAddr>().unwrap()));
        request
    }

    #[tokio::test]
    async fn a_token_gets_its_burst_then_429_with_the_fields() {
        let edge = Edge::start(EdgeLimits {
            per_token: Some(rate("1/min, burst 3")),
            ..EdgeLimits::default()
        });
        let token = Uuid::new_v4();
        let mut remaining = Vec::new();
        for _ in 0..3 {
            match edge.check_token(token) {
                TokenVerdict::Granted(Some(fields)) => {
                    assert_eq!(fields.policy, "\"token\";q=3;w=180");
                    remaining.push(fields.state.to_str().unwrap().to_owned());
                }
                _ => panic!("within the burst"),
            }
        }
        assert_eq!(
            remaining,
            [
                "\"token\";r=2;t=60",
                "\"token\";r=1;t=120",
                "\"token\";r=0;t=180"
            ]
        );
        let TokenVerdict::Refused(response) = edge.check_token(token) else {
            panic!("past the burst");
        };
        assert_eq!(response.status(), 429);
        let retry: u64 = response.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!((59..=60).contains(&retry), "{retry}");
        assert_eq!(
            response.headers()["ratelimit"],
            format!("\"token\";r=0;t={retry}").as_str()
        );
        // Another token is untouched.
        assert!(matches!(
            edge.check_token(Uuid::new_v4()),
            TokenVerdict::Granted(Some(_))
        ));
    }

    #[tokio::test]
    async fn an_address_is_refused_after_its_failures_and_others_are_not() {
        let edge = Edge::start(EdgeLimits {
            auth_failures: Some(rate("1/h, burst 2")),
            ..EdgeLimits::default()
        });
        let bad: IpAddr = "203.0.113.9".parse().unwrap();
        let good: IpAddr = "203.0.113.10".parse().unwrap();
        assert!(edge.refused_client(Some(bad)).is_none());
        assert!(edge.note_failure(Some(bad)).is_none());
        assert!(edge.note_failure(Some(bad)).is_none());
        let third = edge
            .note_failure(Some(bad))
            .expect("the third failure is one too many");
        assert_eq!(third.status(), 429);
        assert_eq!(
            third.headers()["ratelimit-policy"],
            "\"auth-failures\";q=2;w=7200"
        );
        let refused = edge
            .refused_client(Some(bad))
            .expect("refused before its token is read");
        assert_eq!(refused.status(), 429);
        assert!(edge.refused_client(Some(good)).is_none());
        assert!(edge.refused_client(None).is_none());
    }

    #[tokio::test]
    async fn the_client_is_the_peer_unless_the_peer_is_a_trusted_proxy() {
        let edge = Edge::start(EdgeLimits {
            trusted_proxies: vec!["10.0.0.0/8".parse().unwrap()],
            ..EdgeLimits::default()
        });
        let ip = |s: &str| Some(s.parse::<IpAddr>().unwrap());
        // An untrusted peer's X-Forwarded-For is ignored.
        assert_eq!(
            edge.client_of(&request("198.51.100.7:5000", Some("1.2.3.4"))),
            ip("198.51.100.7")
        );
        // Through a trusted proxy: the right-most untrusted entry, not what the client
        // wrote further left.
        assert_eq!(
            edge.client_of(&request(
                "10.1.2.3:5000",
                Some("6.6.6.6, 198.51.100.7, 10.9.9.9")
            )),
            ip("198.51.100.7")
        );
        assert_eq!(
            edge.client_of(&request("10.1.2.3:5000", None)),
            ip("10.1.2.3")
        );
        // IPv6 by its /64; IPv4-mapped as IPv4.
        assert_eq!(
            edge.client_of(&request("[2001:db8:1:2:3:4:5:6]:1", None)),
            ip("2001:db8:1:2::")
        );
        assert_eq!(
            edge.client_of(&request("[::ffff:192.0.2.1]:1", None)),
            ip("192.0.2.1")
        );
        // No connection info (a router called in process): no client.
        assert_eq!(edge.client_of(&Request::new(())), None);
    }
}
