//! The catalogue check every provider shares: each rule, and the field and
//! allowed values its error names.

use byok_core::{Catalogue, GenerationRequest, Mode, ProviderId, ValidationError};
use serde_json::json;

/// Two models shaped like the real ones: an image-only model with a fixed
/// length list, and a text+image model with a 1080p shape limited to 8 s.
fn catalogue() -> Catalogue {
    serde_json::from_value(json!({
        "models": [
            {
                "id": "img", "display_name": "Image only",
                "modes": ["image_to_video"],
                "prompt": { "text_to_video": "unsupported", "image_to_video": "optional", "max_chars": 20 },
                "durations": [5, 10], "default_duration": 5,
                "seed_max": 100,
                "formats": [
                    { "aspect_ratio": "16:9", "resolution": "720p", "wire": "1280:720" },
                    { "aspect_ratio": "9:16", "resolution": "720p", "wire": "720:1280" }
                ]
            },
            {
                "id": "both", "display_name": "Text and image",
                "modes": ["text_to_video", "image_to_video"],
                "prompt": { "text_to_video": "required", "image_to_video": "optional", "max_chars": 50 },
                "durations": [4, 6, 8], "default_duration": 4,
                "negative_prompt": true,
                "formats": [
                    { "aspect_ratio": "16:9", "resolution": "720p", "wire": "16:9" },
                    { "aspect_ratio": "1:1", "resolution": "720p", "wire": "1:1", "modes": ["image_to_video"] },
                    { "aspect_ratio": "16:9", "resolution": "1080p", "wire": "16:9", "durations": [8] }
                ]
            },
            {
                "id": "auto", "display_name": "Shape from the image",
                "modes": ["image_to_video"],
                "prompt": { "text_to_video": "unsupported", "image_to_video": "unsupported", "max_chars": 1 },
                "format_from_image": true,
                "formats": [
                    { "aspect_ratio": "16:9", "wire": "1024x576" },
                    { "aspect_ratio": "1:1", "wire": "768x768" }
                ]
            }
        ]
    }))
    .unwrap()
}

fn request(model: &str) -> GenerationRequest {
    serde_json::from_value(json!({
        "user_id": "0b6c1d2e-3f40-4a5b-8c6d-7e8f90a1b2c3",
        "provider": "runway",
        "model": model,
    }))
    .unwrap()
}

fn err(r: &GenerationRequest) -> ValidationError {
    catalogue().validate(r).unwrap_err()
}

#[test]
fn the_catalogue_is_coherent() {
    catalogue().check().unwrap();
}

#[test]
fn an_unknown_model_lists_the_models() {
    let e = err(&request("gen9"));
    assert_eq!(e.field, "model");
    assert_eq!(e.allowed, ["img", "both", "auto"]);
    assert!(e.message.contains("gen9"));
    let long = err(&request(&"x".repeat(500)));
    assert!(
        long.message.len() < 200,
        "echoed values are truncated: {}",
        long.message
    );
}

#[test]
fn the_mode_follows_image_url() {
    let e = err(&request("img"));
    assert_eq!(e.field, "image_url");
    assert!(e.message.contains("required"));

    let mut r = request("img");
    r.image_url = Some("https://example.com/a.png".into());
    let v = catalogue().validate(&r).unwrap();
    assert_eq!(v.mode, Mode::ImageToVideo);
    assert_eq!(v.duration_seconds, Some(5), "default duration");
    assert_eq!(
        v.format.unwrap().wire,
        "1280:720",
        "first format is the default"
    );
    assert_eq!(v.prompt, None);
}

#[test]
fn prompt_rules() {
    let e = err(&request("both"));
    assert_eq!(
        (e.field, e.message.contains("requires a prompt")),
        ("prompt", true)
    );

    let mut r = request("both");
    r.prompt = Some("   ".into());
    assert_eq!(err(&r).field, "prompt", "a blank prompt is no prompt");

    r.prompt = Some("y".repeat(51));
    assert!(err(&r).message.contains("longer than 50"));
    r.prompt = Some("é".repeat(50));
    assert!(
        catalogue().validate(&r).is_ok(),
        "the limit counts characters, not bytes"
    );
    r.prompt = Some("bell\u{7}".into());
    assert!(err(&r).message.contains("control"));
    r.prompt = Some("line one\nline two".into());
    assert!(catalogue().validate(&r).is_ok());

    let mut r = request("auto");
    r.image_url = Some("https://example.com/a.png".into());
    r.prompt = Some("a cat".into());
    assert_eq!(err(&r).field, "prompt");
}

