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
use byok_core::{Catalogue, ModelStatus};
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
    for id in ProviderId::BUILT_IN {
        options.provider_mut(id).unwrap().base_url = base_url.to_owned();
    }
    options.allow_private_networks = allow_private_networks;
    options.request_timeout = timeout;
    options.token_uri_allowlist = format!("{base_url}/token").parse().into_iter().collect();
    options.provider_mut(ProviderId::STABILITY).unwrap().models =
        Some(stability_catalogue_available());
    options
}

/// Stability's built-in catalogue with its retired model made available again: what an
/// operator's `providers.stability.models` does, and how the generation half of the adapter
/// (the protocol as Stability served it) stays tested while the default refuses its jobs.
pub fn stability_catalogue_available() -> Catalogue {
    let mut catalogue: Catalogue =
        toml::from_str(include_str!("../../catalogue/stability.toml")).expect("the catalogue");
    for model in &mut catalogue.models {
        model.status = ModelStatus::Available;
        model.retirement = None;
    }
    catalogue
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

// ---------------------------------------------------------------------------------------
// The generation half of the API-key adapters: the same checks for each provider.
// ---------------------------------------------------------------------------------------

/// `id`'s adapter in `registry` with the credentials `raw` (the `"credentials"` object).
pub fn adapter(registry: &Registry, id: ProviderId, raw: &Value) -> Adapter {
    let adapter = registry.get(id).unwrap();
    let credentials = adapter.parse_credentials(raw).expect("credentials");
    (adapter, credentials)
}

/// An adapter and credentials it accepts.
pub type Adapter = (
    std::sync::Arc<dyn byok_providers::VideoProvider>,
    byok_providers::Credentials,
);

/// Validates `fields` (a neutral request for the adapter's provider) and submits them with
/// `image`.
pub async fn validate_and_submit(
    adapter: &dyn byok_providers::VideoProvider,
    credentials: &byok_providers::Credentials,
    fields: Value,
    image: Option<&byok_providers::InputImage>,
) -> Result<byok_providers::Submitted, byok_core::JobError> {
    let validated = adapter
        .validate(&generation_request(adapter.id().as_str(), fields))
        .expect("valid request");
    adapter
        .submit(
            credentials,
            byok_providers::SubmitRequest {
                request: &validated,
                image,
            },
        )
        .await
}

/// Answers `verb` requests for `at` on `server` with `response`.
pub async fn mount(
    server: &wiremock::MockServer,
    verb: &str,
    at: &str,
    response: wiremock::ResponseTemplate,
) {
    use wiremock::matchers::{method, path};
    wiremock::Mock::given(method(verb))
        .and(path(at))
        .respond_with(response)
        .mount(server)
        .await;
}

/// The JSON body of a request the mock received.
pub fn json_body(request: &wiremock::Request) -> Value {
    serde_json::from_slice(&request.body).expect("JSON body")
}

/// Asserts that `server` received no request at all.
pub async fn assert_no_requests(server: &wiremock::MockServer) {
    let requests = server.received_requests().await.expect("recording is on");
    assert!(requests.is_empty(), "{requests:?}");
}

/// A PNG of random pixels (incompressible): `width` x `height` x 3 bytes and more, for
/// images too big to be sent as they are.
pub fn noise_png(width: u32, height: u32) -> byok_providers::InputImage {
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let noise = image::RgbImage::from_fn(width, height, |_, _| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let [a, b, c, ..] = seed.to_le_bytes();
        image::Rgb([a, b, c])
    });
    let mut bytes = std::io::Cursor::new(Vec::new());
    image::DynamicImage::ImageRgb8(noise)
        .write_to(&mut bytes, image::ImageFormat::Png)
        .expect("encode");
    byok_providers::InputImage {
        bytes: bytes.into_inner(),
        content_type: "image/png".into(),
        width,
        height,
    }
}

/// Whether `bytes` look like an MP4 (an `ftyp` box first).
pub fn is_mp4(bytes: &[u8]) -> bool {
    bytes.len() > 12 && &bytes[4..8] == b"ftyp"
}

/// An "image" that is an HTML page, given to `submit` (with a registry on a fresh mock):
/// refused as permanent `invalid_request` before anything is sent.
pub async fn assert_a_non_image_is_refused_before_sending(
    submit: impl AsyncFn(
        &Registry,
        &byok_providers::InputImage,
    ) -> Result<byok_providers::Submitted, byok_core::JobError>,
) {
    let server = wiremock::MockServer::start().await;
    let image = byok_providers::InputImage {
        bytes: b"<html>not an image</html>".to_vec(),
        content_type: "image/png".into(),
        width: 1,
        height: 1,
    };
    let err = submit(&registry(&server.uri()), &image)
        .await
        .expect_err("refused");
    assert_class(
        &err,
        byok_core::ErrorCode::InvalidRequest,
        byok_core::RetryClass::Permanent,
        "not an image",
    );
    assert_no_requests(&server).await;
}

