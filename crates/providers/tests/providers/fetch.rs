//! Fetching input images ([`ImageFetcher`]): the private-network policy, size, time and
//! type limits, redirects.
//!
//! The strict policy (`allow_private_networks = false`) is tested here for every URL
//! that must be refused without a connection. That an https URL *redirecting* to a
//! private address is refused cannot be shown against a local server under the strict
//! policy (the server would have to be https and public); it is tested in
//! `src/fetch.rs` by running the same fetcher code with 127.0.0.2 standing in for the
//! public internet. Here, with private networks allowed, redirects to schemes the
//! policy never allows are refused on the later hop, which shows the whole policy is
//! applied again after a redirect through the public API.

use std::io::ErrorKind;
use std::net::TcpListener;
use std::time::Duration;

use byok_providers::{FetchError, FetchOptions, ImageFetcher};
use image::ImageFormat;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::support::{assert_exact_headers, encoded_image, only_request, png};

fn strict() -> ImageFetcher {
    ImageFetcher::new(FetchOptions::default()).expect("fetcher")
}

fn permissive() -> ImageFetcher {
    ImageFetcher::new(FetchOptions {
        allow_private_networks: true,
        ..FetchOptions::default()
    })
    .expect("fetcher")
}

fn permissive_with(mut options: FetchOptions) -> ImageFetcher {
    options.allow_private_networks = true;
    ImageFetcher::new(options).expect("fetcher")
}

/// A listener that records whether anything connected to it.
struct Tripwire(TcpListener);

impl Tripwire {
    fn new() -> Tripwire {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.set_nonblocking(true).expect("nonblocking");
        Tripwire(listener)
    }

    fn port(&self) -> u16 {
        self.0.local_addr().expect("addr").port()
    }

    /// A TCP connect completes in the kernel (into the accept backlog) before the
    /// client goes on, so after the call returned any attempt is visible here.
    fn assert_untouched(&self) {
        match self.0.accept() {
            Err(err) if err.kind() == ErrorKind::WouldBlock => {}
            Ok((_, peer)) => panic!("something connected from {peer}"),
            Err(err) => panic!("accept failed: {err}"),
        }
    }
}

async fn serve(response: ResponseTemplate) -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/image"))
        .respond_with(response)
        .mount(&server)
        .await;
    server
}

#[tokio::test]
async fn strict_policy_refuses_private_and_non_http_urls_without_connecting() {
    let tripwire = Tripwire::new();
    let port = tripwire.port();
    let cases = [
        (
            "file:///etc/passwd".to_owned(),
            "only http and https URLs are supported",
        ),
        (
            "data:image/png;base64,iVBORw0KGgo=".to_owned(),
            "only http and https URLs are supported",
        ),
        (
            "ftp://example.com/a.png".to_owned(),
            "only http and https URLs are supported",
        ),
        (
            "http://127.0.0.1/".to_owned(),
            "only https URLs are allowed",
        ),
        (
            format!("http://127.0.0.1:{port}/"),
            "only https URLs are allowed",
        ),
        (
            "http://169.254.169.254/latest/meta-data/".to_owned(),
            "only https URLs are allowed",
        ),
        (
            "https://169.254.169.254/latest/meta-data/".to_owned(),
            "169.254.169.254 is not a public address",
        ),
        (
            format!("https://127.0.0.1:{port}/a.png"),
            "127.0.0.1 is not a public address",
        ),
        ("https://[::1]/".to_owned(), "[::1] is not a public address"),
        (
            "https://10.0.0.7/a.png".to_owned(),
            "10.0.0.7 is not a public address",
        ),
        (
            "https://100.64.0.1/a.png".to_owned(),
            "100.64.0.1 is not a public address",
        ),
        (
            "https://[::ffff:192.168.0.1]/a.png".to_owned(),
            "is not a public address",
        ),
        // A DNS name that resolves only to loopback: refused by the resolver.
        (
            format!("https://localhost:{port}/a.png"),
            "localhost resolves only to non-public addresses",
        ),
        (
            "https://user:hunter2@example.com/a.png".to_owned(),
            "must not contain a user name or password",
        ),
    ];
    for (url, reason) in cases {
        let fetched = strict()
            .fetch(&url)
            .await
            .expect_err("fetch must be refused");
        assert!(fetched.is_refused_by_policy(), "{url}: {fetched:?}");
        assert!(fetched.to_string().contains(reason), "{url}: {fetched}");
        assert!(!fetched.is_transient(), "{url}");
        let job = fetched.to_job_error();
        assert_eq!(
            (job.code, job.class),
            (
                byok_core::ErrorCode::InvalidRequest,
                byok_core::RetryClass::Permanent
            ),
            "{url}"
        );
        assert!(!fetched.to_string().contains("hunter2"), "{fetched}");

        let prechecked = strict()
            .precheck(&url)
            .await
            .expect_err("precheck must refuse");
        assert!(prechecked.is_refused_by_policy(), "{url}: {prechecked:?}");
        assert!(
            prechecked.to_string().contains(reason),
            "{url}: {prechecked}"
        );
        tripwire.assert_untouched();
    }
}

