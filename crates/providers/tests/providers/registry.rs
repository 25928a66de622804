//! The registry, descriptors and options.

use std::time::Duration;

use byok_core::{Catalogue, ModelSpec, RateLimits};
use byok_providers::{ProviderId, Registry, RegistryError, RegistryOptions, SubmitRequest};
use serde_json::{Value, json};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::support::{RUNWAY_KEY, generation_request, only_request};

#[test]
fn defaults_are_the_real_hosts_and_seed_limits() {
    let options = RegistryOptions::defaults();
    assert_eq!(
        options.provider(ProviderId::VEO).unwrap().base_url,
        "https://{location}-aiplatform.googleapis.com"
    );
    assert_eq!(
        options.provider(ProviderId::RUNWAY).unwrap().base_url,
        "https://api.dev.runwayml.com"
    );
    assert_eq!(
        options.provider(ProviderId::STABILITY).unwrap().base_url,
        "https://api.stability.ai"
    );
    let limits = |per_minute, per_hour| RateLimits {
        per_minute,
        per_hour,
    };
    assert_eq!(
        options.provider(ProviderId::VEO).unwrap().rate_limits,
        limits(10, 100)
    );
    assert_eq!(
        options.provider(ProviderId::RUNWAY).unwrap().rate_limits,
        limits(5, 50)
    );
    assert_eq!(
        options.provider(ProviderId::STABILITY).unwrap().rate_limits,
        limits(3, 30)
    );
    assert!(!options.allow_private_networks);
    assert_eq!(options.request_timeout, Duration::from_secs(30));
    Registry::new(&options).expect("defaults build");
}

