//! Input images sent inline as data URIs (`data:<type>;base64,…`): Runway's `promptImage`,
//! fal's image inputs, Replicate's small files. The image the worker fetched and checked
//! travels with the request, so the provider never reaches the producer's URL (its URL rules
//! may be stricter than ours, and the image may have changed since), and what we checked is
//! what is used.
//!
//! A provider caps the size of such a URI; [`fitted`] re-encodes an image that is too big
//! rather than refusing it, with the limits and the refusal words left to each adapter.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use byok_core::{ErrorCode, JobError};
use image::codecs::jpeg::JpegEncoder;
use image::{DynamicImage, ImageFormat};

use crate::InputImage;
use crate::fetch::{self, ImageWork};
use crate::generation::internal;

/// `data:<mime>;base64,<bytes>`.
pub(crate) fn data_uri(mime: &str, bytes: &[u8]) -> String {
    format!("data:{mime};base64,{}", BASE64.encode(bytes))
}

/// The length of [`data_uri`] of `bytes` bytes, without encoding them.
fn data_uri_len(mime: &str, bytes: usize) -> usize {
    "data:;base64,".len() + mime.len() + bytes.div_ceil(3) * 4
}

/// The image as a data URI of at most `max_uri_bytes`, typed from its bytes (not from a
/// field someone may have set by hand): as it is when it fits, else re-encoded as a JPEG of
/// at most `max_side` pixels a side (quality 90, then 80 and 70; transparency dropped, JPEG
/// has none) in an `images` turn.
///
/// `Ok(None)`: even re-encoded it does not fit; the adapter refuses it in its own words
/// (`invalid_request`). An image that is not PNG, JPEG or WebP is `invalid_request`.
pub(crate) async fn fitted(
    images: &ImageWork,
    image: &InputImage,
    max_uri_bytes: usize,
    max_side: u32,
) -> Result<Option<String>, JobError> {
    let mime = match image::guess_format(&image.bytes) {
        Ok(format @ (ImageFormat::Png | ImageFormat::Jpeg | ImageFormat::WebP)) => {
            fetch::mime_of(format)
        }
        _ => {
            return Err(JobError::permanent(
                ErrorCode::InvalidRequest,
                "the input image is not a PNG, JPEG or WebP image",
            ));
        }
    };
    if data_uri_len(mime, image.bytes.len()) <= max_uri_bytes {
        return Ok(Some(data_uri(mime, &image.bytes)));
    }
    let shrunk = images
        .decode(image.bytes.clone(), move |_, _, decoded| {
            shrink(decoded, max_uri_bytes, max_side)
        })
        .await
        .map_err(|e| e.to_job_error())??;
    Ok(shrunk.map(|jpeg| data_uri("image/jpeg", &jpeg)))
}

/// Re-encodes an image too big for a data URI (see [`fitted`]), scaled down to fit
/// `max_side` when larger; `None` when no quality fits `max_uri_bytes`.
fn shrink(
    image: DynamicImage,
    max_uri_bytes: usize,
    max_side: u32,
) -> Result<Option<Vec<u8>>, JobError> {
    let (width, height) = (image.width(), image.height());
    let (to_width, to_height) = fit_within(width, height, max_side);
    let rgb = DynamicImage::ImageRgb8(fetch::scale_to_rgb8(
        image,
        (0, 0, width, height),
        to_width,
        to_height,
    ));
    for quality in [90, 80, 70] {
        let mut out = Vec::new();
        rgb.write_with_encoder(JpegEncoder::new_with_quality(&mut out, quality))
            .map_err(|e| internal(&format!("could not encode the input image: {e}")))?;
        if data_uri_len("image/jpeg", out.len()) <= max_uri_bytes {
            return Ok(Some(out));
        }
    }
    Ok(None)
}

/// `width` x `height` scaled down, aspect kept, to at most `max_side` pixels a side;
/// unchanged when it fits.
fn fit_within(width: u32, height: u32, max_side: u32) -> (u32, u32) {
    if width <= max_side && height <= max_side {
        return (width, height);
    }
    let ratio = f64::from(max_side) / f64::from(width.max(height));
    let scaled = |side: u32| ((f64::from(side) * ratio).round() as u32).clamp(1, max_side);
    (scaled(width), scaled(height))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_uri_len_is_the_length_of_the_uri() {
        for len in [0, 1, 2, 3, 4, 1000] {
            let bytes = vec![7u8; len];
            assert_eq!(
                data_uri_len("image/png", len),
                data_uri("image/png", &bytes).len()
            );
        }
    }

    #[test]
    fn sizes_are_fitted_within_the_longest_side() {
        assert_eq!(fit_within(1920, 1080, 2048), (1920, 1080));
        assert_eq!(fit_within(4096, 2048, 2048), (2048, 1024));
        assert_eq!(fit_within(1000, 4000, 2000), (500, 2000));
        assert_eq!(fit_within(10_000, 1, 100), (100, 1));
    }
}
