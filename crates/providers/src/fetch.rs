//! Fetching a user's input image (`image_url`) under the private-network policy
//! (`fetch.allow_private_networks`, see [`crate::net`]).
//!
//! The API calls [`ImageFetcher::precheck`] at enqueue, so that a URL that can never
//! be fetched is a 422 before anything is stored; the worker calls
//! [`ImageFetcher::fetch`] before submitting, and hands the checked bytes to the
//! adapter (Runway gets them as a data URI, Stability as a multipart file), so the
//! provider never fetches the user's URL itself and what was checked is what is used.
//!
//! When private networks are not allowed:
//!
//! * only `https` URLs are fetched (`file:`, `data:`, `ftp:` … are refused whatever
//!   the policy); URLs with a user name or password are refused too (they would put a
//!   secret into the job row and the logs);
//! * an IP-literal host must be a public address ([`net::check_url`]);
//! * a DNS name is resolved by a resolver that drops every non-public address at
//!   connect time (the classification of [`net::is_public_ip`]), so there is no window
//!   for DNS rebinding between a check and the connection;
//! * redirects are never followed automatically: [`ImageFetcher::fetch`] follows up to
//!   `max_redirects` itself and applies the whole policy again to every hop (an https
//!   URL redirecting to `http://169.254.169.254/` is refused without a connection);
//! * no proxy is used (a proxy would connect on our behalf and bypass the resolver).
//!
//! Whatever the policy, the answer must be `200`-class, at most `max_bytes` long (the
//! `Content-Length` is checked first and the streamed count enforces it when the
//! server sends none or lies), within `timeout` for the whole fetch including
//! redirects, served as `image/png`, `image/jpeg` or `image/webp`, and the bytes must
//! decode as a PNG, JPEG or WebP image of at most [`MAX_IMAGE_PIXELS`] pixels that fits
//! the decoded-size budget of [`ImageWork`] (both checked from the image header before
//! anything is decoded). The fetcher has its own HTTP client: no credentials, cookies or
//! `Referer` are ever sent.
//!
//! Every decode and resize of a user's image, here and in the adapters, runs through
//! the process's one [`ImageWork`]: on a blocking thread, at most
//! `fetch.max_concurrent_decodes` at once, each within `fetch.max_decoded_bytes`.
//!
//! Error messages name the URL's host at most: paths and queries of user URLs often
//! carry signatures or tokens, and resolved addresses or transport internals say more
//! about our network than a producer needs (they are logged at debug level instead).

use std::io::Cursor;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use byok_core::{ErrorCode, JobError};
use image::imageops::{self, FilterType};
use image::{
    DynamicImage, GenericImageView, ImageDecoder, ImageFormat, ImageReader, Limits, Pixel, RgbImage,
};
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use reqwest::header::{ACCEPT, CONTENT_TYPE, LOCATION};
use url::{Host, Url};

use crate::InputImage;
use crate::http::{self, USER_AGENT, describe_transport_error, read_limited, sanitize};
use crate::net::{self, PolicyError};

/// The most pixels an input image may have. A 20 MiB PNG of a flat colour can
/// declare a billion pixels; decoding it would take gigabytes. No provider makes
/// video larger than 1920x1080 from it, so 40 megapixels is generous.
pub const MAX_IMAGE_PIXELS: u64 = 40_000_000;

const MIB: u64 = 1024 * 1024;

/// What a decoder may allocate besides the image itself (`Limits::max_alloc` is the
/// decoded-size budget plus this): row buffers, the inflate window, palettes.
const DECODER_ALLOWANCE_BYTES: u64 = 64 * MIB;

/// The longest `image_url` accepted (signed CDN URLs run to ~1.5 KB).
const MAX_URL_CHARS: usize = 4096;

/// The redirect statuses that carry a `Location` to follow.
const REDIRECTS: [u16; 5] = [301, 302, 303, 307, 308];

/// How an [`ImageFetcher`] behaves.
#[derive(Debug, Clone)]
pub struct FetchOptions {
    /// `fetch.allow_private_networks`: when false, only https and public addresses
    /// (see the module docs). Tests and local setups on loopback set it to true.
    pub allow_private_networks: bool,
    /// Largest image accepted, in bytes (default 20 MiB).
    pub max_bytes: usize,
    /// Time limit for the whole fetch, redirects included (default 15 s); the wait for
    /// a decoding turn comes after it.
    pub timeout: Duration,
    /// Redirects followed at most (default 3); each hop is checked like the first.
    pub max_redirects: usize,
    /// Where the fetched image is decoded and checked: the process's decoding limits
    /// (`fetch.max_concurrent_decodes`, `fetch.max_decoded_bytes`). Clones share one
    /// limit; give the registry the same one ([`crate::RegistryOptions::images`]).
    pub images: ImageWork,
}

impl FetchOptions {
    /// Default `max_bytes`: 20 MiB.
    pub const DEFAULT_MAX_BYTES: usize = 20 * 1024 * 1024;
    /// Default `timeout`: 15 s.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(15);
    /// Default `max_redirects`: 3.
    pub const DEFAULT_MAX_REDIRECTS: usize = 3;
}

impl Default for FetchOptions {
    /// Private networks refused, 20 MiB, 15 s, 3 redirects, an [`ImageWork`] of its own
    /// with the default limits.
    fn default() -> Self {
        FetchOptions {
            allow_private_networks: false,
            max_bytes: Self::DEFAULT_MAX_BYTES,
            timeout: Self::DEFAULT_TIMEOUT,
            max_redirects: Self::DEFAULT_MAX_REDIRECTS,
            images: ImageWork::default(),
        }
    }
}

