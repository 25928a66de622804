//! Users' provider keys: `/v1/users/{user_id}/providers…` (scopes `credentials:read`,
//! `credentials:write`). Answers carry hints, never keys.

use byok_core::{
    ConnectLinkView, CredentialList, CredentialSummary, CredentialTest, NewConnectLink,
    PutCredentials,
};
use reqwest::{Method, StatusCode};
use uuid::Uuid;

use crate::{Client, ClientError};

impl Client {
    /// Stores `user`'s key for `provider` (`PUT …/credentials`), replacing any earlier one.
    /// With `validate` (the default of [`PutCredentials::new`]) the provider checks it first:
    /// a key it refuses is a 422 `credentials_invalid` and nothing is stored; a provider
    /// that cannot be asked is a 503 `provider_unavailable` (retried by the policy).
    pub async fn put_credentials(
        &self,
        user: Uuid,
        provider: &str,
        body: &PutCredentials,
    ) -> Result<CredentialSummary, ClientError> {
        let user = user.to_string();
        self.call(
            Method::PUT,
            &["v1", "users", &user, "providers", provider, "credentials"],
        )
        .json(body)?
        .json_answer()
        .await
    }

    /// A single-use link to this service's page where `user` types their own `provider` key
    /// (`POST …/connect-links`, docs/connect.md): send the user to its `url`; they come back
    /// to `return_url` (one of the project's return URLs, or under one). Sent once: a retry
    /// would make a second link.
    pub async fn create_connect_link(
        &self,
        user: Uuid,
        provider: &str,
        return_url: &str,
    ) -> Result<ConnectLinkView, ClientError> {
        let user = user.to_string();
        let body = NewConnectLink {
            return_url: return_url.to_owned(),
        };
        self.call(
            Method::POST,
            &["v1", "users", &user, "providers", provider, "connect-links"],
        )
        .json(&body)?
        .once()
        .json_answer()
        .await
    }

    /// The summary of `user`'s key for `provider`; a 404 `not_found` when none is stored.
    pub async fn get_credentials(
        &self,
        user: Uuid,
        provider: &str,
    ) -> Result<CredentialSummary, ClientError> {
        let user = user.to_string();
        self.call(Method::GET, &["v1", "users", &user, "providers", provider])
            .json_answer()
            .await
    }

    /// One summary per provider of the deployment (`connected: false` where `user` has no
    /// key).
    pub async fn list_credentials(&self, user: Uuid) -> Result<CredentialList, ClientError> {
        let user = user.to_string();
        self.call(Method::GET, &["v1", "users", &user, "providers"])
            .json_answer()
            .await
    }

    /// Asks the provider about the stored key again (`POST …/test`) and records the
    /// verdict: the updated summary and `check` (`valid`, `rejected` or `unreadable`).
    pub async fn test_credentials(
        &self,
        user: Uuid,
        provider: &str,
    ) -> Result<CredentialTest, ClientError> {
        let user = user.to_string();
        // A re-check: repeating it changes nothing a first one would not.
        self.call(
            Method::POST,
            &["v1", "users", &user, "providers", provider, "test"],
        )
        .json_answer()
        .await
    }

    /// Deletes `user`'s key for `provider`; a 404 `not_found` when none is stored (also on
    /// a retry whose first attempt deleted it).
    pub async fn delete_credentials(&self, user: Uuid, provider: &str) -> Result<(), ClientError> {
        let user = user.to_string();
        let response = self
            .call(
                Method::DELETE,
                &["v1", "users", &user, "providers", provider],
            )
            .send()
            .await?;
        crate::client::expect_status(&response, StatusCode::NO_CONTENT)
    }
}
