//! Shared test helpers: registries pointed at a mock server, RSA keys and service-account
//! JSON, and exact header assertions.

use std::net::TcpListener;
use std::sync::LazyLock;
use std::time::Duration;

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rsa::{KeyPair, KeySize};
use aws_lc_rs::signature::KeyPair as _;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use byok_providers::{ProviderId, Registry, RegistryOptions};
use serde_json::{Value, json};

/// A Runway-shaped key (`key_` + 128 hex) ending in `9f2c`.
pub const RUNWAY_KEY: &str = "key_0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789ab9f2c";
/// A Stability-shaped key ending in `9f2c`.
pub const STABILITY_KEY: &str = "sk-QWERTYuiopASDFGHjklZXCVBnm0123456789abcdefgh9f2c";
/// The service account of the Veo tests.
pub const CLIENT_EMAIL: &str = "renderer@example-project.iam.gserviceaccount.com";
pub const PRIVATE_KEY_ID: &str = "1c2b3a4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b";
pub const PROJECT_ID: &str = "example-project";

/// Registry options with every base URL at `base_url`, and `{base_url}/token` (the mock
/// token endpoint of these tests) accepted as a service account's `token_uri`.
pub fn options(base_url: &str, allow_private_networks: bool, timeout: Duration) -> RegistryOptions {
    let mut options = RegistryOptions::defaults();
    for id in ProviderId::ALL {
        options.provider_mut(id).base_url = base_url.to_owned();
    }
    options.allow_private_networks = allow_private_networks;
    options.request_timeout = timeout;
    options.token_uri_allowlist = format!("{base_url}/token").parse().into_iter().collect();
    options
}

/// A registry talking to `base_url`, private networks allowed (the mock is on loopback),
/// and service accounts whose `token_uri` is `{base_url}/token` accepted.
pub fn registry(base_url: &str) -> Registry {
    Registry::new(&options(base_url, true, Duration::from_secs(10))).expect("registry")
}

/// [`registry`] accepting exactly `token_uris` besides Google's.
pub fn registry_allowing(base_url: &str, token_uris: &[&str]) -> Registry {
    let mut options = options(base_url, true, Duration::from_secs(10));
    options.token_uri_allowlist = token_uris.iter().map(|u| u.parse().unwrap()).collect();
    Registry::new(&options).expect("registry")
}

/// A registry with the production network policy (private networks refused).
pub fn strict_registry() -> Registry {
    strict_registry_allowing(&[])
}

/// [`strict_registry`] accepting `token_uris` besides Google's.
pub fn strict_registry_allowing(token_uris: &[&str]) -> Registry {
    let mut options = options("https://unused.invalid", false, Duration::from_secs(5));
    options.token_uri_allowlist = token_uris.iter().map(|u| u.parse().unwrap()).collect();
    Registry::new(&options).expect("registry")
}

/// A port on 127.0.0.1 with nothing listening.
pub fn closed_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").port()
}

/// A fresh RSA key and its PKCS#8 PEM.
pub struct TestKey {
    pub pair: KeyPair,
    pub pem: String,
}

impl TestKey {
    pub fn generate() -> TestKey {
        let pair = KeyPair::generate(KeySize::Rsa2048).expect("generate RSA key");
        let der = pair.as_der().expect("PKCS#8");
        let pem = pem(der.as_ref(), "PRIVATE KEY");
        TestKey { pair, pem }
    }

    /// One key shared by tests that need a key but not a particular one (RSA key
    /// generation is slow in debug builds).
    pub fn shared() -> &'static TestKey {
        static SHARED: LazyLock<TestKey> = LazyLock::new(TestKey::generate);
        &SHARED
    }

    /// The public key as PKCS#1 `RSAPublicKey` DER, what `UnparsedPublicKey` expects.
    pub fn public_der(&self) -> Vec<u8> {
        self.pair.public_key().as_ref().to_vec()
    }

    /// The longest base64 line of the PEM: a piece of the secret for leak checks.
    pub fn pem_line(&self) -> &str {
        self.pem.lines().nth(3).expect("PEM has lines")
    }
}

