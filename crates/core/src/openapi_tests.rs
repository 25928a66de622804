//! The derived schemas (feature `openapi`) name what serde writes.

use utoipa::PartialSchema;

use crate::{ErrorCode, JobStatus, Mode, ProviderId, Requirement};

/// The `enum` of `T`'s schema.
fn schema_enum<T: PartialSchema>() -> Vec<String> {
    let schema = serde_json::to_value(T::schema()).unwrap();
    serde_json::from_value(schema["enum"].clone()).unwrap()
}

/// What serde writes for each of `values`.
fn serde_names<T: serde::Serialize>(values: &[T]) -> Vec<String> {
    values
        .iter()
        .map(|v| serde_json::from_value(serde_json::to_value(v).unwrap()).unwrap())
        .collect()
}

#[test]
fn string_enums_list_their_wire_names() {
    assert_eq!(schema_enum::<JobStatus>(), serde_names(&JobStatus::ALL));
    assert_eq!(
        schema_enum::<Mode>(),
        serde_names(&[Mode::TextToVideo, Mode::ImageToVideo])
    );
    assert_eq!(
        schema_enum::<crate::BudgetPeriod>(),
        serde_names(&crate::BudgetPeriod::ALL)
    );
    assert_eq!(
        schema_enum::<crate::RoutingStrategy>(),
        serde_names(&[
            crate::RoutingStrategy::Cheapest,
            crate::RoutingStrategy::Fastest
        ])
    );
    assert_eq!(
        schema_enum::<Requirement>(),
        serde_names(&[
            Requirement::Required,
            Requirement::Optional,
            Requirement::Unsupported
        ])
    );
    let codes = schema_enum::<ErrorCode>();
    assert_eq!(codes.len(), 12);
    for code in &codes {
        let parsed: ErrorCode = serde_json::from_value(code.as_str().into()).unwrap();
        assert_eq!(parsed.as_str(), code);
    }
}

#[test]
fn provider_ids_are_an_open_set_of_patterned_strings() {
    let schema = serde_json::to_value(ProviderId::schema()).unwrap();
    assert_eq!(schema["type"], "string");
    assert!(schema.get("enum").is_none(), "{schema}");
    let pattern = schema["pattern"].as_str().unwrap();
    assert_eq!(pattern, "^[a-z0-9_-]{1,40}$");
    for p in ProviderId::BUILT_IN {
        assert!(
            schema["description"]
                .as_str()
                .unwrap()
                .contains(&format!("`{p}`"))
        );
    }
}