/// `submit` (given a registry) against `server`, whose answer comes later than the 300 ms
/// request timeout: the request reached the provider, once, so the outcome is unknown
/// (`submit_outcome_unknown`, permanent), never a reason to send it again.
pub async fn assert_a_timed_out_submit_is_outcome_unknown(
    server: &wiremock::MockServer,
    submit: impl AsyncFn(&Registry) -> Result<byok_providers::Submitted, byok_core::JobError>,
) {
    let registry =
        Registry::new(&options(&server.uri(), true, Duration::from_millis(300))).expect("registry");
    let err = submit(&registry).await.expect_err("timed out");
    assert_class(
        &err,
        byok_core::ErrorCode::SubmitOutcomeUnknown,
        byok_core::RetryClass::Permanent,
        "timeout after sending",
    );
    let requests = server.received_requests().await.expect("recorded");
    assert_eq!(requests.len(), 1, "the request did reach the provider");
}

/// `submit` (given a registry) cut off after it was sent, then refused before it was.
///
/// First at a [`HangUpServer`], which reads the whole submit and hangs up; the timeout is
/// long, so it is the cut connection, not a timeout, that loses the answer: the job may
/// exist, so `submit_outcome_unknown`, permanent, "the submit to `provider` was sent but its
/// answer was lost", without `secret`. Then at a closed port: nothing was sent, so trying
/// again is safe (`provider_unavailable`, transient). Returns the one request the server
/// read, for the caller's checks of it.
pub async fn assert_a_cut_submit_is_outcome_unknown_but_a_refused_one_is_not(
    provider: &str,
    secret: &str,
    submit: impl AsyncFn(&Registry) -> Result<byok_providers::Submitted, byok_core::JobError>,
) -> RawRequest {
    use byok_core::{ErrorCode, RetryClass};
    let server = HangUpServer::start().await;
    let cut =
        Registry::new(&options(&server.base_url, true, Duration::from_secs(30))).expect("registry");
    let err = submit(&cut).await.expect_err("no answer");
    assert_class(
        &err,
        ErrorCode::SubmitOutcomeUnknown,
        RetryClass::Permanent,
        "connection closed after the request",
    );
    assert!(
        err.message.starts_with(&format!(
            "the submit to {provider} was sent but its answer was lost"
        )) && !err.message.contains("no answer within"),
        "{}",
        err.message
    );
    assert!(!err.message.contains(secret), "{}", err.message);
    // The provider got the complete request, exactly once.
    let mut requests = server.requests();
    assert_eq!(requests.len(), 1, "{requests:?}");

    let refused = registry(&format!("http://127.0.0.1:{}", closed_port()));
    let err = submit(&refused).await.expect_err("refused");
    assert_class(
        &err,
        ErrorCode::ProviderUnavailable,
        RetryClass::Transient,
        "connection refused",
    );
    assert!(
        err.message.starts_with(&format!(
            "{provider} could not be reached: could not connect"
        )),
        "{}",
        err.message
    );
    requests.remove(0)
}

/// How a test gets an adapter and its credentials from a registry.
pub type AdapterOf = fn(&Registry) -> Adapter;

/// `fetch_output` of the URL `{server}{at}` (a path, with a query if any), which a fresh mock
/// answers with `response`; the mock too, for the request it received.
pub async fn download_answered_with(
    adapter_of: AdapterOf,
    at: &str,
    response: wiremock::ResponseTemplate,
) -> (
    Result<byok_providers::Video, byok_core::JobError>,
    wiremock::MockServer,
) {
    let server = wiremock::MockServer::start().await;
    let file = at.split('?').next().unwrap_or(at);
    mount(&server, "GET", file, response).await;
    let (adapter, credentials) = adapter_of(&registry(&server.uri()));
    let output = byok_providers::VideoOutput::Urls(vec![format!("{}{at}", server.uri())]);
    (adapter.fetch_video(&credentials, &output).await, server)
}

/// A 4 KiB MP4 served as `video/mp4` at `{mock}{at}`: downloaded as it is, without a note,
/// sending nothing but an `Accept` (no `Authorization`, no provider header): the URL is the
/// only credential, and the key stays home. Returns the request, for further checks.
pub async fn assert_the_output_is_downloaded_without_credentials(
    adapter_of: AdapterOf,
    at: &str,
) -> wiremock::Request {
    let mp4 = fake_mp4(4096);
    let (video, server) = download_answered_with(
        adapter_of,
        at,
        wiremock::ResponseTemplate::new(200).set_body_raw(mp4.clone(), "video/mp4"),
    )
    .await;
    let video = video.expect("downloaded");
    assert_eq!(video.bytes, mp4);
    assert_eq!(video.content_type, "video/mp4");
    assert_eq!(video.note, None);
    let request = only_request(&server).await;
    assert_exact_headers(
        &request,
        &[("accept", "video/mp4, video/*, application/octet-stream")],
    );
    request
}