#[test]
fn the_pacing_is_the_configured_one_and_a_quota_that_never_grants_is_refused() {
    let mut options = RegistryOptions::defaults();
    let runway = options.provider_mut(ProviderId::RUNWAY).unwrap();
    runway.rate_limits = RateLimits {
        per_minute: 7,
        per_hour: 70,
    };
    runway.poll_interval = Duration::from_millis(250);
    let registry = Registry::new(&options).unwrap();
    let pacing = registry.pacing(ProviderId::RUNWAY).unwrap();
    assert_eq!(pacing.rate_limits.per_minute, 7);
    assert_eq!(pacing.rate_limits.per_hour, 70);
    assert_eq!(pacing.poll_interval, Duration::from_millis(250));
    assert_eq!(
        registry.pacing(ProviderId::VEO).unwrap().poll_interval,
        ProviderId::VEO.defaults().unwrap().poll_interval
    );

    options
        .provider_mut(ProviderId::STABILITY)
        .unwrap()
        .rate_limits
        .per_minute = 0;
    let err = Registry::new(&options).unwrap_err();
    assert!(
        matches!(
            err,
            RegistryError::BadRateLimits {
                provider: ProviderId::STABILITY,
                field: "per_minute",
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        "providers.stability.rate_limit.per_minute: must be at least 1"
    );
}

#[test]
fn every_provider_is_present_in_order_with_its_descriptor() {
    let mut options = RegistryOptions::defaults();
    options
        .provider_mut(ProviderId::RUNWAY)
        .unwrap()
        .rate_limits = RateLimits {
        per_minute: 7,
        per_hour: 70,
    };
    let registry = Registry::new(&options).unwrap();

    let ids: Vec<ProviderId> = registry.all().map(|p| p.id()).collect();
    assert_eq!(ids, ProviderId::BUILT_IN);
    for id in ProviderId::BUILT_IN {
        let provider = registry.get(id).unwrap();
        assert_eq!(provider.id(), id);
        assert_eq!(provider.descriptor().id, id);
        assert_eq!(
            provider.descriptor().rate_limits,
            options.provider(id).unwrap().rate_limits
        );
    }

    let listing: Vec<Value> = registry
        .all()
        .map(|p| serde_json::to_value(p.descriptor()).unwrap())
        .collect();
    let summary: Vec<Value> = listing
        .iter()
        .map(|d| {
            let fields: Vec<Value> = d["credential_fields"]
                .as_array()
                .unwrap()
                .iter()
                .map(|f| json!([f["name"], f["required"], f["secret"], f["kind"]]))
                .collect();
            json!({"id": d["id"], "display_name": d["display_name"], "icon": d["icon"],
                   "fields": fields, "rate_limits": d["rate_limits"]})
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            json!({"id": "veo", "display_name": "Google Veo", "icon": "veo",
                   "fields": [["service_account", true, true, "json"], ["location", false, false, "string"]],
                   "rate_limits": {"per_minute": 10, "per_hour": 100}}),
            json!({"id": "runway", "display_name": "Runway ML", "icon": "runway",
                   "fields": [["api_key", true, true, "string"], ["organization_id", false, false, "string"]],
                   "rate_limits": {"per_minute": 7, "per_hour": 70}}),
            json!({"id": "stability", "display_name": "Stability AI", "icon": "stability",
                   "fields": [["api_key", true, true, "string"], ["organization_id", false, false, "string"]],
                   "rate_limits": {"per_minute": 3, "per_hour": 30}}),
            json!({"id": "fal", "display_name": "fal.ai", "icon": "fal",
                   "fields": [["api_key", true, true, "string"]],
                   "rate_limits": {"per_minute": 10, "per_hour": 200}}),
            json!({"id": "replicate", "display_name": "Replicate", "icon": "replicate",
                   "fields": [["api_key", true, true, "string"]],
                   "rate_limits": {"per_minute": 10, "per_hour": 200}}),
        ]
    );
    for descriptor in &listing {
        assert!(!descriptor["description"].as_str().unwrap().is_empty());
        for field in descriptor["credential_fields"].as_array().unwrap() {
            assert!(!field["label"].as_str().unwrap().is_empty());
            assert!(!field["description"].as_str().unwrap().is_empty());
        }
    }
}

/// `[[providers.<id>.prices]]` replace a model's prices (the listing carries them and the
/// estimate uses them); naming a model the catalogue lacks, naming one twice, or a
/// resolution the model does not make stops the registry naming the setting.
#[test]
fn configured_prices_replace_a_models_prices() {
    let price = |model: &str, per_second: Value| -> byok_core::ModelPrice {
        serde_json::from_value(json!({
            "model": model, "per_second": per_second,
            "source": "https://example.com/contract", "as_of": "2026-12-01",
        }))
        .unwrap()
    };
    let mut options = RegistryOptions::defaults();
    options.provider_mut(ProviderId::RUNWAY).unwrap().prices =
        vec![price("gen4_turbo", json!([{ "usd": 0.05 }]))];
    let registry = Registry::new(&options).unwrap();
    let runway = registry.get(ProviderId::RUNWAY).unwrap();
    let model = runway.catalogue().model("gen4_turbo").unwrap();
    let pricing = model.pricing.as_ref().expect("priced by configuration");
    assert_eq!(pricing.source, "https://example.com/contract");
    assert_eq!(
        pricing.estimate(Some(10), None),
        Some(byok_core::Usd::from_micros(500_000))
    );
    let listed = runway
        .descriptor()
        .models
        .iter()
        .find(|m| m.id == "gen4_turbo")
        .unwrap();
    assert_eq!(
        listed.pricing.as_ref(),
        Some(pricing),
        "the listing shows it"
    );

    for (prices, why) in [
        (
            vec![price("gen9", json!([{ "usd": 1 }]))],
            "no model `gen9`",
        ),
        (
            vec![
                price("gen4_turbo", json!([{ "usd": 1 }])),
                price("gen4_turbo", json!([{ "usd": 2 }])),
            ],
            "priced twice",
        ),
        (
            vec![price(
                "gen4_turbo",
                json!([{ "resolution": "8k", "usd": 1 }]),
            )],
            "does not make",
        ),
    ] {
        let mut options = RegistryOptions::defaults();
        options.provider_mut(ProviderId::RUNWAY).unwrap().prices = prices;
        let err = Registry::new(&options).unwrap_err().to_string();
        assert!(err.starts_with("providers.runway."), "{err}");
        assert!(err.contains(why), "{err}");
    }
}

#[test]
fn bad_base_urls_name_the_provider() {
    for (id, bad) in [
        (ProviderId::RUNWAY, "api.dev.runwayml.com"),
        (ProviderId::STABILITY, "ftp://api.stability.ai"),
        (ProviderId::VEO, "https://{location}.example.com/?x=1"),
    ] {
        let mut options = RegistryOptions::defaults();
        options.provider_mut(id).unwrap().base_url = bad.into();
        let err = Registry::new(&options).unwrap_err();
        assert!(
            matches!(&err, RegistryError::BadBaseUrl { provider, .. } if *provider == id),
            "{err:?}"
        );
        assert!(
            err.to_string()
                .starts_with(&format!("providers.{id}.base_url: ")),
            "{err}"
        );
    }
}

#[test]
fn registry_debug_shows_no_secrets_and_providers_are_shareable() {
    let registry = Registry::new(&RegistryOptions::defaults()).unwrap();
    let debug = format!("{registry:?}");
    assert!(debug.contains("Runway ML"), "{debug}");
    fn assert_send_sync<T: Send + Sync>(_: &T) {}
    assert_send_sync(&registry.get(ProviderId::VEO).unwrap());
}

/// `byok.toml` replacing Runway's models: a new model id, and one built-in (`gen4.5`)
/// kept with fewer lengths. `gen4_turbo` and the Veo-through-Runway models are gone.
const CONFIGURED_RUNWAY_MODELS: &str = r#"
[[providers.runway.models]]
id = "gen5_preview"
display_name = "Gen-5 Preview"
modes = ["text_to_video"]
prompt = { text_to_video = "required", image_to_video = "unsupported", max_chars = 500 }
durations = [6, 12]
default_duration = 6
seed_max = 1000
formats = [
  { aspect_ratio = "16:9", resolution = "1080p", wire = "1920:1080" },
]

[[providers.runway.models]]
id = "gen4.5"
display_name = "Gen-4.5"
modes = ["text_to_video"]
prompt = { text_to_video = "required", image_to_video = "unsupported", max_chars = 1000 }
durations = [5, 10]
default_duration = 5
formats = [
  { aspect_ratio = "16:9", resolution = "720p", wire = "1280:720" },
]
"#;

/// What `providers.runway.models` in the configuration becomes in [`RegistryOptions`]
/// (as crates/cli's `providers()` builds it: `Catalogue { models }`).
fn configured_runway_options() -> (RegistryOptions, Catalogue) {
    let config: toml::Table = toml::from_str(CONFIGURED_RUNWAY_MODELS).expect("TOML");
    let models: Vec<ModelSpec> = config["providers"]["runway"]["models"]
        .clone()
        .try_into()
        .expect("the configuration's model list");
    let catalogue = Catalogue { models };
    let mut options = RegistryOptions::defaults();
    options.provider_mut(ProviderId::RUNWAY).unwrap().models = Some(catalogue.clone());
    (options, catalogue)
}

#[test]
fn configured_models_replace_what_the_catalogue_accepts() {
    let built_in = Registry::new(&RegistryOptions::defaults()).unwrap();
    let (options, configured) = configured_runway_options();
    let registry = Registry::new(&options).unwrap();
    let runway = registry.get(ProviderId::RUNWAY).unwrap();
    assert_eq!(runway.catalogue(), &configured);
    let ids: Vec<&str> = runway
        .descriptor()
        .models
        .iter()
        .map(|m| m.id.as_str())
        .collect();
    assert_eq!(ids, ["gen5_preview", "gen4.5"]);
    assert_eq!(runway.descriptor().capabilities.durations, [5, 6, 10, 12]);
    assert!(!runway.descriptor().capabilities.image_to_video);

    // The configured model validates, with its own defaults and wire values.
    let request = generation_request(
        "runway",
        json!({"model": "gen5_preview", "prompt": "a fox"}),
    );
    assert!(
        built_in
            .get(ProviderId::RUNWAY)
            .unwrap()
            .validate(&request)
            .is_err()
    );
    let validated = runway.validate(&request).expect("a configured model");
    assert_eq!(validated.model, "gen5_preview");
    assert_eq!(validated.duration_seconds, Some(6));
    assert_eq!(
        validated.format.as_ref().map(|f| f.wire.as_str()),
        Some("1920:1080")
    );
    let err = runway
        .validate(&generation_request(
            "runway",
            json!({"model": "gen5_preview", "prompt": "a fox", "duration_seconds": 8}),
        ))
        .unwrap_err();
    assert_eq!(
        (err.field, err.allowed.as_slice()),
        ("duration_seconds", &["6".to_owned(), "12".to_owned()][..])
    );

    // A kept built-in model has the configured lengths, not the built-in ones.
    let seven = generation_request(
        "runway",
        json!({"model": "gen4.5", "prompt": "a fox", "duration_seconds": 7}),
    );
    assert!(
        built_in
            .get(ProviderId::RUNWAY)
            .unwrap()
            .validate(&seven)
            .is_ok()
    );
    let err = runway.validate(&seven).unwrap_err();
    assert_eq!(err.field, "duration_seconds", "{err:?}");

    // A removed built-in model is a validation error (the API's 422) naming `model` and
    // the configured models.
    let turbo = generation_request(
        "runway",
        json!({"model": "gen4_turbo", "image_url": "https://images.example/a.png"}),
    );
    assert!(
        built_in
            .get(ProviderId::RUNWAY)
            .unwrap()
            .validate(&turbo)
            .is_ok()
    );
    let err = runway.validate(&turbo).unwrap_err();
    assert_eq!(err.field, "model");
    assert_eq!(err.allowed, ["gen5_preview", "gen4.5"]);
    assert!(err.message.contains("gen4_turbo"), "{}", err.message);
    assert_eq!(
        serde_json::to_value(&err).unwrap()["allowed"],
        json!(["gen5_preview", "gen4.5"])
    );

    // Only Runway's list was replaced.
    for id in [ProviderId::VEO, ProviderId::STABILITY] {
        assert_eq!(
            registry.get(id).unwrap().catalogue(),
            built_in.get(id).unwrap().catalogue(),
            "{id}"
        );
    }
}

#[tokio::test]
async fn a_configured_model_is_sent_to_the_provider_as_configured() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/text_to_video"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"id": "task-1"})))
        .mount(&server)
        .await;
    let (mut options, _) = configured_runway_options();
    options.provider_mut(ProviderId::RUNWAY).unwrap().base_url = server.uri();
    options.allow_private_networks = true;
    let registry = Registry::new(&options).unwrap();
    let runway = registry.get(ProviderId::RUNWAY).unwrap();
    let credentials = runway
        .parse_credentials(&json!({"api_key": RUNWAY_KEY}))
        .unwrap();
    let validated = runway
        .validate(&generation_request(
            "runway",
            json!({"model": "gen5_preview", "prompt": "a fox", "duration_seconds": 12, "seed": 9}),
        ))
        .unwrap();
    let submitted = runway
        .submit(
            &credentials,
            SubmitRequest {
                request: &validated,
                image: None,
            },
        )
        .await
        .expect("submitted");
    assert_eq!(submitted.provider_job_id, "task-1");
    let request = only_request(&server).await;
    let body: Value = serde_json::from_slice(&request.body).unwrap();
    assert_eq!(
        body,
        json!({"model": "gen5_preview", "promptText": "a fox", "ratio": "1920:1080",
               "duration": 12, "seed": 9})
    );
}

#[test]
fn an_incoherent_configured_catalogue_names_the_setting() {
    let (mut options, mut catalogue) = configured_runway_options();
    catalogue.models[0].default_duration = Some(7);
    options.provider_mut(ProviderId::RUNWAY).unwrap().models = Some(catalogue);
    let err = Registry::new(&options).unwrap_err();
    assert!(
        matches!(&err, RegistryError::BadCatalogue { provider, .. } if *provider == ProviderId::RUNWAY),
        "{err:?}"
    );
    assert!(
        err.to_string()
            .starts_with("providers.runway.models: model `gen5_preview`"),
        "{err}"
    );

    options.provider_mut(ProviderId::RUNWAY).unwrap().models =
        Some(Catalogue { models: Vec::new() });
    let err = Registry::new(&options).unwrap_err();
    assert!(
        err.to_string().starts_with("providers.runway.models: "),
        "{err}"
    );
}

/// Stability's built-in catalogue with its model's alternatives replaced.
fn stability_pointing_at(alternatives: Value) -> Catalogue {
    let registry = Registry::new(&RegistryOptions::defaults()).unwrap();
    let mut catalogue = registry
        .get(ProviderId::STABILITY)
        .unwrap()
        .catalogue()
        .clone();
    let mut retirement = serde_json::to_value(catalogue.models[0].retirement.as_ref().unwrap())
        .expect("a retirement");
    retirement["alternatives"] = alternatives;
    catalogue.models[0].retirement = Some(serde_json::from_value(retirement).unwrap());
    catalogue
}

#[test]
fn stability_is_retired_and_its_alternatives_are_models_this_deployment_offers() {
    let registry = Registry::new(&RegistryOptions::defaults()).unwrap();
    let stability = registry.get(ProviderId::STABILITY).unwrap();
    assert_eq!(
        stability.descriptor().status,
        byok_core::ModelStatus::Retired
    );
    let err = stability
        .validate(&generation_request(
            "stability",
            json!({"model": "stable-video-diffusion", "image_url": "https://images.example/a.png"}),
        ))
        .unwrap_err();
    let retirement = err.retired.expect("a retirement");
    assert_eq!(retirement.date, "2025-07-24");
    for alternative in &retirement.alternatives {
        let offered = registry
            .get(alternative.provider)
            .unwrap()
            .catalogue()
            .model(&alternative.model)
            .map(|m| m.status);
        assert_eq!(
            offered,
            Some(byok_core::ModelStatus::Available),
            "{alternative}"
        );
    }
    for id in ProviderId::BUILT_IN
        .into_iter()
        .filter(|id| *id != ProviderId::STABILITY)
    {
        assert_eq!(
            registry.get(id).unwrap().descriptor().status,
            byok_core::ModelStatus::Available,
            "{id}"
        );
    }

    // An alternative this deployment does not offer stops the start, naming the model.
    for alternative in [
        json!([{"provider": "fal", "model": "no-such-app"}]),
        json!([{"provider": "stability", "model": "stable-video-diffusion"}]),
    ] {
        let mut options = RegistryOptions::defaults();
        options.provider_mut(ProviderId::STABILITY).unwrap().models =
            Some(stability_pointing_at(alternative.clone()));
        let err = Registry::new(&options).unwrap_err();
        assert!(
            matches!(&err, RegistryError::BadCatalogue { provider, .. } if *provider == ProviderId::STABILITY),
            "{err}"
        );
        assert!(
            err.to_string().contains("stable-video-diffusion")
                && err.to_string().contains("retirement.alternatives"),
            "{err}"
        );
    }
}