/// Why an input image could not be fetched.
///
/// How callers map it ([`FetchError::is_transient`], [`FetchError::to_job_error`]):
/// at enqueue every non-transient error is a 422 on `image_url`; in the worker it is a
/// permanent `invalid_request`. Transient errors (the host could not be reached, timed
/// out, or answered 408/429/5xx) are retried by the worker; at enqueue the API may
/// accept the job and leave it to the worker, or answer 422 — its choice.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FetchError {
    /// Not a URL at all, or an absurdly long one.
    #[error("image_url is not a valid URL")]
    InvalidUrl,
    /// Refused by the policy: scheme, credentials in the URL, a non-public address,
    /// a name resolving only to non-public addresses, a bad or excess redirect.
    #[error("image_url refused: {reason}")]
    Refused {
        /// Why, naming the host at most.
        reason: String,
    },
    /// The server answered with an error status.
    #[error("{host} answered HTTP {status} for the image")]
    Status {
        /// The host that answered.
        host: String,
        /// The HTTP status.
        status: u16,
    },
    /// The answer is not a PNG, JPEG or WebP image (content type, bytes, or pixels).
    #[error("the file at {host} is not a usable PNG, JPEG or WebP image: {reason}")]
    NotAnImage {
        /// The host that served it.
        host: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The image is larger than `max_bytes`.
    #[error("the image at {host} is larger than {limit} bytes")]
    TooLarge {
        /// The host that served it.
        host: String,
        /// The configured limit.
        limit: usize,
    },
    /// No answer: DNS failure, connection refused or cut.
    #[error("{host} could not be reached: {reason}")]
    Unreachable {
        /// The host.
        host: String,
        /// A short, generic description (details are logged).
        reason: String,
    },
    /// The fetch did not finish within the time limit.
    #[error("{host} did not deliver the image within {} ms", .after.as_millis())]
    Timeout {
        /// The host of the URL asked for.
        host: String,
        /// The limit.
        after: Duration,
    },
    /// A fault on our side (the HTTP client could not be built, a task panicked).
    #[error("internal error while fetching the image: {0}")]
    Internal(String),
}

impl FetchError {
    /// Whether trying again later may succeed: unreachable, timed out, or HTTP
    /// 408/429/5xx. Everything else is permanent.
    pub fn is_transient(&self) -> bool {
        match self {
            FetchError::Unreachable { .. } | FetchError::Timeout { .. } => true,
            FetchError::Status { status, .. } => matches!(status, 408 | 429 | 500..=599),
            _ => false,
        }
    }

    /// Whether the URL itself was refused by the policy (not the answer behind it).
    pub fn is_refused_by_policy(&self) -> bool {
        matches!(self, FetchError::InvalidUrl | FetchError::Refused { .. })
    }

    /// The worker's view: `invalid_request` (the producer's `image_url` is what
    /// failed), transient when [`Self::is_transient`], else permanent; `internal`
    /// for our own faults.
    pub fn to_job_error(&self) -> JobError {
        let message = format!("image_url: {self}");
        match self {
            FetchError::Internal(_) => JobError::permanent(ErrorCode::Internal, message),
            _ if self.is_transient() => JobError::transient(ErrorCode::InvalidRequest, message),
            _ => JobError::permanent(ErrorCode::InvalidRequest, message),
        }
    }
}

/// Which addresses may be connected to, and whether plain http is allowed.
#[derive(Debug, Clone, Copy)]
struct AddressPolicy {
    /// Only `https` URLs.
    https_only: bool,
    /// `Some(classifier)`: only addresses it calls public, for IP literals and for
    /// every resolved name. `None`: any address.
    is_public: Option<fn(IpAddr) -> bool>,
}

impl AddressPolicy {
    fn from_options(options: &FetchOptions) -> Self {
        if options.allow_private_networks {
            AddressPolicy {
                https_only: false,
                is_public: None,
            }
        } else {
            AddressPolicy {
                https_only: true,
                is_public: Some(net::is_public_ip),
            }
        }
    }
}

/// Fetches and checks input images. Cheap to clone; build one per process.
#[derive(Debug, Clone)]
pub struct ImageFetcher {
    options: FetchOptions,
    policy: AddressPolicy,
    client: reqwest::Client,
}

impl ImageFetcher {
    /// A fetcher with its own HTTP client (no automatic redirects, and under the
    /// strict policy https only, no proxy and the public-only resolver). Fails only
    /// when the HTTP client cannot be built (TLS initialisation).
    pub fn new(options: FetchOptions) -> Result<ImageFetcher, FetchError> {
        let policy = AddressPolicy::from_options(&options);
        Self::with_policy(options, policy)
    }

    fn with_policy(
        options: FetchOptions,
        policy: AddressPolicy,
    ) -> Result<ImageFetcher, FetchError> {
        let mut builder = reqwest::Client::builder()
            .user_agent(USER_AGENT)
            .redirect(reqwest::redirect::Policy::none())
            // The whole fetch (redirects included) runs under one tokio timeout, which
            // gives the `Timeout` error; a per-request client timeout would race it.
            .connect_timeout(options.timeout);
        if let Some(is_public) = policy.is_public {
            builder = builder
                .no_proxy()
                .dns_resolver(FilteringResolver { is_public });
        }
        if policy.https_only {
            builder = builder.https_only(true);
        }
        let client = builder
            .build()
            .map_err(|e| FetchError::Internal(format!("could not build the HTTP client: {e}")))?;
        Ok(ImageFetcher {
            options,
            policy,
            client,
        })
    }

    /// The options this fetcher was built with.
    pub fn options(&self) -> &FetchOptions {
        &self.options
    }

    /// What can be decided at enqueue without downloading: the URL parses, its scheme
    /// and host pass the policy, an IP-literal host is public and a DNS name resolves
    /// to at least one public address (under the strict policy; the worker's
    /// connection is filtered again, so a name that changes its answer later gains
    /// nothing). A name that does not resolve at all is [`FetchError::Unreachable`]
    /// (transient: DNS may be down).
    pub async fn precheck(&self, url: &str) -> Result<Url, FetchError> {
        let url = self.parse(url)?;
        self.check_hop(&url)?;
        if let (Some(is_public), Some(Host::Domain(name))) = (self.policy.is_public, url.host()) {
            let host = name.to_owned();
            let lookup = resolve_filtered(host.clone(), is_public);
            match tokio::time::timeout(self.options.timeout, lookup).await {
                Err(_) => {
                    return Err(FetchError::Timeout {
                        host,
                        after: self.options.timeout,
                    });
                }
                Ok(Err(ResolveFailure::NonPublic(policy))) => return Err(refused(&policy)),
                Ok(Err(ResolveFailure::Lookup(err))) => {
                    tracing::debug!(%host, error = %err, "image host did not resolve");
                    return Err(FetchError::Unreachable {
                        host,
                        reason: "the name does not resolve".to_owned(),
                    });
                }
                Ok(Ok(_)) => {}
            }
        }
        Ok(url)
    }