#[tokio::test]
async fn strict_precheck_accepts_a_public_https_ip_literal_without_network() {
    // An IP literal needs no DNS; nothing is fetched at precheck.
    let url = strict()
        .precheck("https://8.8.8.8/images/a.png?sig=1")
        .await
        .expect("public https URL");
    assert_eq!(url.as_str(), "https://8.8.8.8/images/a.png?sig=1");
}

#[tokio::test]
async fn invalid_urls_are_refused_and_errors_name_only_the_host() {
    for url in ["", "not a url", "https://", "/relative/a.png"] {
        let err = permissive().precheck(url).await.expect_err("invalid");
        assert_eq!(err, FetchError::InvalidUrl, "{url:?}");
        assert!(err.is_refused_by_policy());
    }
    let long = format!("https://example.com/{}", "a".repeat(5000));
    assert_eq!(
        permissive().precheck(&long).await,
        Err(FetchError::InvalidUrl)
    );

    // The path and query of a user URL often carry a token; errors never repeat them.
    let server = serve(ResponseTemplate::new(404)).await;
    let url = format!("{}/image?token=SECRET-TOKEN", server.uri());
    let err = permissive().fetch(&url).await.expect_err("404");
    let message = err.to_string();
    assert_eq!(message, "127.0.0.1 answered HTTP 404 for the image");
    let err = strict()
        .fetch("https://10.1.2.3/private/SECRET-PATH?sig=SECRET-TOKEN")
        .await
        .expect_err("refused");
    assert!(!err.to_string().contains("SECRET"), "{err}");
}

#[tokio::test]
async fn permissive_policy_fetches_png_jpeg_and_webp_with_their_dimensions() {
    for (format, mime) in [
        (ImageFormat::Png, "image/png"),
        (ImageFormat::Jpeg, "image/jpeg"),
        (ImageFormat::WebP, "image/webp"),
    ] {
        let bytes = encoded_image(64, 48, format);
        let server = serve(ResponseTemplate::new(200).set_body_raw(bytes.clone(), mime)).await;
        let image = permissive()
            .fetch(&format!("{}/image", server.uri()))
            .await
            .unwrap_or_else(|e| panic!("{mime}: {e}"));
        assert_eq!(image.bytes, bytes, "{mime}");
        assert_eq!(image.content_type, mime);
        assert_eq!((image.width, image.height), (64, 48), "{mime}");

        // Exactly one GET, with no credentials of any kind.
        let request = only_request(&server).await;
        assert_eq!(request.method.as_str(), "GET");
        assert_exact_headers(&request, &[("accept", "image/png, image/jpeg, image/webp")]);
    }
}

#[tokio::test]
async fn the_content_type_of_the_result_comes_from_the_bytes() {
    // A server that labels a PNG as JPEG: accepted (both are allowed types), and the
    // result says what the bytes are.
    let bytes = png(10, 20);
    let server =
        serve(ResponseTemplate::new(200).set_body_raw(bytes.clone(), "image/jpeg; charset=binary"))
            .await;
    let image = permissive()
        .fetch(&format!("{}/image", server.uri()))
        .await
        .expect("fetched");
    assert_eq!(image.content_type, "image/png");
    assert_eq!((image.width, image.height), (10, 20));
}

