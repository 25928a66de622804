//! The registry, descriptors and options.

use std::time::Duration;

use byok_providers::{ProviderId, RateLimits, Registry, RegistryError, RegistryOptions};
use serde_json::{Value, json};

#[test]
fn defaults_are_the_real_hosts_and_seed_limits() {
    let options = RegistryOptions::defaults();
    assert_eq!(
        options.veo.base_url,
        "https://{location}-aiplatform.googleapis.com"
    );
    assert_eq!(options.runway.base_url, "https://api.dev.runwayml.com");
    assert_eq!(options.stability.base_url, "https://api.stability.ai");
    let limits = |per_minute, per_hour| RateLimits {
        per_minute,
        per_hour,
    };
    assert_eq!(options.veo.rate_limits, limits(10, 100));
    assert_eq!(options.runway.rate_limits, limits(5, 50));
    assert_eq!(options.stability.rate_limits, limits(3, 30));
    assert!(!options.allow_private_networks);
    assert_eq!(options.request_timeout, Duration::from_secs(30));
    Registry::new(&options).expect("defaults build");
}

#[test]
fn every_provider_is_present_in_order_with_its_descriptor() {
    let mut options = RegistryOptions::defaults();
    options.runway.rate_limits = RateLimits {
        per_minute: 7,
        per_hour: 70,
    };
    let registry = Registry::new(&options).unwrap();

    let ids: Vec<ProviderId> = registry.all().map(|p| p.id()).collect();
    assert_eq!(ids, ProviderId::ALL);
    for id in ProviderId::ALL {
        let provider = registry.get(id);
        assert_eq!(provider.id(), id);
        assert_eq!(provider.descriptor().id, id);
        assert_eq!(
            provider.descriptor().rate_limits,
            options.provider(id).rate_limits
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

#[test]
fn bad_base_urls_name_the_provider() {
    for (id, bad) in [
        (ProviderId::Runway, "api.dev.runwayml.com"),
        (ProviderId::Stability, "ftp://api.stability.ai"),
        (ProviderId::Veo, "https://{location}.example.com/?x=1"),
    ] {
        let mut options = RegistryOptions::defaults();
        match id {
            ProviderId::Veo => options.veo.base_url = bad.into(),
            ProviderId::Runway => options.runway.base_url = bad.into(),
            ProviderId::Stability => options.stability.base_url = bad.into(),
        }
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
    assert_send_sync(&registry.get(ProviderId::Veo));
}
