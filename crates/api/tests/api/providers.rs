//! `GET /v1/providers`: the real content of the listing, the capability catalogue
//! with each model's lengths and shapes, the credential form fields and the rate limits
//! the deployment is configured with.

use byok_core::{Catalogue, ProviderId, RateLimits};
use byok_providers::{Registry, RegistryOptions};
use serde_json::{Value, json};

use crate::{sqlite_api, sqlite_api_with};

/// The listing's entry for `id`.
fn entry<'a>(body: &'a Value, id: &str) -> &'a Value {
    body["providers"]
        .as_array()
        .unwrap_or_else(|| panic!("no providers array: {body}"))
        .iter()
        .find(|p| p["id"] == id)
        .unwrap_or_else(|| panic!("no {id} in {body}"))
}

fn model_ids(provider: &Value) -> Vec<&str> {
    provider["models"]
        .as_array()
        .unwrap_or_else(|| panic!("no models: {provider}"))
        .iter()
        .map(|m| m["id"].as_str().expect("model id"))
        .collect()
}

fn model<'a>(provider: &'a Value, id: &str) -> &'a Value {
    provider["models"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["id"] == id)
        .unwrap_or_else(|| panic!("no model {id} in {provider}"))
}

/// `[name, required, secret, kind]` of each credential field, in display order.
fn fields(provider: &Value) -> Vec<Value> {
    provider["credential_fields"]
        .as_array()
        .unwrap_or_else(|| panic!("no credential_fields: {provider}"))
        .iter()
        .map(|f| {
            assert!(
                f["label"].as_str().is_some_and(|l| !l.is_empty())
                    && f["description"].as_str().is_some_and(|d| !d.is_empty()),
                "{f}"
            );
            json!([f["name"], f["required"], f["secret"], f["kind"]])
        })
        .collect()
}