    /// Downloads and checks the image (see the module docs for every rule).
    pub async fn fetch(&self, url: &str) -> Result<InputImage, FetchError> {
        let url = self.parse(url)?;
        self.check_hop(&url)?;
        let host = host_of(&url);
        let (host, bytes) = match tokio::time::timeout(self.options.timeout, self.follow(url)).await
        {
            Ok(result) => result?,
            Err(_) => {
                return Err(FetchError::Timeout {
                    host,
                    after: self.options.timeout,
                });
            }
        };
        // The time limit is the host's: a turn at the decoder comes after it, because a
        // queue of decodes in this process is not the host's doing.
        let checked = self
            .options
            .images
            .decode(bytes, |bytes, format, image| InputImage {
                bytes,
                content_type: mime_of(format).to_owned(),
                width: image.width(),
                height: image.height(),
            })
            .await;
        checked.map_err(|e| match e {
            DecodeError::Unusable(reason) => FetchError::NotAnImage { host, reason },
            DecodeError::Failed(message) => {
                FetchError::Internal(format!("the image check failed: {message}"))
            }
        })
    }

    fn parse(&self, raw: &str) -> Result<Url, FetchError> {
        let raw = raw.trim();
        if raw.is_empty() || raw.len() > MAX_URL_CHARS {
            return Err(FetchError::InvalidUrl);
        }
        Url::parse(raw).map_err(|_| FetchError::InvalidUrl)
    }

    /// The policy for one URL (the first, and every redirect target): scheme, host and
    /// credentials as [`net::check_url`] decides them, then IP literals against this
    /// fetcher's classifier. DNS names are checked by the resolver when connecting.
    fn check_hop(&self, url: &Url) -> Result<(), FetchError> {
        net::check_url(url, !self.policy.https_only).map_err(|e| refused(&e))?;
        if !url.username().is_empty() || url.password().is_some() {
            return Err(FetchError::Refused {
                reason: "the URL must not contain a user name or password".to_owned(),
            });
        }
        if let Some(is_public) = self.policy.is_public {
            let ip = match url.host() {
                Some(Host::Ipv4(ip)) => Some(IpAddr::V4(ip)),
                Some(Host::Ipv6(ip)) => Some(IpAddr::V6(ip)),
                _ => None,
            };
            if let Some(ip) = ip
                && !is_public(ip)
            {
                return Err(refused(&PolicyError::NonPublicAddress {
                    host: host_of(url),
                }));
            }
        }
        Ok(())
    }

    /// GETs `url`, following redirects by hand so that every hop is checked; the host
    /// that served the image and its bytes, not yet decoded.
    async fn follow(&self, mut url: Url) -> Result<(String, Vec<u8>), FetchError> {
        let mut redirects = 0;
        loop {
            let response = self
                .client
                .get(url.clone())
                .header(ACCEPT, "image/png, image/jpeg, image/webp")
                .send()
                .await
                .map_err(|e| transport_error(&url, &e))?;
            let status = response.status().as_u16();
            if REDIRECTS.contains(&status) {
                if redirects >= self.options.max_redirects {
                    return Err(FetchError::Refused {
                        reason: format!(
                            "{} redirected more than {} times",
                            host_of(&url),
                            self.options.max_redirects
                        ),
                    });
                }
                let next = response
                    .headers()
                    .get(LOCATION)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|location| url.join(location.trim()).ok())
                    .ok_or_else(|| FetchError::Refused {
                        reason: format!("{} redirected to an invalid location", host_of(&url)),
                    })?;
                self.check_hop(&next)?;
                redirects += 1;
                url = next;
                continue;
            }
            if !(200..300).contains(&status) {
                return Err(FetchError::Status {
                    host: host_of(&url),
                    status,
                });
            }
            return self.read_image(&url, response).await;
        }
    }

    /// The body of an image answer: an image content type, at most `max_bytes`.
    async fn read_image(
        &self,
        url: &Url,
        response: reqwest::Response,
    ) -> Result<(String, Vec<u8>), FetchError> {
        let host = host_of(url);
        let not_an_image = |reason: String| FetchError::NotAnImage {
            host: host.clone(),
            reason,
        };
        let declared = response
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(http::essence);
        match declared.as_deref() {
            Some("image/png" | "image/jpeg" | "image/webp") => {}
            Some(other) => {
                return Err(not_an_image(format!(
                    "served as `{}`",
                    sanitize(other, &[])
                )));
            }
            None => return Err(not_an_image("served without a content type".to_owned())),
        }
        let limit = self.options.max_bytes;
        match read_limited(response, limit).await {
            Ok(Some(bytes)) => Ok((host, bytes)),
            Ok(None) => Err(FetchError::TooLarge { host, limit }),
            Err(e) => Err(transport_error(url, &e)),
        }
    }
}

/// The MIME type of a sniffed format (only the three accepted ones reach here).
pub(crate) fn mime_of(format: ImageFormat) -> &'static str {
    match format {
        ImageFormat::Png => "image/png",
        ImageFormat::WebP => "image/webp",
        _ => "image/jpeg",
    }
}

/// Decoding and resizing users' images, for the whole process: at most
/// `max_concurrent` at a time (`fetch.max_concurrent_decodes`), each image within a
/// decoded-size budget (`fetch.max_decoded_bytes`). Cheap to clone; clones share the
/// limit. A process builds one and gives it to the fetcher and the registry.
///
/// Why a limit on concurrency, and why a small one: a decode holds the whole decoded
/// image (up to the budget) and a resize holds its buffers beside it, while the file
/// that caused it may be a few hundred kilobytes. A worker runs `worker.concurrency`
/// jobs at once (256 by default), and tokio's blocking pool would run as many decodes
/// side by side: twenty images at the budget are 2.5 GiB. With at most two at a time,
/// the memory images can take is two budgets and two resizes, whatever the number of
/// jobs. It costs little time: decoding and resizing are CPU-bound, and a worker has few
/// cores, so more of them at once would not finish sooner; meanwhile the other jobs wait
/// on providers, which needs no image work. Waiting for a turn holds no thread (an
/// async semaphore), and tokio's semaphore is fair, so turns come in arrival order.
#[derive(Debug, Clone)]
pub struct ImageWork {
    permits: Arc<tokio::sync::Semaphore>,
    max_decoded_bytes: u64,
}

