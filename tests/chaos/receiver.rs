//! A webhook receiver in the test process: it verifies each delivery's Standard Webhooks
//! signature with the endpoint's secret (`byok_client::verify_webhook`), records it and
//! answers 204; a delivery that does not verify is counted and answered 400.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use byok_client::SigningSecret;
use uuid::Uuid;

/// One verified delivery.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// The `webhook-id`: the event's id, the same on every attempt.
    pub id: String,
    pub event_type: String,
    /// The job of a `job.*` event.
    pub job: Option<Uuid>,
}

#[derive(Debug, Default)]
struct Shared {
    secret: OnceLock<SigningSecret>,
    seen: Mutex<Vec<Delivery>>,
    refused: AtomicUsize,
    /// Signalled on every verified delivery (a permit is kept when nobody waits).
    arrived: tokio::sync::Notify,
}

/// The running receiver; stopped when dropped.
#[derive(Debug)]
pub struct Receiver {
    /// Where deliveries go.
    pub url: String,
    shared: Arc<Shared>,
    server: tokio::task::JoinHandle<()>,
}

impl Receiver {
    pub async fn start() -> Receiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a port for the receiver");
        let url = format!(
            "http://{}/hooks",
            listener.local_addr().expect("its address")
        );
        let shared = Arc::new(Shared::default());
        let router = Router::new()
            .route("/hooks", post(hook))
            .with_state(Arc::clone(&shared));
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        Receiver {
            url,
            shared,
            server,
        }
    }

    /// The endpoint's secret, as `POST /v1/webhooks` answered it.
    pub fn set_secret(&self, secret: &str) {
        let secret = SigningSecret::parse(secret).expect("a whsec_ secret");
        assert!(self.shared.secret.set(secret).is_ok(), "one secret");
    }

    /// Every verified delivery so far, in arrival order.
    pub fn deliveries(&self) -> Vec<Delivery> {
        self.shared
            .seen
            .lock()
            .expect("the receiver's lock")
            .clone()
    }

    /// Waits for the next verified delivery (or one that came since the last wait), at most
    /// `at_most`.
    pub async fn next_delivery(&self, at_most: std::time::Duration) {
        let _ = tokio::time::timeout(at_most, self.shared.arrived.notified()).await;
    }

    /// Deliveries that did not verify.
    pub fn refused(&self) -> usize {
        self.shared.refused.load(Ordering::Relaxed)
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn hook(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let verified = shared.secret.get().ok_or(()).and_then(|secret| {
        byok_client::verify_webhook(std::slice::from_ref(secret), &headers, &body).map_err(|_| ())
    });
    let Ok(event) = verified else {
        shared.refused.fetch_add(1, Ordering::Relaxed);
        return StatusCode::BAD_REQUEST;
    };
    let job = event.data["id"].as_str().and_then(|id| id.parse().ok());
    shared
        .seen
        .lock()
        .expect("the receiver's lock")
        .push(Delivery {
            id: event.id,
            event_type: event.event_type,
            job,
        });
    shared.arrived.notify_one();
    StatusCode::NO_CONTENT
}