#[tokio::test]
async fn the_listing_carries_each_providers_catalogue_fields_and_limits() {
    let api = sqlite_api().await;
    let (status, body) = api.get("/v1/providers").await;
    assert_eq!(status, 200, "{body}");
    let ids: Vec<&str> = body["providers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["veo", "runway", "stability", "fal", "replicate"]);

    // Every entry has exactly the documented members, and its models are the adapter's
    // catalogue (the built-in one: the test API configures no models).
    let built_in = Registry::new(&RegistryOptions::defaults()).unwrap();
    for id in ProviderId::BUILT_IN {
        let p = entry(&body, id.as_str());
        let mut keys: Vec<&str> = p.as_object().unwrap().keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(
            keys,
            [
                "capabilities",
                "credential_fields",
                "description",
                "display_name",
                "icon",
                "id",
                "models",
                "rate_limits",
                "status"
            ],
            "{id}"
        );
        assert!(
            p["description"].as_str().is_some_and(|d| d.len() > 20),
            "{p}"
        );
        assert_eq!(
            p["models"],
            serde_json::to_value(&built_in.get(id).unwrap().catalogue().models).unwrap(),
            "{id}"
        );
        // Every model says whether it can be used; a provider is available while one can.
        let statuses: Vec<&Value> = p["models"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| &m["status"])
            .collect();
        let expected = if id == ProviderId::STABILITY {
            "retired"
        } else {
            "available"
        };
        assert_eq!(p["status"], expected, "{id}");
        assert!(statuses.contains(&&json!(expected)), "{id}: {statuses:?}");
        // The test API configures 5/min and 50/h for every provider.
        assert_eq!(
            p["rate_limits"],
            json!({"per_minute": 5, "per_hour": 50}),
            "{id}"
        );
    }

    // Veo on Vertex AI: a service account; the 3.1 models, 4/6/8 s, 1080p only at 8 s.
    let veo = entry(&body, "veo");
    assert_eq!(
        (&veo["display_name"], &veo["icon"]),
        (&json!("Google Veo"), &json!("veo"))
    );
    assert_eq!(
        fields(veo),
        [
            json!(["service_account", true, true, "json"]),
            json!(["location", false, false, "string"])
        ]
    );
    assert_eq!(
        model_ids(veo),
        [
            "veo-3.1-generate-001",
            "veo-3.1-fast-generate-001",
            "veo-3.1-lite-generate-001",
            "gemini-omni-1.2-flash",
            "gemini-omni-1.1-flash-preview"
        ]
    );
    for id in model_ids(veo)
        .into_iter()
        .filter(|id| id.starts_with("veo-"))
    {
        let m = model(veo, id);
        assert_eq!(m["durations"], json!([4, 6, 8]), "{id}");
        assert_eq!(m["default_duration"], 8, "{id}");
        assert_eq!(
            m["modes"],
            json!(["text_to_video", "image_to_video"]),
            "{id}"
        );
        assert_eq!(
            (&m["negative_prompt"], &m["seed_max"]),
            (&json!(true), &json!(4294967295u64))
        );
        let at_1080p: Vec<&Value> = m["formats"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|f| f["resolution"] == "1080p")
            .collect();
        assert_eq!(at_1080p.len(), 2, "{id}");
        assert!(
            at_1080p.iter().all(|f| f["durations"] == json!([8])),
            "{id}"
        );
    }
    // Gemini Omni on the same service account: 3 to 15 s, 360p to 4K, a prompt always, no
    // negative prompt or seed (its request has neither).
    let omni = model(veo, "gemini-omni-1.2-flash");
    assert_eq!(omni["durations"], json!((3..=15).collect::<Vec<u32>>()));
    assert_eq!(
        (&omni["prompt"]["image_to_video"], &omni["negative_prompt"]),
        (&json!("required"), &json!(false))
    );
    assert!(omni.get("seed_max").is_none(), "{omni}");
    assert!(
        omni.get("wire").is_none(),
        "wire data is not listed: {omni}"
    );
    assert_eq!(
        veo["capabilities"],
        json!({"text_to_video": true, "image_to_video": true,
               "durations": (3..=15).collect::<Vec<u32>>(),
               "aspect_ratios": ["16:9", "9:16"], "resolutions": ["720p", "1080p", "360p", "4k"],
               "negative_prompt": true, "seed": true})
    );

    // Runway: an API key; Gen-4 Turbo (image only), Gen-4.5 and Veo through Runway, each
    // with its own lengths; ratios in pixels on the wire.
    let runway = entry(&body, "runway");
    assert_eq!(
        (&runway["display_name"], &runway["icon"]),
        (&json!("Runway ML"), &json!("runway"))
    );
    assert_eq!(
        fields(runway),
        [
            json!(["api_key", true, true, "string"]),
            json!(["organization_id", false, false, "string"])
        ]
    );
    assert_eq!(
        model_ids(runway),
        ["gen4_turbo", "gen4.5", "veo3.1", "veo3.1_fast"]
    );
    let two_to_ten = json!([2, 3, 4, 5, 6, 7, 8, 9, 10]);
    for (id, durations) in [
        ("gen4_turbo", two_to_ten.clone()),
        ("gen4.5", two_to_ten.clone()),
        ("veo3.1", json!([4, 6, 8])),
        ("veo3.1_fast", json!([4, 6, 8])),
    ] {
        assert_eq!(model(runway, id)["durations"], durations, "{id}");
    }
    let turbo = model(runway, "gen4_turbo");
    assert_eq!(turbo["modes"], json!(["image_to_video"]));
    assert_eq!(
        turbo["formats"][0],
        json!({"aspect_ratio": "16:9", "resolution": "720p", "wire": "1280:720"})
    );
    assert_eq!(
        runway["capabilities"],
        json!({"text_to_video": true, "image_to_video": true, "durations": two_to_ten,
               "aspect_ratios": ["16:9", "9:16", "4:3", "3:4", "1:1", "21:9"],
               "resolutions": ["720p", "1080p"], "negative_prompt": true, "seed": true})
    );
    assert!(
        !model_ids(runway).contains(&"gen3a_turbo"),
        "retired models are not offered"
    );

    // Stability: an API key (still stored and checked); its one video model retired on
    // 2025-07-24, with the notice and where the family is still offered; image to video
    // only, a fixed length, three input shapes, as it was.
    let stability = entry(&body, "stability");
    let svd = model(stability, "stable-video-diffusion");
    assert_eq!(svd["status"], "retired");
    assert_eq!(svd["retirement"]["date"], "2025-07-24");
    assert_eq!(
        svd["retirement"]["source"],
        "https://stability.ai/api-pricing-update-25"
    );
    let alternatives: Vec<&str> = svd["retirement"]["alternatives"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["provider"].as_str().unwrap())
        .collect();
    assert_eq!(alternatives, ["fal", "replicate"]);
    assert!(svd.get("wire").is_none(), "wire data is not listed: {svd}");
    assert_eq!(
        (&stability["display_name"], &stability["icon"]),
        (&json!("Stability AI"), &json!("stability"))
    );
    assert_eq!(
        fields(stability),
        [
            json!(["api_key", true, true, "string"]),
            json!(["organization_id", false, false, "string"])
        ]
    );
    assert_eq!(model_ids(stability), ["stable-video-diffusion"]);
    let svd = model(stability, "stable-video-diffusion");
    assert_eq!(svd["modes"], json!(["image_to_video"]));
    assert_eq!(svd["durations"], json!([]));
    assert!(svd.get("default_duration").is_none(), "{svd}");
    assert_eq!(svd["format_from_image"], true);
    let wires: Vec<&Value> = svd["formats"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| &f["wire"])
        .collect();
    assert_eq!(
        wires,
        [&json!("1024x576"), &json!("576x1024"), &json!("768x768")]
    );
    assert_eq!(
        stability["capabilities"],
        json!({"text_to_video": false, "image_to_video": true, "durations": [],
               "aspect_ratios": ["16:9", "9:16", "1:1"], "resolutions": [],
               "negative_prompt": false, "seed": true})
    );
}

#[tokio::test]
async fn the_listing_follows_the_configured_limits_and_models() {
    // What `providers.<id>.rate_limit.*` and `[[providers.runway.models]]` become.
    let models: Catalogue = serde_json::from_value(json!({"models": [{
        "id": "gen5_preview", "display_name": "Gen-5 Preview", "modes": ["text_to_video"],
        "prompt": {"text_to_video": "required", "image_to_video": "unsupported", "max_chars": 500},
        "durations": [6, 12], "default_duration": 6,
        "formats": [{"aspect_ratio": "16:9", "resolution": "1080p", "wire": "1920:1080"}],
    }]}))
    .unwrap();
    let api = sqlite_api_with(|s| {
        for (id, per_minute) in [
            (ProviderId::VEO, 11),
            (ProviderId::RUNWAY, 7),
            (ProviderId::STABILITY, 2),
        ] {
            s.providers.get_mut(id).unwrap().rate_limit = RateLimits {
                per_minute,
                per_hour: per_minute * 10,
            };
        }
        s.providers.get_mut(ProviderId::RUNWAY).unwrap().models = Some(models.models);
    })
    .await;

    let (status, body) = api.get("/v1/providers").await;
    assert_eq!(status, 200, "{body}");
    for (id, limits) in [
        ("veo", json!({"per_minute": 11, "per_hour": 110})),
        ("runway", json!({"per_minute": 7, "per_hour": 70})),
        ("stability", json!({"per_minute": 2, "per_hour": 20})),
    ] {
        assert_eq!(entry(&body, id)["rate_limits"], limits, "{id}");
    }
    let runway = entry(&body, "runway");
    assert_eq!(model_ids(runway), ["gen5_preview"]);
    assert_eq!(model(runway, "gen5_preview")["durations"], json!([6, 12]));
    assert_eq!(
        runway["capabilities"],
        json!({"text_to_video": true, "image_to_video": false, "durations": [6, 12],
               "aspect_ratios": ["16:9"], "resolutions": ["1080p"],
               "negative_prompt": false, "seed": false})
    );
    // The other providers keep their built-in models.
    let built_in = Registry::new(&RegistryOptions::defaults()).unwrap();
    for id in ProviderId::BUILT_IN
        .into_iter()
        .filter(|id| *id != ProviderId::RUNWAY)
    {
        assert_eq!(
            entry(&body, id.as_str())["models"],
            serde_json::to_value(&built_in.get(id).unwrap().catalogue().models).unwrap(),
            "{id}"
        );
    }
}