#[test]
fn negative_prompt_and_seed_only_where_supported() {
    let mut r = request("img");
    r.image_url = Some("https://example.com/a.png".into());
    r.negative_prompt = Some("blur".into());
    assert_eq!(err(&r).field, "negative_prompt");
    r.negative_prompt = None;
    r.seed = Some(101);
    let e = err(&r);
    assert_eq!(
        (e.field, e.message.as_str()),
        ("seed", "must be between 0 and 100")
    );
    r.seed = Some(100);
    assert_eq!(catalogue().validate(&r).unwrap().seed, Some(100));

    let mut r = request("both");
    r.prompt = Some("a cat".into());
    r.seed = Some(1);
    assert_eq!(
        err(&r).field,
        "seed",
        "a model without seed_max takes no seed"
    );
    r.seed = None;
    r.negative_prompt = Some("blur".into());
    assert_eq!(
        catalogue().validate(&r).unwrap().negative_prompt.as_deref(),
        Some("blur")
    );
}

#[test]
fn durations_aspect_ratios_and_resolutions_name_the_allowed_values() {
    let mut r = request("both");
    r.prompt = Some("a cat".into());

    r.duration_seconds = Some(5);
    let e = err(&r);
    assert_eq!(
        (e.field, e.allowed.clone()),
        (
            "duration_seconds",
            vec!["4".to_owned(), "6".into(), "8".into()]
        )
    );

    r.duration_seconds = None;
    r.aspect_ratio = Some("1:1".into());
    let e = err(&r);
    assert_eq!(e.field, "aspect_ratio");
    assert_eq!(
        e.allowed,
        ["16:9"],
        "1:1 is offered for image-to-video only"
    );

    r.aspect_ratio = Some("16:9".into());
    r.resolution = Some("4k".into());
    let e = err(&r);
    assert_eq!(
        (e.field, e.allowed.clone()),
        ("resolution", vec!["720p".to_owned(), "1080p".into()])
    );

    // 1080p allows only 8 s: without a duration the shape's only length is used...
    r.resolution = Some("1080p".into());
    assert_eq!(catalogue().validate(&r).unwrap().duration_seconds, Some(8));
    // ...and another length names what the shape allows.
    r.duration_seconds = Some(4);
    let e = err(&r);
    assert_eq!(
        (e.field, e.allowed.clone()),
        ("duration_seconds", vec!["8".to_owned()])
    );
}

#[test]
fn a_shape_from_the_image_is_chosen_later_unless_asked_for() {
    let mut r = request("auto");
    r.image_url = Some("https://example.com/a.png".into());
    let v = catalogue().validate(&r).unwrap();
    assert_eq!((v.format, v.duration_seconds), (None, None));

    r.aspect_ratio = Some("1:1".into());
    assert_eq!(
        catalogue().validate(&r).unwrap().format.unwrap().wire,
        "768x768"
    );
    r.aspect_ratio = None;
    r.resolution = Some("720p".into());
    assert_eq!(err(&r).field, "resolution");
    r.resolution = None;
    r.duration_seconds = Some(4);
    assert_eq!(err(&r).field, "duration_seconds");
}

#[test]
fn incoherent_catalogues_are_refused() {
    let mut c = catalogue();
    c.models[0].default_duration = Some(7);
    assert!(c.check().unwrap_err().contains("default_duration"));
    let mut c = catalogue();
    c.models[1].formats.retain(|f| !f.modes.is_empty());
    c.models[1]
        .formats
        .iter_mut()
        .for_each(|f| f.modes = vec![Mode::ImageToVideo]);
    assert!(c.check().unwrap_err().contains("mode has no format"));
    assert!(Catalogue { models: vec![] }.check().is_err());
}