impl ImageWork {
    /// Default `fetch.max_concurrent_decodes`: 2.
    pub const DEFAULT_MAX_CONCURRENT: usize = 2;
    /// Default `fetch.max_decoded_bytes`: 128 MiB, which a 40-megapixel photo (3 bytes
    /// per pixel, 114 MiB) fits; a 40-megapixel image at 16 bits per channel does not.
    pub const DEFAULT_MAX_DECODED_BYTES: u64 = 128 * MIB;

    /// At most `max_concurrent` decodes or resizes at a time (0 counts as 1: the
    /// configuration refuses it), each image within `max_decoded_bytes`.
    pub fn new(max_concurrent: usize, max_decoded_bytes: u64) -> ImageWork {
        ImageWork {
            permits: Arc::new(tokio::sync::Semaphore::new(max_concurrent.max(1))),
            max_decoded_bytes,
        }
    }

    /// Runs `work` on a blocking thread once it has a turn.
    ///
    /// The turn (the permit) moves into the blocking task, so it is given back when the
    /// work ends, not when the caller stops waiting: a job cancelled or timed out in the
    /// middle of a decode does not free a turn while its decode still runs.
    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, DecodeError> {
        let permit = Arc::clone(&self.permits)
            .acquire_owned()
            .await
            .map_err(|e| DecodeError::Failed(e.to_string()))?;
        tokio::task::spawn_blocking(move || {
            let _turn = permit;
            work()
        })
        .await
        .map_err(|e| DecodeError::Failed(e.to_string()))
    }

    /// Decodes `bytes` in a turn ([`decode_checked`]: the pixel cap and this budget are
    /// checked from the header first) and hands the image to `then` in the same turn,
    /// for the resizing and re-encoding that needs it.
    pub(crate) async fn decode<T: Send + 'static>(
        &self,
        bytes: Vec<u8>,
        then: impl FnOnce(Vec<u8>, ImageFormat, DynamicImage) -> T + Send + 'static,
    ) -> Result<T, DecodeError> {
        let budget = self.max_decoded_bytes;
        self.run(move || {
            let (format, image) = decode_checked(&bytes, budget).map_err(DecodeError::Unusable)?;
            Ok(then(bytes, format, image))
        })
        .await?
    }
}

impl Default for ImageWork {
    /// Two at a time, 128 MiB each.
    fn default() -> Self {
        ImageWork::new(
            Self::DEFAULT_MAX_CONCURRENT,
            Self::DEFAULT_MAX_DECODED_BYTES,
        )
    }
}

/// Why [`ImageWork::decode`] gave no image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum DecodeError {
    /// The producer's image: not PNG, JPEG or WebP, over the pixel cap or the budget,
    /// or it does not decode. A short reason for people.
    Unusable(String),
    /// Ours: the blocking task panicked or could not run.
    Failed(String),
}

impl DecodeError {
    /// An adapter's view of a stored input image that cannot be used: the producer's
    /// image is a permanent `invalid_request`, our failure a permanent `internal`.
    pub(crate) fn to_job_error(&self) -> JobError {
        match self {
            DecodeError::Unusable(reason) => JobError::permanent(
                ErrorCode::InvalidRequest,
                format!("the input image is unusable: {reason}"),
            ),
            DecodeError::Failed(message) => JobError::permanent(
                ErrorCode::Internal,
                format!("internal error: the input image could not be processed: {message}"),
            ),
        }
    }
}

/// Sniffs `bytes` (PNG, JPEG or WebP only, whatever a header claimed), refuses from the
/// image header, before decoding anything, more than [`MAX_IMAGE_PIXELS`] pixels or an
/// image that needs more than `budget` bytes to decode ([`decoding_bytes`]), and decodes
/// the whole image (so a file that is only a valid header is refused too). The error is
/// a short reason for people. Runs only in an [`ImageWork`] turn.
fn decode_checked(bytes: &[u8], budget: u64) -> Result<(ImageFormat, DynamicImage), String> {
    let format = match image::guess_format(bytes) {
        Ok(format @ (ImageFormat::Png | ImageFormat::Jpeg | ImageFormat::WebP)) => format,
        Ok(other) => {
            return Err(format!(
                "the bytes are {}, not PNG, JPEG or WebP",
                other.to_mime_type()
            ));
        }
        Err(_) => return Err("the bytes are not PNG, JPEG or WebP".to_owned()),
    };
    let mut limits = Limits::default();
    // The decoded image is reserved from this first (`ImageReader::decode`), so what is
    // left is the allowance for the decoder's own buffers.
    limits.max_alloc = Some(budget.saturating_add(DECODER_ALLOWANCE_BYTES));
    let reader = || {
        let mut reader = ImageReader::with_format(Cursor::new(bytes), format);
        reader.limits(limits.clone());
        reader
    };
    let header = reader().into_decoder().map_err(|e| {
        format!(
            "could not read the image header ({})",
            sanitize(&e.to_string(), &[])
        )
    })?;
    let (width, height) = header.dimensions();
    let bytes_per_pixel = header.color_type().bytes_per_pixel();
    drop(header);
    let pixels = u64::from(width) * u64::from(height);
    if pixels == 0 {
        return Err("the image has no pixels".to_owned());
    }
    if pixels > MAX_IMAGE_PIXELS {
        return Err(format!(
            "{width}x{height} is more than {} megapixels",
            MAX_IMAGE_PIXELS / 1_000_000
        ));
    }
    let decoded = pixels * u64::from(bytes_per_pixel);
    let needed = decoding_bytes(format, bytes, width, height, decoded);
    if needed > budget {
        let working = if needed == decoded {
            String::new()
        } else {
            format!(
                " and needs {} MiB with the decoder's working memory",
                needed.div_ceil(MIB)
            )
        };
        return Err(format!(
            "{width}x{height} at {bytes_per_pixel} bytes per pixel decodes to {} MiB{working}, more than the {} MiB budget",
            decoded.div_ceil(MIB),
            budget / MIB
        ));
    }
    let image = reader().decode().map_err(|e| {
        format!(
            "the image does not decode ({})",
            sanitize(&e.to_string(), &[])
        )
    })?;
    Ok((format, image))
}