/// PEM armour: base64 in 64-character lines.
pub fn pem(der: &[u8], label: &str) -> String {
    let b64 = STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// A complete Google service-account key file, as the Cloud console writes it.
pub fn service_account(key: &TestKey, kid: Option<&str>, token_uri: &str) -> Value {
    let mut sa = json!({
        "type": "service_account",
        "project_id": PROJECT_ID,
        "private_key": key.pem,
        "client_email": CLIENT_EMAIL,
        "client_id": "102030405060708090100",
        "auth_uri": "https://accounts.google.com/o/oauth2/auth",
        "token_uri": token_uri,
        "auth_provider_x509_cert_url": "https://www.googleapis.com/oauth2/v1/certs",
        "client_x509_cert_url": "https://www.googleapis.com/robot/v1/metadata/x509/renderer%40example-project.iam.gserviceaccount.com",
        "universe_domain": "googleapis.com",
    });
    if let Some(kid) = kid {
        sa["private_key_id"] = kid.into();
    }
    sa
}

/// Asserts that `request` carries exactly `expected` (name, value) headers plus `host` and
/// a `byok/…` `user-agent`, and nothing else.
pub fn assert_exact_headers(request: &wiremock::Request, expected: &[(&str, &str)]) {
    for (name, value) in expected {
        let got = request
            .headers
            .get(*name)
            .map(|v| v.to_str().unwrap_or("<non-ascii>"));
        assert_eq!(got, Some(*value), "header {name}");
        assert_eq!(
            request.headers.get_all(*name).iter().count(),
            1,
            "header {name} repeated"
        );
    }
    let user_agent = request
        .headers
        .get("user-agent")
        .and_then(|v| v.to_str().ok());
    assert!(
        user_agent.is_some_and(|ua| ua.starts_with("byok/")),
        "user-agent {user_agent:?}"
    );
    for name in request.headers.keys() {
        let name = name.as_str();
        assert!(
            name == "host"
                || name == "user-agent"
                || expected.iter().any(|(e, _)| e.eq_ignore_ascii_case(name)),
            "unexpected header {name}: {:?}",
            request.headers.get(name)
        );
    }
}

/// The one request the mock server received.
pub async fn only_request(server: &wiremock::MockServer) -> wiremock::Request {
    let mut requests = server.received_requests().await.expect("recording is on");
    assert_eq!(requests.len(), 1, "expected exactly one request");
    requests.remove(0)
}

/// Answers that must never give a verdict on a key (Runway and Stability): transient
/// statuses, statuses about our request rather than the key, redirects (not followed)
/// and 200s that are not what the key check returns.
pub fn no_verdict_answers() -> Vec<(&'static str, wiremock::ResponseTemplate)> {
    use wiremock::ResponseTemplate;
    let huge = format!(
        "{{\"credits\": 1, \"pad\": \"{}\"}}",
        "x".repeat(100 * 1024)
    );
    vec![
        (
            "500 json",
            ResponseTemplate::new(500).set_body_json(json!({"error": "Internal"})),
        ),
        ("502 empty", ResponseTemplate::new(502)),
        (
            "503 html",
            ResponseTemplate::new(503).set_body_string("<html>down</html>"),
        ),
        (
            "429",
            ResponseTemplate::new(429).set_body_json(json!({"error": "Too many requests"})),
        ),
        (
            "400",
            ResponseTemplate::new(400).set_body_json(json!({"error": "Invalid version"})),
        ),
        ("404", ResponseTemplate::new(404)),
        (
            "302 redirect",
            ResponseTemplate::new(302).insert_header("location", "https://elsewhere.invalid/"),
        ),
        (
            "200 not json",
            ResponseTemplate::new(200).set_body_string("<html>hello</html>"),
        ),
        (
            "200 array",
            ResponseTemplate::new(200).set_body_json(json!([1, 2])),
        ),
        (
            "200 string",
            ResponseTemplate::new(200).set_body_json(json!("ok")),
        ),
        (
            "200 over 64 KiB",
            ResponseTemplate::new(200).set_body_string(huge),
        ),
    ]
}

// ---------------------------------------------------------------------------------------
// Generation half: requests, images and multipart bodies.
// ---------------------------------------------------------------------------------------

/// A neutral request (`POST /v1/jobs` body) for `provider`, with `fields` merged in.
pub fn generation_request(provider: &str, fields: Value) -> byok_providers::GenerationRequest {
    let mut body = json!({
        "user_id": "0190f4e2-7c1a-7d3e-9a4b-5c6d7e8f9a0b",
        "provider": provider,
    });
    let Value::Object(fields) = fields else {
        panic!("fields must be an object")
    };
    for (k, v) in fields {
        body[k] = v;
    }
    serde_json::from_value(body).expect("valid request JSON")
}

/// An encoded image of `width` x `height` in `format`, with a gradient so that it is
/// not trivially compressible to nothing.
pub fn encoded_image(width: u32, height: u32, format: image::ImageFormat) -> Vec<u8> {
    let image = image::RgbImage::from_fn(width, height, |x, y| {
        image::Rgb([(x % 256) as u8, (y % 256) as u8, ((x + y) % 256) as u8])
    });
    let mut out = std::io::Cursor::new(Vec::new());
    image::DynamicImage::ImageRgb8(image)
        .write_to(&mut out, format)
        .expect("encode test image");
    out.into_inner()
}

/// A PNG of `width` x `height`.
pub fn png(width: u32, height: u32) -> Vec<u8> {
    encoded_image(width, height, image::ImageFormat::Png)
}

/// An [`byok_providers::InputImage`] holding a PNG of `width` x `height`.
pub fn input_png(width: u32, height: u32) -> byok_providers::InputImage {
    byok_providers::InputImage {
        bytes: png(width, height),
        content_type: "image/png".to_owned(),
        width,
        height,
    }
}

/// The first bytes of an MP4 file (an `ftyp` box) followed by `len` filler bytes.
pub fn fake_mp4(len: usize) -> Vec<u8> {
    let mut bytes = vec![0, 0, 0, 0x18];
    bytes.extend_from_slice(b"ftypisom\0\0\x02\0isomiso2");
    bytes.extend((0..len).map(|i| (i * 7 % 251) as u8));
    bytes
}

/// One part of a `multipart/form-data` body.
#[derive(Debug)]
pub struct FormPart {
    pub name: String,
    pub filename: Option<String>,
    pub content_type: Option<String>,
    pub data: Vec<u8>,
}

/// Parses a `multipart/form-data` body (RFC 7578) as the test's independent reading of
/// what was sent: the boundary from the content type, then every part's
/// `Content-Disposition` name and filename, `Content-Type` and bytes.
pub fn parse_multipart(content_type: &str, body: &[u8]) -> Vec<FormPart> {
    let boundary = content_type
        .split(';')
        .map(str::trim)
        .find_map(|p| p.strip_prefix("boundary="))
        .expect("boundary parameter")
        .trim_matches('"');
    assert!(
        content_type.starts_with("multipart/form-data;"),
        "content type {content_type}"
    );
    let delimiter = format!("--{boundary}").into_bytes();
    let find = |haystack: &[u8], needle: &[u8], from: usize| {
        haystack[from..]
            .windows(needle.len())
            .position(|w| w == needle)
            .map(|p| p + from)
    };
    let mut parts = Vec::new();
    let mut at = find(body, &delimiter, 0).expect("first delimiter");
    loop {
        let after = at + delimiter.len();
        if body[after..].starts_with(b"--") {
            break; // the closing delimiter
        }
        assert!(
            body[after..].starts_with(b"\r\n"),
            "CRLF after the delimiter"
        );
        let headers_start = after + 2;
        let headers_end = find(body, b"\r\n\r\n", headers_start).expect("end of part headers");
        let headers =
            std::str::from_utf8(&body[headers_start..headers_end]).expect("ASCII headers");
        let mut next_delimiter = delimiter.clone();
        next_delimiter.splice(0..0, *b"\r\n");
        let data_end = find(body, &next_delimiter, headers_end + 4).expect("next delimiter");
        let mut part = FormPart {
            name: String::new(),
            filename: None,
            content_type: None,
            data: body[headers_end + 4..data_end].to_vec(),
        };
        for line in headers.split("\r\n") {
            let (name, value) = line.split_once(':').expect("header line");
            match name.trim().to_ascii_lowercase().as_str() {
                "content-disposition" => {
                    assert!(value.trim().starts_with("form-data"), "{value}");
                    for param in value.split(';').skip(1) {
                        let (k, v) = param.trim().split_once('=').expect("parameter");
                        let v = v.trim_matches('"').to_owned();
                        match k {
                            "name" => part.name = v,
                            "filename" => part.filename = Some(v),
                            other => panic!("unexpected disposition parameter {other}"),
                        }
                    }
                }
                "content-type" => part.content_type = Some(value.trim().to_owned()),
                other => panic!("unexpected part header {other}"),
            }
        }
        parts.push(part);
        at = data_end + 2;
    }
    parts
}

/// Asserts the retry class and code of a job error in one line of a table.
pub fn assert_class(
    err: &byok_providers::JobError,
    code: byok_core::ErrorCode,
    class: byok_core::RetryClass,
    case: &str,
) {
    assert_eq!((err.code, err.class), (code, class), "{case}: {err}");
}

// ---------------------------------------------------------------------------------------
// A provider that hangs up: the submit arrives whole, the answer never leaves.
// ---------------------------------------------------------------------------------------

/// One request as [`HangUpServer`] read it off the wire.
#[derive(Debug, Clone)]
pub struct RawRequest {
    pub method: String,
    pub path: String,
    /// Header names in lower case.
    pub headers: Vec<(String, String)>,
    /// The body, de-chunked when it was sent chunked.
    pub body: Vec<u8>,
}

impl RawRequest {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// An HTTP/1.1 server on 127.0.0.1 that reads each request completely (head and the whole
/// body, by `Content-Length` or chunked), records it, and then closes the connection
/// without writing a byte: the provider received the submit and its answer was lost.
/// wiremock cannot do this (it always answers), hence a bare TCP listener.
pub struct HangUpServer {
    pub base_url: String,
    requests: std::sync::Arc<std::sync::Mutex<Vec<RawRequest>>>,
    task: tokio::task::JoinHandle<()>,
}

impl HangUpServer {
    pub async fn start() -> HangUpServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let base_url = format!("http://{}", listener.local_addr().expect("addr"));
        let requests = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let recorded = std::sync::Arc::clone(&requests);
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let recorded = std::sync::Arc::clone(&recorded);
                tokio::spawn(async move {
                    if let Some(request) = read_request(stream).await {
                        recorded.lock().expect("not poisoned").push(request);
                    }
                    // `stream` was dropped inside read_request after the whole request
                    // was read: the client sees the connection close, no answer.
                });
            }
        });
        HangUpServer {
            base_url,
            requests,
            task,
        }
    }

    /// Every request read so far, in arrival order.
    pub fn requests(&self) -> Vec<RawRequest> {
        self.requests.lock().expect("not poisoned").clone()
    }
}