#[test]
fn the_request_body_is_strict() {
    let unknown = serde_json::from_value::<GenerationRequest>(json!({
        "user_id": "0b6c1d2e-3f40-4a5b-8c6d-7e8f90a1b2c3", "provider": "runway", "model": "x", "colour": "red"
    }));
    assert!(unknown.unwrap_err().to_string().contains("colour"));
    let r = request("x");
    assert_eq!(r.provider, ProviderId::RUNWAY);
    assert_eq!(r.metadata, json!({}));
}

/// `catalogue()` with its image-only model retired, pointing at `alternatives`.
fn with_retired_img(retirement: serde_json::Value) -> Catalogue {
    let mut raw = serde_json::to_value(catalogue()).unwrap();
    raw["models"][0]["status"] = json!("retired");
    raw["models"][0]["retirement"] = retirement;
    serde_json::from_value(raw).unwrap()
}

#[test]
fn a_retired_model_refuses_every_request_naming_the_day_the_notice_and_the_alternatives() {
    let c = with_retired_img(json!({
        "date": "2025-07-24", "source": "https://provider.example/notice",
        "alternatives": [{"provider": "fal", "model": "owner/app"}, {"provider": "replicate", "model": "owner/name"}],
    }));
    c.check().unwrap();
    let mut r = request("img");
    r.image_url = Some("https://images.example/a.png".into());
    let e = c.validate(&r).unwrap_err();
    assert_eq!(e.field, "model");
    let retirement = e.retired.as_ref().expect("marked as a retirement");
    assert_eq!(retirement.date, "2025-07-24");
    assert_eq!(retirement.alternatives.len(), 2);
    let message = e.to_string();
    for part in [
        "2025-07-24",
        "https://provider.example/notice",
        "fal `owner/app`",
        "replicate `owner/name`",
    ] {
        assert!(message.contains(part), "{part}: {message}");
    }
    // The other models are untouched, and an unknown model's list leaves the retired one out.
    assert!(
        c.validate(&request("auto"))
            .is_err_and(|e| e.retired.is_none())
    );
    let unknown = c.validate(&request("nope")).unwrap_err();
    assert!(!unknown.allowed.contains(&"img".to_owned()), "{unknown:?}");
    assert!(unknown.allowed.contains(&"both".to_owned()));
    // Listings show the status and the retirement; an available model says so too.
    let listed = serde_json::to_value(&c.models).unwrap();
    assert_eq!(listed[0]["status"], "retired");
    assert_eq!(
        listed[0]["retirement"]["source"],
        "https://provider.example/notice"
    );
    assert_eq!(listed[1]["status"], "available");
    assert!(listed[1].get("retirement").is_none());
}

#[test]
fn a_retirement_must_be_whole_and_only_on_a_retired_model() {
    let bad = |retirement: serde_json::Value| with_retired_img(retirement).check().unwrap_err();
    assert!(
        bad(json!({"date": "24/07/2025", "source": "https://x.example"})).contains("YYYY-MM-DD")
    );
    assert!(
        bad(json!({"date": "2025-13-01", "source": "https://x.example"})).contains("YYYY-MM-DD")
    );
    assert!(bad(json!({"date": "2025-07-24", "source": "a notice"})).contains("URL"));
    assert!(bad(serde_json::Value::Null).contains("needs a retirement"));
    let mut raw = serde_json::to_value(catalogue()).unwrap();
    raw["models"][1]["retirement"] = json!({"date": "2025-07-24", "source": "https://x.example"});
    let c: Catalogue = serde_json::from_value(raw).unwrap();
    assert!(
        c.check()
            .unwrap_err()
            .contains("only for a model whose status is retired")
    );
}

#[test]
fn wire_data_is_read_but_never_listed() {
    let mut raw = serde_json::to_value(catalogue()).unwrap();
    raw["models"][0]["wire"] = json!({"app": "owner/app", "fields": {"prompt": "text"}});
    let c: Catalogue = serde_json::from_value(raw).unwrap();
    assert_eq!(c.models[0].wire["app"], "owner/app");
    let listed = serde_json::to_value(&c.models[0]).unwrap();
    assert!(listed.get("wire").is_none(), "{listed}");
}