/// Each case of `cases` (what, the answer at `{mock}{at}`, its code and retry class) fails the
/// download as it says, and no message names the URL's path or query: they may carry a
/// signature, so messages name the host only.
pub async fn assert_downloads_fail(
    adapter_of: AdapterOf,
    at: &str,
    cases: Vec<(
        &str,
        wiremock::ResponseTemplate,
        byok_core::ErrorCode,
        byok_core::RetryClass,
    )>,
) {
    for (case, response, code, class) in cases {
        let err = download_answered_with(adapter_of, at, response)
            .await
            .0
            .expect_err(case);
        assert_class(&err, code, class, case);
        for part in at.split(['/', '?', '&', '=']).filter(|p| !p.is_empty()) {
            assert!(!err.message.contains(part), "{case}: {}", err.message);
        }
    }
}

/// `adapter_of`'s poll of `job_id` at a fresh mock answering `GET {at}` with `response`; the
/// mock too, for the requests it received.
pub async fn poll_answered_with(
    adapter_of: AdapterOf,
    at: &str,
    job_id: &str,
    response: wiremock::ResponseTemplate,
) -> (
    Result<byok_providers::RemoteStatus, byok_core::JobError>,
    wiremock::MockServer,
) {
    let server = wiremock::MockServer::start().await;
    mount(&server, "GET", at, response).await;
    let (adapter, credentials) = adapter_of(&registry(&server.uri()));
    (adapter.poll(&credentials, job_id).await, server)
}

/// Each of `urls` as an output, with private networks refused (production's policy): a
/// provider's answer is untrusted input, so each is refused before any connection,
/// permanent, "output URL was refused".
pub async fn assert_output_urls_are_refused(adapter_of: AdapterOf, urls: &[&str]) {
    let (adapter, credentials) = adapter_of(&strict_registry());
    for url in urls {
        let err = adapter
            .fetch_video(
                &credentials,
                &byok_providers::VideoOutput::Urls(vec![(*url).to_owned()]),
            )
            .await
            .expect_err(url);
        assert_class(
            &err,
            byok_core::ErrorCode::ProviderUnavailable,
            byok_core::RetryClass::Permanent,
            url,
        );
        assert!(
            err.message.contains("output URL was refused"),
            "{url}: {}",
            err.message
        );
    }
}

// ---------------------------------------------------------------------------------------
// The Google adapter (Veo and Gemini Omni) at a mock Vertex AI.
// ---------------------------------------------------------------------------------------

/// Google's verifying token endpoint for the shared key, issuing [`crate::veo::ACCESS_TOKEN`]
/// valid for `expires_in` seconds.
pub fn google_tokens(expires_in: u64) -> crate::veo::GoogleTokenEndpoint {
    let mut endpoint =
        crate::veo::GoogleTokenEndpoint::new(TestKey::shared(), Some(PRIVATE_KEY_ID));
    endpoint.expires_in = json!(expires_in);
    endpoint
}

/// A token endpoint that issues `ya29.token-1`, `ya29.token-2`, … (to tell a refreshed
/// token from the first one).
pub struct SequentialTokens(std::sync::atomic::AtomicUsize);

impl SequentialTokens {
    pub fn new() -> SequentialTokens {
        SequentialTokens(std::sync::atomic::AtomicUsize::new(0))
    }
}

impl wiremock::Respond for SequentialTokens {
    fn respond(&self, _: &wiremock::Request) -> wiremock::ResponseTemplate {
        let n = self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
        wiremock::ResponseTemplate::new(200).set_body_json(json!({
            "access_token": format!("ya29.token-{n}"),
            "expires_in": 3599,
            "token_type": "Bearer",
        }))
    }
}

/// A `google.rpc.Status` error body.
pub fn rpc_error(code: u16, status: &str, message: &str) -> Value {
    json!({"error": {"code": code, "message": message, "status": status}})
}

/// An MP4 bigger than the 64 KiB cap of small answers, so that reading it proves the
/// large-answer path is used.
pub fn video_bytes() -> Vec<u8> {
    let mut bytes = b"\x00\x00\x00\x20ftypisom".to_vec();
    bytes.extend((0..300 * 1024u32).map(|i| (i % 251) as u8));
    bytes
}

/// A mock server with a token endpoint at `/token`, and the Google adapter (`veo`) pointed
/// at it with a service account whose `token_uri` is that endpoint.
pub struct GoogleFixture {
    pub server: wiremock::MockServer,
    pub veo: std::sync::Arc<dyn byok_providers::VideoProvider>,
    pub credentials: byok_providers::Credentials,
}

