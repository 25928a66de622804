//! The API's errors reach the caller typed, with their code, details and request id, and
//! the token shows nowhere.

use byok_client::{
    ApiErrorCode, Client, ClientError, GenerationRequest, ProviderId, PutCredentials,
};
use reqwest::StatusCode;
use serde_json::json;
use uuid::Uuid;

use crate::sqlite_api_with;

#[tokio::test]
async fn api_errors_surface_with_their_codes_and_never_the_token() {
    let api = sqlite_api_with(|_| {}).await;
    let client = api.client();
    let user = Uuid::new_v4();
    let mut errors: Vec<ClientError> = Vec::new();

    // An unknown token: 401, with the server's request id.
    let stranger = format!("byok_{}", "A".repeat(43));
    let unauthorized = api.client_once(&stranger).providers().await.unwrap_err();
    match &unauthorized {
        ClientError::Api {
            status,
            code,
            request_id,
            ..
        } => {
            assert_eq!(*status, StatusCode::UNAUTHORIZED);
            assert_eq!(*code, ApiErrorCode::Unauthorized);
            assert!(request_id.as_deref().is_some_and(|id| !id.is_empty()));
        }
        other => panic!("{other:?}"),
    }
    assert!(!format!("{unauthorized} {unauthorized:?}").contains(&stranger));
    errors.push(unauthorized);

    // No key stored for the job's provider.
    let request = GenerationRequest {
        prompt: Some("a harbour".into()),
        ..GenerationRequest::new(user, ProviderId::RUNWAY, "gen4.5")
    };
    let missing = client.create_job(&request, None).await.unwrap_err();
    assert_eq!(missing.code(), Some(ApiErrorCode::CredentialsMissing));
    assert_eq!(missing.status(), Some(StatusCode::UNPROCESSABLE_ENTITY));
    errors.push(missing);

    // A key the provider refuses: nothing stored, the provider's reason in the details.
    let refused = client
        .put_credentials(
            user,
            "runway",
            &PutCredentials::new(json!({ "api_key": "not-a-sim-key" })),
        )
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Some(ApiErrorCode::CredentialsInvalid));
    assert!(
        refused.details()["provider_reason"].is_string(),
        "{refused}"
    );
    assert!(!format!("{refused} {refused:?}").contains("not-a-sim-key"));
    errors.push(refused);

    // A retired model, with where its family is still offered.
    let retired = client
        .create_job(
            &GenerationRequest {
                image_url: Some("https://images.example/a.png".into()),
                ..GenerationRequest::new(user, ProviderId::STABILITY, "stable-video-diffusion")
            },
            None,
        )
        .await
        .unwrap_err();
    assert_eq!(
        retired.code(),
        Some(ApiErrorCode::ModelRetired),
        "{retired}"
    );
    assert_eq!(retired.details()["retired_on"], "2025-07-24");

    // A request the catalogue refuses names its field and the allowed values.
    client
        .put_credentials(
            user,
            "runway",
            &PutCredentials::new(json!({ "api_key": "sim_client_errors" })),
        )
        .await
        .unwrap();
    let too_long = client
        .create_job(
            &GenerationRequest {
                duration_seconds: Some(15),
                ..request.clone()
            },
            None,
        )
        .await
        .unwrap_err();
    assert_eq!(too_long.code(), Some(ApiErrorCode::InvalidRequest));
    assert_eq!(too_long.details()["field"], "duration_seconds");
    assert!(too_long.details()["allowed"].is_array(), "{too_long}");

    // Missing things, and a token without the scope a route needs.
    let no_job = client.get_job(Uuid::now_v7()).await.unwrap_err();
    assert_eq!(no_job.code(), Some(ApiErrorCode::NotFound));
    let no_provider = client.get_credentials(user, "sora").await.unwrap_err();
    assert_eq!(no_provider.code(), Some(ApiErrorCode::NotFound));
    let reader = api.builder(&api.token("jobs:read").await).build().unwrap();
    let scope = reader.create_job(&request, None).await.unwrap_err();
    assert_eq!(scope.code(), Some(ApiErrorCode::InsufficientScope));
    assert_eq!(scope.details()["scope"], "jobs:write");
    errors.extend([retired, too_long, no_job, no_provider, scope]);

    // A path segment is one segment, whatever it holds.
    let odd = client
        .get_credentials(user, "../../jobs")
        .await
        .unwrap_err();
    assert_eq!(odd.code(), Some(ApiErrorCode::NotFound), "{odd}");

    // Nothing the client prints holds the token.
    let debug = format!("{client:?} {:?}", api.builder(&api.token));
    assert!(debug.contains("[redacted]"), "{debug}");
    for text in errors.iter().map(|e| format!("{e} {e:?}")).chain([debug]) {
        assert!(!text.contains(&api.token), "{text}");
    }
}

#[tokio::test]
async fn unusable_settings_are_refused_before_any_request() {
    for (base, token) in [
        ("not a url", "byok_x"),
        ("ftp://example.com", "byok_x"),
        ("http://example.com/?q=1", "byok_x"),
        ("http://example.com", ""),
        ("http://example.com", "byok_\nsecret"),
    ] {
        let error = Client::new(base, token).unwrap_err();
        assert!(matches!(error, ClientError::Config(_)), "{base}: {error:?}");
        if token.len() > "byok_".len() {
            assert!(!error.to_string().contains("secret"), "{error}");
        }
    }
    // A path prefix (an API behind a proxy) is kept.
    let client = Client::new("http://127.0.0.1:9/byok/", "byok_x").unwrap();
    assert_eq!(client.base_url().path(), "/byok/");
    // Nothing listens there: a transport error, not a panic.
    let error = Client::builder("http://127.0.0.1:9", "byok_x")
        .retry(byok_client::RetryPolicy::none())
        .build()
        .unwrap()
        .providers()
        .await
        .unwrap_err();
    assert!(matches!(error, ClientError::Transport(_)), "{error:?}");
}