/// The memory a decode takes: the decoded image (`decoded` bytes) and what the decoder
/// keeps beside it for the whole image, as far as the header tells:
///
/// * a progressive JPEG keeps every DCT coefficient of every component until the last
///   scan, 2 bytes each ([`jpeg_coefficient_bytes`]); a baseline JPEG is decoded a row
///   of blocks at a time;
/// * the WebP decoder keeps a 4-byte-per-pixel frame beside the image (a lossless image
///   without alpha, an animation's canvas), or the YUV planes of a lossy one: counted
///   as 4 bytes per pixel;
/// * the PNG decoder works a row at a time (bounded by `Limits::max_alloc`).
fn decoding_bytes(format: ImageFormat, bytes: &[u8], width: u32, height: u32, decoded: u64) -> u64 {
    let pixels = u64::from(width) * u64::from(height);
    let scratch = match format {
        ImageFormat::Jpeg => jpeg_coefficient_bytes(bytes),
        ImageFormat::WebP => pixels * 4,
        _ => 0,
    };
    decoded + scratch
}

/// The coefficient memory of a progressive JPEG, from its frame header (SOF2, SOF6,
/// SOF10 or SOF14): per component, its share of the MCUs' 8x8 blocks at 2 bytes a
/// coefficient, as the decoder allocates it. 0 for a baseline JPEG, and for one whose
/// frame header cannot be found (the decoder refuses those).
fn jpeg_coefficient_bytes(bytes: &[u8]) -> u64 {
    let be16 = |at: usize| {
        bytes
            .get(at..at + 2)
            .map(|b| u16::from_be_bytes([b[0], b[1]]))
    };
    let mut at = 2; // after SOI
    while let (Some(&0xFF), Some(&marker)) = (bytes.get(at), bytes.get(at + 1)) {
        match marker {
            0xFF => at += 1,               // fill byte
            0x01 | 0xD0..=0xD8 => at += 2, // markers without a segment
            0xC0..=0xCF if !matches!(marker, 0xC4 | 0xC8 | 0xCC) => {
                if !matches!(marker, 0xC2 | 0xC6 | 0xCA | 0xCE) {
                    return 0;
                }
                return progressive_frame_bytes(bytes.get(at + 4..).unwrap_or_default());
            }
            0xD9 | 0xDA => return 0, // the end or a scan before any frame header
            _ => match be16(at + 2) {
                Some(length) => at += 2 + usize::from(length),
                None => return 0,
            },
        }
    }
    0
}

/// See [`jpeg_coefficient_bytes`]: `frame` is a frame header's content (precision,
/// height, width, component count, then 3 bytes per component: id, sampling, table).
fn progressive_frame_bytes(frame: &[u8]) -> u64 {
    let (Some(&[_, h0, h1, w0, w1, count]), Some(components)) = (
        frame.get(..6).and_then(|b| <&[u8; 6]>::try_from(b).ok()),
        frame.get(6..),
    ) else {
        return 0;
    };
    let (height, width) = (
        u64::from(u16::from_be_bytes([h0, h1])),
        u64::from(u16::from_be_bytes([w0, w1])),
    );
    let sampling: Vec<(u64, u64)> = components
        .chunks_exact(3)
        .take(usize::from(count))
        .map(|c| (u64::from(c[1] >> 4).max(1), u64::from(c[1] & 0x0F).max(1)))
        .collect();
    let h_max = sampling.iter().map(|s| s.0).max().unwrap_or(1);
    let v_max = sampling.iter().map(|s| s.1).max().unwrap_or(1);
    let mcus = width.div_ceil(8 * h_max) * height.div_ceil(8 * v_max);
    sampling.iter().map(|(h, v)| mcus * h * v * 64 * 2).sum()
}

/// The rectangle `(x, y, width, height)` of `image` scaled to exactly `width` x
/// `height`, as 8-bit RGB (transparency dropped), in bounded memory. Runs in an
/// [`ImageWork`] turn, on the image it decoded.
///
/// `image`'s Lanczos3 resize keeps an RGBA copy in 32-bit floats (16 bytes a pixel) of
/// the source's width times the target's height, larger than the decoded image itself
/// for a large source, and upscaling a sliver of an image to cover a target would make
/// it larger still. So the rectangle is cut out first (nothing is ever scaled beyond
/// the target), a reduction by half or more averages blocks of pixels
/// ([`imageops::thumbnail`], which allocates only its output: an area average, the
/// right filter for such reductions), and for a smaller reduction the decoded image is
/// dropped before the Lanczos3 pass runs on an 8-bit copy of the rectangle, at most
/// twice the target a side.
pub(crate) fn scale_to_rgb8(
    image: DynamicImage,
    (x, y, crop_width, crop_height): (u32, u32, u32, u32),
    width: u32,
    height: u32,
) -> RgbImage {
    let view = imageops::crop_imm(&image, x, y, crop_width, crop_height);
    if view.width() >= 2 * width && view.height() >= 2 * height {
        let reduced = imageops::thumbnail(&*view, width, height);
        return DynamicImage::ImageRgba8(reduced).into_rgb8();
    }
    let whole = (x, y, crop_width, crop_height) == (0, 0, image.width(), image.height());
    let rgb = if whole {
        image.into_rgb8()
    } else {
        let rgb = RgbImage::from_fn(view.width(), view.height(), |i, j| {
            view.get_pixel(i, j).to_rgb()
        });
        drop(image);
        rgb
    };
    if rgb.dimensions() == (width, height) {
        return rgb;
    }
    imageops::resize(&rgb, width, height, FilterType::Lanczos3)
}

fn host_of(url: &Url) -> String {
    url.host_str().unwrap_or("the image host").to_owned()
}

fn refused(policy: &PolicyError) -> FetchError {
    FetchError::Refused {
        reason: policy.to_string(),
    }
}