#[tokio::test]
async fn wrong_types_and_undecodable_bytes_are_refused() {
    let png = png(32, 32);
    let gif = b"GIF89a\x01\x00\x01\x00\x80\x00\x00\x00\x00\x00\xff\xff\xff!\xf9\x04\x01\x00\x00\x00\x00,\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;".to_vec();
    let cases: Vec<(&str, ResponseTemplate, &str)> = vec![
        (
            "html label",
            ResponseTemplate::new(200).set_body_raw(png.clone(), "text/html"),
            "served as `text/html`",
        ),
        (
            "gif label",
            ResponseTemplate::new(200).set_body_raw(gif.clone(), "image/gif"),
            "served as `image/gif`",
        ),
        (
            "no label",
            ResponseTemplate::new(200).set_body_bytes(png.clone()),
            "served without a content type",
        ),
        (
            "html bytes",
            ResponseTemplate::new(200).set_body_raw("<html>hi</html>", "image/png"),
            "not PNG, JPEG or WebP",
        ),
        (
            "gif bytes",
            ResponseTemplate::new(200).set_body_raw(gif, "image/png"),
            "the bytes are image/gif",
        ),
        // A PNG cut after its header: the dimensions read, the pixels do not.
        (
            "truncated",
            ResponseTemplate::new(200).set_body_raw(png[..60].to_vec(), "image/png"),
            "does not decode",
        ),
        (
            "empty",
            ResponseTemplate::new(200).set_body_raw(Vec::new(), "image/png"),
            "not PNG, JPEG or WebP",
        ),
    ];
    for (case, response, reason) in cases {
        let server = serve(response).await;
        let err = permissive()
            .fetch(&format!("{}/image", server.uri()))
            .await
            .expect_err(case);
        assert!(
            matches!(err, FetchError::NotAnImage { .. }),
            "{case}: {err:?}"
        );
        assert!(err.to_string().contains(reason), "{case}: {err}");
        assert!(!err.is_transient(), "{case}");
        let job = err.to_job_error();
        assert_eq!(
            (job.code, job.class),
            (
                byok_core::ErrorCode::InvalidRequest,
                byok_core::RetryClass::Permanent
            )
        );
    }
}

#[tokio::test]
async fn images_over_the_size_limit_are_refused_by_content_length() {
    let bytes = png(200, 200);
    assert!(bytes.len() > 1000);
    let server = serve(ResponseTemplate::new(200).set_body_raw(bytes, "image/png")).await;
    let fetcher = permissive_with(FetchOptions {
        max_bytes: 1000,
        ..FetchOptions::default()
    });
    let err = fetcher
        .fetch(&format!("{}/image", server.uri()))
        .await
        .expect_err("too large");
    assert_eq!(
        err,
        FetchError::TooLarge {
            host: "127.0.0.1".into(),
            limit: 1000
        }
    );
    assert!(!err.is_transient());
}

#[tokio::test]
async fn images_over_the_size_limit_are_refused_by_the_streamed_count() {
    // A server that sends no Content-Length (chunked): only counting stops it.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let server = tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.expect("accept");
        let mut request = Vec::new();
        let mut buf = [0u8; 1024];
        while !request.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = socket.read(&mut buf).await.expect("read");
            assert!(n > 0, "client closed early");
            request.extend_from_slice(&buf[..n]);
        }
        let head =
            "HTTP/1.1 200 OK\r\ncontent-type: image/png\r\ntransfer-encoding: chunked\r\n\r\n";
        socket.write_all(head.as_bytes()).await.expect("write");
        let chunk = vec![0x89u8; 512];
        // 8 KiB in all, against a 2000-byte limit; the client may hang up early.
        for _ in 0..16 {
            let frame = [
                format!("{:x}\r\n", chunk.len()).into_bytes(),
                chunk.clone(),
                b"\r\n".to_vec(),
            ]
            .concat();
            if socket.write_all(&frame).await.is_err() {
                return;
            }
        }
        let _ = socket.write_all(b"0\r\n\r\n").await;
    });
    let fetcher = permissive_with(FetchOptions {
        max_bytes: 2000,
        ..FetchOptions::default()
    });
    let err = fetcher
        .fetch(&format!("http://127.0.0.1:{port}/image"))
        .await
        .expect_err("too large");
    assert!(
        matches!(err, FetchError::TooLarge { limit: 2000, .. }),
        "{err:?}"
    );
    server.await.expect("server task");
}

/// A chain `/r0 → /r1 → … → /r{n-1} → /image` on one server.
async fn redirect_chain(redirects: usize) -> MockServer {
    let server = MockServer::start().await;
    for i in 0..redirects {
        let next = if i + 1 == redirects {
            "/image".to_owned()
        } else {
            // Relative and absolute Locations alternate: both are resolved.
            if i % 2 == 0 {
                format!("r{}", i + 1)
            } else {
                format!("{}/r{}", server.uri(), i + 1)
            }
        };
        Mock::given(method("GET"))
            .and(path(format!("/r{i}")))
            .respond_with(
                ResponseTemplate::new(if i % 2 == 0 { 302 } else { 307 })
                    .insert_header("location", next.as_str()),
            )
            .mount(&server)
            .await;
    }
    Mock::given(method("GET"))
        .and(path("/image"))
        .respond_with(ResponseTemplate::new(200).set_body_raw(png(5, 5), "image/png"))
        .mount(&server)
        .await;
    server
}