impl GoogleFixture {
    /// Google's verifying token endpoint (3599 s tokens), a 10 s timeout.
    pub async fn start() -> GoogleFixture {
        GoogleFixture::with_tokens(google_tokens(3599), Duration::from_secs(10)).await
    }

    /// Vertex AI and the token endpoint, answering with `tokens`, on one mock.
    pub async fn with_tokens(
        tokens: impl wiremock::Respond + 'static,
        timeout: Duration,
    ) -> GoogleFixture {
        let server = wiremock::MockServer::start().await;
        wiremock::Mock::given(wiremock::matchers::method("POST"))
            .and(wiremock::matchers::path("/token"))
            .respond_with(tokens)
            .mount(&server)
            .await;
        let base_url = server.uri();
        GoogleFixture::on(server, &base_url, timeout)
    }

    /// Vertex AI at `base_url` (a hang-up server, a closed port), Google's verifying token
    /// endpoint on a mock of its own.
    pub async fn at(base_url: &str, timeout: Duration) -> GoogleFixture {
        let tokens = wiremock::MockServer::start().await;
        wiremock::Mock::given(wiremock::matchers::method("POST"))
            .and(wiremock::matchers::path("/token"))
            .respond_with(google_tokens(3599))
            .mount(&tokens)
            .await;
        GoogleFixture::on(tokens, base_url, timeout)
    }

    /// Vertex AI at `base_url`, the token endpoint on `server`.
    pub fn on(server: wiremock::MockServer, base_url: &str, timeout: Duration) -> GoogleFixture {
        let mut options = options(base_url, true, timeout);
        options
            .token_uri_allowlist
            .push(format!("{}/token", server.uri()).parse().unwrap());
        let registry = Registry::new(&options).expect("registry");
        let veo = registry.get(ProviderId::VEO).unwrap();
        let sa = service_account(
            TestKey::shared(),
            Some(PRIVATE_KEY_ID),
            &format!("{}/token", server.uri()),
        );
        let credentials = veo
            .parse_credentials(&json!({"service_account": sa}))
            .expect("valid credentials");
        GoogleFixture {
            server,
            veo,
            credentials,
        }
    }

    /// The requests the mock received for path `p`.
    pub async fn requests_to(&self, p: &str) -> Vec<wiremock::Request> {
        let all = self
            .server
            .received_requests()
            .await
            .expect("recording is on");
        all.into_iter().filter(|r| r.url.path() == p).collect()
    }

    /// How many token exchanges the mock answered.
    pub async fn token_requests(&self) -> usize {
        self.requests_to("/token").await.len()
    }

    /// Answers `verb` requests for `at` with `response`.
    pub async fn mount(&self, verb: &str, at: &str, response: wiremock::ResponseTemplate) {
        mount(&self.server, verb, at, response).await;
    }

    /// Answers the first `verb` request for `at` with `response`, before what
    /// [`GoogleFixture::mount`] set up for it answers the rest.
    pub async fn mount_once(&self, verb: &str, at: &str, response: wiremock::ResponseTemplate) {
        wiremock::Mock::given(wiremock::matchers::method(verb))
            .and(wiremock::matchers::path(at))
            .respond_with(response)
            .up_to_n_times(1)
            .with_priority(1)
            .mount(&self.server)
            .await;
    }
}

/// A JSON answer.
pub fn json_answer(status: u16, body: Value) -> wiremock::ResponseTemplate {
    wiremock::ResponseTemplate::new(status).set_body_json(body)
}

// ---------------------------------------------------------------------------------------
// Key checks of the API-key adapters.
// ---------------------------------------------------------------------------------------

/// The key check of the credentials `raw` by `id`'s adapter in `registry`.
pub async fn check_key(
    registry: &Registry,
    id: ProviderId,
    raw: &Value,
) -> byok_providers::CredentialCheck {
    let adapter = registry.get(id).unwrap();
    let credentials = adapter.parse_credentials(raw).expect("valid credentials");
    adapter.check_credentials(&credentials).await
}

/// [`check_key`] at a fresh mock that answers the check (`verb` `at`) once with `response`;
/// the mock too, for the request it received.
pub async fn key_check_answered_with(
    id: ProviderId,
    raw: &Value,
    verb: &str,
    at: &str,
    response: wiremock::ResponseTemplate,
) -> (byok_providers::CredentialCheck, wiremock::MockServer) {
    use wiremock::matchers::{method, path};
    let server = wiremock::MockServer::start().await;
    wiremock::Mock::given(method(verb))
        .and(path(at))
        .respond_with(response)
        .expect(1)
        .mount(&server)
        .await;
    let outcome = check_key(&registry(&server.uri()), id, raw).await;
    (outcome, server)
}