/// Maps a request that got no (complete) answer. The resolver's policy refusal
/// arrives wrapped in reqwest's connect error.
fn transport_error(url: &Url, err: &reqwest::Error) -> FetchError {
    if let Some(policy) = net::policy_violation(err) {
        return refused(policy);
    }
    let host = host_of(url);
    // Details (addresses, OS errors) go to the log, not to the producer.
    // (`describe_transport_error` uses the innermost cause, which does not repeat the URL.)
    tracing::debug!(%host, error = %describe_transport_error(err, Duration::ZERO), "image fetch failed");
    if err.is_timeout() {
        return FetchError::Unreachable {
            host,
            reason: "the connection timed out".to_owned(),
        };
    }
    let reason = if err.is_connect() {
        "could not connect"
    } else {
        "the connection failed"
    };
    FetchError::Unreachable {
        host,
        reason: reason.to_owned(),
    }
}

/// Why [`resolve_filtered`] found no address.
enum ResolveFailure {
    Lookup(std::io::Error),
    NonPublic(PolicyError),
}

/// Resolves `host` with the system resolver and keeps the addresses `is_public`
/// allows; fails when none is left.
async fn resolve_filtered(
    host: String,
    is_public: fn(IpAddr) -> bool,
) -> Result<Vec<SocketAddr>, ResolveFailure> {
    let resolved = tokio::net::lookup_host((host.as_str(), 0))
        .await
        .map_err(ResolveFailure::Lookup)?;
    let allowed: Vec<SocketAddr> = resolved.filter(|a| is_public(a.ip())).collect();
    if allowed.is_empty() {
        tracing::warn!(%host, "refused an image host that resolves only to non-public addresses");
        return Err(ResolveFailure::NonPublic(
            PolicyError::ResolvesToNonPublic { host },
        ));
    }
    Ok(allowed)
}

/// The connect-time resolver: [`net::PublicOnlyResolver`]'s rule with this fetcher's
/// classifier, so that the test of the redirect re-check can run the production code
/// path with loopback standing in for the internet.
#[derive(Debug, Clone, Copy)]
struct FilteringResolver {
    is_public: fn(IpAddr) -> bool,
}

impl Resolve for FilteringResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let host = name.as_str().to_owned();
        let is_public = self.is_public;
        Box::pin(async move {
            match resolve_filtered(host, is_public).await {
                Ok(addrs) => Ok(Box::new(addrs.into_iter()) as Addrs),
                Err(ResolveFailure::Lookup(e)) => Err(Box::new(e) as _),
                Err(ResolveFailure::NonPublic(policy)) => Err(Box::new(policy) as _),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    //! The redirect re-check, end to end through [`ImageFetcher::fetch`].
    //!
    //! The strict production policy cannot be exercised against a local server: it
    //! requires https and a public address, and a test server is neither. So these
    //! tests build the fetcher with the same code and a policy in which **127.0.0.2
    //! plays the public internet** and every other address (127.0.0.1, `localhost`,
    //! 169.254.169.254) is private, with plain http allowed. Everything else — the hop
    //! check, the filtering resolver, the manual redirect loop — is the production
    //! code. The strict policy's scheme rule and classification are tested through
    //! the public API (`tests/providers/fetch.rs`) and in [`crate::net`].

    use std::io::ErrorKind;
    use std::net::{Ipv4Addr, TcpListener};

    use wiremock::matchers::{method, path};
    use wiremock::{Mock, MockServer, ResponseTemplate};

    use super::*;

    const STAND_IN_PUBLIC: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);

    fn only_stand_in_is_public(ip: IpAddr) -> bool {
        ip == IpAddr::V4(STAND_IN_PUBLIC)
    }

    fn fetcher() -> ImageFetcher {
        let policy = AddressPolicy {
            https_only: false,
            is_public: Some(only_stand_in_is_public),
        };
        ImageFetcher::with_policy(FetchOptions::default(), policy).expect("fetcher")
    }

    /// A listener on a "private" address that records whether anything connected.
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

        /// A TCP connect completes in the kernel before the client goes on, so after
        /// the fetch returned any attempt is visible here without waiting.
        fn assert_untouched(&self) {
            match self.0.accept() {
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Ok((_, peer)) => panic!("something connected from {peer}"),
                Err(e) => panic!("accept failed: {e}"),
            }
        }
    }

    fn png(width: u32, height: u32) -> Vec<u8> {
        let image = DynamicImage::new_rgb8(width, height);
        let mut out = Cursor::new(Vec::new());
        image.write_to(&mut out, ImageFormat::Png).expect("encode");
        out.into_inner()
    }

    async fn stand_in_server() -> MockServer {
        let listener = TcpListener::bind((STAND_IN_PUBLIC, 0)).expect("bind 127.0.0.2");
        MockServer::builder().listener(listener).start().await
    }

    #[tokio::test]
    async fn the_stand_in_public_host_is_fetched() {
        // The control: without a redirect to a private address the fetch succeeds, so
        // the refusals below are the policy's doing.
        let server = stand_in_server().await;
        Mock::given(method("GET"))
            .and(path("/start"))
            .respond_with(ResponseTemplate::new(302).insert_header("location", "/image.png"))
            .mount(&server)
            .await;
        Mock::given(method("GET"))
            .and(path("/image.png"))
            .respond_with(ResponseTemplate::new(200).set_body_raw(png(3, 2), "image/png"))
            .mount(&server)
            .await;
        let image = fetcher()
            .fetch(&format!("{}/start", server.uri()))
            .await
            .expect("fetched");
        assert_eq!((image.width, image.height), (3, 2));
    }

    #[tokio::test]
    async fn every_redirect_hop_is_checked_again() {
        let tripwire = Tripwire::new();
        let port = tripwire.port();
        let targets = [
            // An IP literal outside the (stand-in) public internet: refused by the hop check.
            (
                format!("http://127.0.0.1:{port}/latest/meta-data/"),
                "127.0.0.1 is not a public address",
            ),
            (
                "http://169.254.169.254/latest/meta-data/".to_owned(),
                "169.254.169.254 is not a public address",
            ),
            // A name resolving only to private addresses: refused by the resolver at connect time.
            (
                format!("http://localhost:{port}/"),
                "localhost resolves only to non-public addresses",
            ),
            // A scheme the policy never allows.
            (
                "file:///etc/passwd".to_owned(),
                "only http and https URLs are supported",
            ),
        ];
        for (target, reason) in targets {
            let server = stand_in_server().await;
            Mock::given(method("GET"))
                .and(path("/image.png"))
                .respond_with(ResponseTemplate::new(302).insert_header("location", target.as_str()))
                .expect(1)
                .mount(&server)
                .await;
            let err = fetcher()
                .fetch(&format!("{}/image.png", server.uri()))
                .await
                .expect_err("must be refused");
            assert!(err.is_refused_by_policy(), "{target}: {err:?}");
            assert!(err.to_string().contains(reason), "{target}: {err}");
            assert!(!err.is_transient());
            tripwire.assert_untouched();
        }
    }

    #[tokio::test]
    async fn the_first_hop_is_checked_the_same_way() {
        let tripwire = Tripwire::new();
        for url in [
            format!("http://127.0.0.1:{}/", tripwire.port()),
            format!("http://localhost:{}/", tripwire.port()),
        ] {
            let err = fetcher().fetch(&url).await.expect_err("refused");
            assert!(err.is_refused_by_policy(), "{url}: {err:?}");
            tripwire.assert_untouched();
        }
        let err = fetcher()
            .precheck(&format!("http://localhost:{}/", tripwire.port()))
            .await
            .expect_err("refused at precheck");
        assert!(err.is_refused_by_policy(), "{err:?}");
    }
}