#[tokio::test]
async fn redirects_are_followed_up_to_the_limit_and_no_further() {
    let server = redirect_chain(3).await;
    let image = permissive()
        .fetch(&format!("{}/r0", server.uri()))
        .await
        .expect("3 redirects are fine");
    assert_eq!((image.width, image.height), (5, 5));
    assert_eq!(server.received_requests().await.expect("recorded").len(), 4);

    let server = redirect_chain(4).await;
    let err = permissive()
        .fetch(&format!("{}/r0", server.uri()))
        .await
        .expect_err("4 redirects");
    assert_eq!(
        err,
        FetchError::Refused {
            reason: "127.0.0.1 redirected more than 3 times".into()
        }
    );
    // The fourth redirect was not followed.
    assert_eq!(server.received_requests().await.expect("recorded").len(), 4);
}

#[tokio::test]
async fn every_redirect_target_is_checked_again() {
    for (location, reason) in [
        (
            "file:///etc/passwd",
            "only http and https URLs are supported",
        ),
        (
            "ftp://example.com/a.png",
            "only http and https URLs are supported",
        ),
        (
            "http://user:pw@127.0.0.1/a.png",
            "must not contain a user name or password",
        ),
    ] {
        let server = serve(ResponseTemplate::new(301).insert_header("location", location)).await;
        let err = permissive()
            .fetch(&format!("{}/image", server.uri()))
            .await
            .expect_err(location);
        assert!(err.is_refused_by_policy(), "{location}: {err:?}");
        assert!(err.to_string().contains(reason), "{location}: {err}");
    }
    let server = serve(ResponseTemplate::new(302)).await;
    let err = permissive()
        .fetch(&format!("{}/image", server.uri()))
        .await
        .expect_err("no location");
    assert!(
        err.to_string()
            .contains("redirected to an invalid location"),
        "{err}"
    );
}

#[tokio::test]
async fn error_statuses_are_permanent_or_transient_as_they_mean() {
    for (status, transient) in [
        (404, false),
        (403, false),
        (410, false),
        (408, true),
        (429, true),
        (500, true),
        (503, true),
    ] {
        let server = serve(ResponseTemplate::new(status)).await;
        let err = permissive()
            .fetch(&format!("{}/image", server.uri()))
            .await
            .expect_err("status");
        assert_eq!(
            err,
            FetchError::Status {
                host: "127.0.0.1".into(),
                status
            }
        );
        assert_eq!(err.is_transient(), transient, "{status}");
        let job = err.to_job_error();
        let class = if transient {
            byok_core::RetryClass::Transient
        } else {
            byok_core::RetryClass::Permanent
        };
        assert_eq!(
            (job.code, job.class),
            (byok_core::ErrorCode::InvalidRequest, class),
            "{status}"
        );
    }
}

#[tokio::test]
async fn unreachable_hosts_and_slow_servers_are_transient() {
    let port = crate::support::closed_port();
    let err = permissive()
        .fetch(&format!("http://127.0.0.1:{port}/image"))
        .await
        .expect_err("closed port");
    assert_eq!(
        err,
        FetchError::Unreachable {
            host: "127.0.0.1".into(),
            reason: "could not connect".into()
        }
    );
    assert!(err.is_transient());

    let server = serve(
        ResponseTemplate::new(200)
            .set_body_raw(png(4, 4), "image/png")
            .set_delay(Duration::from_secs(5)),
    )
    .await;
    let fetcher = permissive_with(FetchOptions {
        timeout: Duration::from_millis(300),
        ..FetchOptions::default()
    });
    let err = fetcher
        .fetch(&format!("{}/image", server.uri()))
        .await
        .expect_err("slow");
    assert_eq!(
        err,
        FetchError::Timeout {
            host: "127.0.0.1".into(),
            after: Duration::from_millis(300)
        }
    );
    assert!(err.is_transient());
    let job = err.to_job_error();
    assert_eq!(
        (job.code, job.class),
        (
            byok_core::ErrorCode::InvalidRequest,
            byok_core::RetryClass::Transient
        )
    );
}

#[tokio::test]
async fn permissive_precheck_allows_loopback_http() {
    let url = permissive()
        .precheck("http://127.0.0.1:8080/a.png")
        .await
        .expect("allowed");
    assert_eq!(url.host_str(), Some("127.0.0.1"));
    let url = permissive()
        .precheck("http://localhost/a.png")
        .await
        .expect("allowed");
    assert_eq!(url.host_str(), Some("localhost"));
    // Schemes other than http(s) are refused whatever the policy.
    assert!(
        permissive()
            .precheck("file:///etc/passwd")
            .await
            .expect_err("file")
            .is_refused_by_policy()
    );
}

#[test]
fn defaults_are_as_documented() {
    let options = FetchOptions::default();
    assert!(!options.allow_private_networks);
    assert_eq!(options.max_bytes, 20 * 1024 * 1024);
    assert_eq!(options.timeout, Duration::from_secs(15));
    assert_eq!(options.max_redirects, 3);
}