impl Drop for HangUpServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Reads one request from `stream`, then closes it. `None` when the peer went away
/// before the request was complete (then nothing is recorded).
async fn read_request(mut stream: tokio::net::TcpStream) -> Option<RawRequest> {
    let mut buf = Vec::new();
    let head_end = loop {
        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break at;
        }
        if !fill(&mut stream, &mut buf).await {
            return None;
        }
    };
    let head = std::str::from_utf8(&buf[..head_end]).ok()?.to_owned();
    let mut lines = head.split("\r\n");
    let mut request_line = lines.next()?.split(' ');
    let method = request_line.next()?.to_owned();
    let path = request_line.next()?.to_owned();
    let headers: Vec<(String, String)> = lines
        .map(|line| {
            let (name, value) = line.split_once(':').expect("header line");
            (name.trim().to_ascii_lowercase(), value.trim().to_owned())
        })
        .collect();
    let find = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
    };
    let mut at = head_end + 4;
    let body = if let Some(len) = find("content-length") {
        let len: usize = len.parse().ok()?;
        while buf.len() < at + len {
            if !fill(&mut stream, &mut buf).await {
                return None;
            }
        }
        buf[at..at + len].to_vec()
    } else if find("transfer-encoding").is_some_and(|te| te.eq_ignore_ascii_case("chunked")) {
        let mut body = Vec::new();
        loop {
            let line_end = loop {
                if let Some(p) = buf[at..].windows(2).position(|w| w == b"\r\n") {
                    break at + p;
                }
                if !fill(&mut stream, &mut buf).await {
                    return None;
                }
            };
            let size_text = std::str::from_utf8(&buf[at..line_end]).ok()?;
            let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
            at = line_end + 2;
            // The chunk and its CRLF (for the last, empty chunk: the final CRLF, as
            // reqwest sends no trailers).
            while buf.len() < at + size + 2 {
                if !fill(&mut stream, &mut buf).await {
                    return None;
                }
            }
            body.extend_from_slice(&buf[at..at + size]);
            at += size + 2;
            if size == 0 {
                break body;
            }
        }
    } else {
        Vec::new()
    };
    drop(stream);
    Some(RawRequest {
        method,
        path,
        headers,
        body,
    })
}