#[cfg(test)]
mod image_work_tests {
    //! The decoded-size budget (from the header, before decoding) and the process-wide
    //! limit on decodes and resizes at once.

    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Barrier, mpsc};

    use image::{Rgb, Rgba};

    use super::*;

    const BUDGET: u64 = ImageWork::DEFAULT_MAX_DECODED_BYTES;

    fn encoded(image: &DynamicImage, format: ImageFormat) -> Vec<u8> {
        let mut out = Cursor::new(Vec::new());
        image.write_to(&mut out, format).expect("encode");
        out.into_inner()
    }

    /// CRC-32 (IEEE) as PNG chunks use it.
    fn crc32(bytes: &[u8]) -> u32 {
        let mut crc = 0xffff_ffffu32;
        for &b in bytes {
            crc ^= u32::from(b);
            for _ in 0..8 {
                crc = if crc & 1 == 1 {
                    (crc >> 1) ^ 0xedb8_8320
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }

    /// A valid PNG header declaring `width` x `height` at `bit_depth` bits per channel of
    /// PNG colour type `color_type` (2 RGB, 6 RGBA), with no pixel data behind it: what a
    /// decoder would need is known, and any decode would fail.
    fn png_header(width: u32, height: u32, bit_depth: u8, color_type: u8) -> Vec<u8> {
        let mut png = encoded(&DynamicImage::new_rgb8(1, 1), ImageFormat::Png);
        // IHDR: length (8..12), type (12..16), width (16..20), height (20..24), bit depth
        // (24), colour type (25), …, CRC (29..33) over type and data.
        png[16..20].copy_from_slice(&width.to_be_bytes());
        png[20..24].copy_from_slice(&height.to_be_bytes());
        png[24] = bit_depth;
        png[25] = color_type;
        let crc = crc32(&png[12..29]);
        png[29..33].copy_from_slice(&crc.to_be_bytes());
        png
    }

    fn refusal(bytes: &[u8], budget: u64) -> String {
        match decode_checked(bytes, budget) {
            Err(reason) => reason,
            Ok((_, image)) => panic!("decoded {}x{}", image.width(), image.height()),
        }
    }

    #[test]
    fn decode_refuses_pixel_bombs_before_decoding() {
        // 10000x5000 (50 MP): refused from the header alone.
        assert_eq!(
            refusal(&png_header(10_000, 5_000, 8, 2), u64::MAX),
            "10000x5000 is more than 40 megapixels"
        );
        assert!(
            decode_checked(
                &encoded(&DynamicImage::new_rgb8(4, 4), ImageFormat::Png),
                BUDGET
            )
            .is_ok()
        );
        assert!(decode_checked(b"<html>", BUDGET).is_err());
    }

    #[test]
    fn the_decoded_size_budget_is_checked_from_the_header() {
        // 6000x6000 (36 MP, under the pixel cap) at 16-bit RGBA: 275 MiB decoded. Refused
        // with this reason, not "does not decode": nothing was decoded.
        assert_eq!(
            refusal(&png_header(6000, 6000, 16, 6), BUDGET),
            "6000x6000 at 8 bytes per pixel decodes to 275 MiB, more than the 128 MiB budget"
        );
        // The same pixels at 8-bit RGB (103 MiB) pass the budget and reach the decoder,
        // which finds no pixel data.
        let reason = refusal(&png_header(6000, 6000, 8, 2), BUDGET);
        assert!(reason.starts_with("the image does not decode"), "{reason}");

        // A real image is measured by its colour type: 64x64 at 16-bit RGBA is 32 KiB.
        let rgba16 = encoded(&DynamicImage::new_rgba16(64, 64), ImageFormat::Png);
        let (_, image) = decode_checked(&rgba16, 64 * 64 * 8).expect("exactly the budget");
        assert_eq!((image.width(), image.height()), (64, 64));
        assert!(decode_checked(&rgba16, 64 * 64 * 8 - 1).is_err());
        // A normal image passes the default budget.
        let photo = encoded(&DynamicImage::new_rgb8(1920, 1080), ImageFormat::Jpeg);
        assert!(decode_checked(&photo, BUDGET).is_ok());
    }

    /// A JPEG of `width` x `height` whose frame header says `sof` (0xC0 baseline, 0xC2
    /// progressive), from a real 16x16 one: the header is real, the scans are not.
    fn jpeg_declaring(sof: u8, width: u16, height: u16) -> Vec<u8> {
        let mut jpeg = encoded(&DynamicImage::new_rgb8(16, 16), ImageFormat::Jpeg);
        let at = jpeg
            .windows(2)
            .position(|w| w == [0xFF, 0xC0])
            .expect("a baseline frame header");
        jpeg[at + 1] = sof;
        jpeg[at + 5..at + 7].copy_from_slice(&height.to_be_bytes());
        jpeg[at + 7..at + 9].copy_from_slice(&width.to_be_bytes());
        jpeg
    }

    #[test]
    fn a_progressive_jpeg_counts_its_coefficients() {
        // SOI, an APP0 segment to skip, SOF2 for 6000x6000 YCbCr 4:2:0, EOI.
        let mut jpeg = vec![0xFF, 0xD8, 0xFF, 0xE0, 0x00, 0x04, 0x00, 0x00];
        jpeg.extend([0xFF, 0xC2, 0x00, 0x11, 0x08, 0x17, 0x70, 0x17, 0x70, 0x03]);
        jpeg.extend([
            0x01, 0x22, 0x00, 0x02, 0x11, 0x01, 0x03, 0x11, 0x01, 0xFF, 0xD9,
        ]);
        // 375x375 MCUs of 16x16 pixels: 4 luma blocks and 2 chroma blocks each, 64
        // coefficients of 2 bytes per block.
        assert_eq!(jpeg_coefficient_bytes(&jpeg), 375 * 375 * 6 * 64 * 2);
        jpeg[9] = 0xC0;
        assert_eq!(jpeg_coefficient_bytes(&jpeg), 0, "baseline");
        assert_eq!(jpeg_coefficient_bytes(b"\xFF\xD8\xFF"), 0, "truncated");

        // 640x480 decodes to 0.9 MiB: under a 1 MiB budget a baseline JPEG decodes (the
        // decoder fills in what its 16x16 scans do not cover), a progressive one is
        // refused for its coefficients.
        const ONE_MIB: u64 = 1024 * 1024;
        let (_, image) =
            decode_checked(&jpeg_declaring(0xC0, 640, 480), ONE_MIB).expect("baseline");
        assert_eq!((image.width(), image.height()), (640, 480));
        let progressive = refusal(&jpeg_declaring(0xC2, 640, 480), ONE_MIB);
        assert!(
            progressive.starts_with("640x480 at 3 bytes per pixel decodes to 1 MiB and needs ")
                && progressive.ends_with(
                    " MiB with the decoder's working memory, more than the 1 MiB budget"
                ),
            "{progressive}"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn never_more_than_max_concurrent_decodes_at_once() {
        const N: usize = 2;
        const TASKS: usize = 20;
        let work = ImageWork::new(N, BUDGET);
        let inside = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        // Work that cannot finish until N are inside together: proves N run at once
        // (the gate is not narrower); the atomic maximum proves no more ever did.
        let together = Arc::new(Barrier::new(N));
        let tasks: Vec<_> = (0..TASKS)
            .map(|_| {
                let (work, inside, most, together) =
                    (work.clone(), inside.clone(), most.clone(), together.clone());
                tokio::spawn(async move {
                    work.run(move || {
                        let now = inside.fetch_add(1, Ordering::SeqCst) + 1;
                        most.fetch_max(now, Ordering::SeqCst);
                        together.wait();
                        inside.fetch_sub(1, Ordering::SeqCst);
                    })
                    .await
                })
            })
            .collect();
        for task in tasks {
            task.await.expect("task").expect("ran");
        }
        assert_eq!(most.load(Ordering::SeqCst), N);
        assert_eq!(work.permits.available_permits(), N, "every turn given back");
    }

    #[tokio::test]
    async fn a_turn_is_held_until_the_work_ends_even_when_the_caller_gives_up() {
        let work = ImageWork::new(1, BUDGET);
        let (started, has_started) = tokio::sync::oneshot::channel();
        let (release, released) = mpsc::channel::<()>();
        let caller = tokio::spawn({
            let work = work.clone();
            async move {
                work.run(move || {
                    let _ = started.send(());
                    let _ = released.recv();
                })
                .await
            }
        });
        has_started.await.expect("the work started");
        caller.abort();
        assert!(caller.await.is_err_and(|e| e.is_cancelled()));
        // The caller is gone, its decode is not: the turn is still taken.
        assert_eq!(work.permits.available_permits(), 0);
        release.send(()).expect("the work waits");
        // The next turn comes once the work ended.
        work.run(|| ()).await.expect("a turn");
        assert_eq!(work.permits.available_permits(), 1);
    }

    #[tokio::test]
    async fn decode_maps_refusals_and_hands_over_the_image() {
        let work = ImageWork::default();
        let png = encoded(&DynamicImage::new_rgb8(3, 2), ImageFormat::Png);
        let size = work
            .decode(png.clone(), |bytes, format, image| {
                (bytes.len(), format, image.width(), image.height())
            })
            .await
            .expect("decoded");
        assert_eq!(size, (png.len(), ImageFormat::Png, 3, 2));
        let err = work
            .decode(png_header(6000, 6000, 16, 6), |_, _, _| ())
            .await
            .expect_err("over the budget");
        let job = err.to_job_error();
        assert_eq!(job.code, ErrorCode::InvalidRequest);
        assert!(
            job.message.contains("more than the 128 MiB budget"),
            "{job:?}"
        );
    }

    /// 60x20: red left and right thirds, green middle.
    fn banded() -> DynamicImage {
        DynamicImage::ImageRgba16(image::ImageBuffer::from_fn(60, 20, |x, _| {
            if (20..40).contains(&x) {
                Rgba([0, u16::MAX, 0, u16::MAX])
            } else {
                Rgba([u16::MAX, 0, 0, u16::MAX])
            }
        }))
    }

    #[test]
    fn scaling_cuts_the_rectangle_out_then_scales_it() {
        // The middle 20x20 (green), reduced to a quarter (area average) and enlarged
        // (Lanczos3): only green either way.
        for (width, height) in [(5, 5), (10, 10), (30, 30)] {
            let rgb = scale_to_rgb8(banded(), (20, 0, 20, 20), width, height);
            assert_eq!(rgb.dimensions(), (width, height));
            for pixel in rgb.pixels() {
                let Rgb([r, g, _]) = *pixel;
                assert!(r < 16 && g > 240, "{width}x{height}: {pixel:?}");
            }
        }
        // The whole image, unchanged in size: the same pixels at 8 bits.
        let whole = scale_to_rgb8(banded(), (0, 0, 60, 20), 60, 20);
        assert_eq!(whole.get_pixel(0, 0), &Rgb([255, 0, 0]));
        assert_eq!(whole.get_pixel(30, 10), &Rgb([0, 255, 0]));
    }
}
