//! `GET /v1/providers`.

use byok_core::ProviderList;
use reqwest::Method;

use crate::provider_ids::Shape;
use crate::{Client, ClientError};

impl Client {
    /// Every provider of the deployment: its models and what each accepts, the fields of
    /// its `credentials` object, the per-key rate limits. Any token may ask. Providers the
    /// deployment defines by configuration are declared in this process as they are met
    /// ([`provider_id`](crate::provider_id)).
    pub async fn providers(&self) -> Result<ProviderList, ClientError> {
        let (list, _) = self
            .call(Method::GET, &["v1", "providers"])
            .json_with_providers(Shape::Providers)
            .await?;
        Ok(list)
    }
}