/// Reads more bytes from `stream` into `buf`; false at end of stream or on an error.
async fn fill(stream: &mut tokio::net::TcpStream, buf: &mut Vec<u8>) -> bool {
    use tokio::io::AsyncReadExt as _;
    let mut chunk = [0u8; 16 * 1024];
    match stream.read(&mut chunk).await {
        Ok(n) if n > 0 => {
            buf.extend_from_slice(&chunk[..n]);
            true
        }
        _ => false,
    }
}

/// `fetch_output` into a file of a fresh temporary directory, read back into a [`Video`]:
/// what the tests compare. (The adapters stream downloads into the caller's file.)
pub(crate) trait FetchVideo {
    async fn fetch_video(
        &self,
        credentials: &byok_providers::Credentials,
        output: &byok_providers::VideoOutput,
    ) -> Result<byok_providers::Video, byok_core::JobError>;
}

impl<P: byok_providers::VideoProvider + ?Sized> FetchVideo for P {
    async fn fetch_video(
        &self,
        credentials: &byok_providers::Credentials,
        output: &byok_providers::VideoOutput,
    ) -> Result<byok_providers::Video, byok_core::JobError> {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let dest = dir.path().join("video.mp4");
        let saved = self.fetch_output(credentials, output, &dest).await?;
        let bytes = std::fs::read(&dest).expect("the video file");
        assert_eq!(
            saved.size,
            bytes.len() as u64,
            "the size is what was written"
        );
        Ok(byok_providers::Video {
            bytes,
            content_type: saved.content_type,
            note: saved.note,
        })
    }
}
