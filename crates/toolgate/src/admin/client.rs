//! The command line's way to a running gateway: the admin API over HTTP, answering with the
//! same types and errors as the operations run directly on a state directory (`Admin`).

use reqwest::Method;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::{
    AdminError, GrantView, IssuedGrant, PolicyVersionView, ProblemView, Validation, VersionInfo,
};

pub struct AdminClient {
    base: String,
    token: String,
    http: reqwest::Client,
}

impl AdminClient {
    /// `url` is the gateway's base URL (`http://127.0.0.1:8080`).
    pub fn new(url: &str, token: &str) -> AdminClient {
        AdminClient {
            base: format!("{}{}", url.trim_end_matches('/'), super::api::PREFIX),
            token: token.to_string(),
            http: reqwest::Client::builder()
                .timeout(std::time::Duration::from_secs(30))
                .build()
                .expect("reqwest client builds"),
        }
    }

    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<String>,
    ) -> Result<T, AdminError> {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token);
        if let Some(b) = body {
            req = req.header("content-type", "application/json").body(b);
        }
        let resp = req.send().await.map_err(|e| {
            AdminError::Store(format!("cannot reach the gateway at {}: {e}", self.base))
        })?;
        let status = resp.status();
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| AdminError::Store(e.to_string()))?;
        if status.is_success() {
            return serde_json::from_slice(&bytes)
                .map_err(|e| AdminError::Store(format!("unexpected answer: {e}")));
        }
        let v: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        let message = v["error"]["message"]
            .as_str()
            .unwrap_or("the gateway refused")
            .to_string();
        Err(match (status.as_u16(), v["error"]["code"].as_str()) {
            (401, _) => AdminError::Invalid(format!(
                "{message} (check --admin-token / TOOLGATE_ADMIN_TOKEN)"
            )),
            (404, _) => AdminError::NotFound(message),
            (409, _) => AdminError::Conflict(message),
            (422, Some("invalid_policy")) => AdminError::Policy(
                serde_json::from_value::<Vec<ProblemView>>(v["error"]["problems"].clone())
                    .unwrap_or_default(),
            ),
            (400..=499, _) => AdminError::Invalid(message),
            _ => AdminError::Store(message),
        })
    }

    fn scoped(path: &str, grant: Option<&str>) -> String {
        match grant {
            Some(g) => format!("{path}?grant={}", utf8_percent(g)),
            None => path.to_string(),
        }
    }

    pub async fn create_grant(
        &self,
        server: &str,
        label: &str,
        policy: Option<&str>,
    ) -> Result<IssuedGrant, AdminError> {
        // The policy goes into the body as written, so that the gateway reads it strictly (a
        // key written twice is refused there, as on the state directory), not re-encoded here.
        let policy = policy.map_or("null", str::trim);
        let body = format!(
            r#"{{"server":{},"label":{},"policy":{policy}}}"#,
            Value::from(server),
            Value::from(label)
        );
        self.call(Method::POST, "/grants", Some(body)).await
    }

    pub async fn grants(&self) -> Result<Vec<GrantView>, AdminError> {
        self.call(Method::GET, "/grants", None).await
    }

    pub async fn rotate(&self, id: &str) -> Result<IssuedGrant, AdminError> {
        self.call(
            Method::POST,
            &format!("/grants/{}/rotate", utf8_percent(id)),
            None,
        )
        .await
    }

    pub async fn revoke(&self, id: &str) -> Result<GrantView, AdminError> {
        self.call(
            Method::POST,
            &format!("/grants/{}/revoke", utf8_percent(id)),
            None,
        )
        .await
    }

    pub async fn apply_policy(
        &self,
        server: &str,
        grant: Option<&str>,
        document: &str,
    ) -> Result<PolicyVersionView, AdminError> {
        let path = Self::scoped(&format!("/servers/{}/policy", utf8_percent(server)), grant);
        self.call(Method::PUT, &path, Some(document.to_string()))
            .await
    }

    pub async fn policy(
        &self,
        server: &str,
        grant: Option<&str>,
        version: Option<u64>,
    ) -> Result<PolicyVersionView, AdminError> {
        let path = match version {
            Some(v) => format!("/servers/{}/policy/versions/{v}", utf8_percent(server)),
            None => format!("/servers/{}/policy", utf8_percent(server)),
        };
        self.call(Method::GET, &Self::scoped(&path, grant), None)
            .await
    }

    pub async fn policy_versions(
        &self,
        server: &str,
        grant: Option<&str>,
    ) -> Result<Vec<VersionInfo>, AdminError> {
        let path = Self::scoped(
            &format!("/servers/{}/policy/versions", utf8_percent(server)),
            grant,
        );
        self.call(Method::GET, &path, None).await
    }

    pub async fn audit(
        &self,
        q: &crate::audit::Query,
    ) -> Result<Vec<crate::audit::AuditRecord>, AdminError> {
        let mut params = Vec::new();
        for (k, v) in [
            ("grant", &q.grant),
            ("tool", &q.tool),
            ("outcome", &q.outcome),
            ("since", &q.since),
            ("until", &q.until),
        ] {
            if let Some(v) = v {
                params.push(format!("{k}={}", utf8_percent(v)));
            }
        }
        if let Some(s) = q.after_seq {
            params.push(format!("after_seq={s}"));
        }
        params.push(format!("limit={}", q.limit.unwrap_or(100)));
        self.call(Method::GET, &format!("/audit?{}", params.join("&")), None)
            .await
    }

    pub async fn validate(&self, document: &str) -> Result<Validation, AdminError> {
        self.call(
            Method::POST,
            "/policies/validate",
            Some(document.to_string()),
        )
        .await
    }
}

/// Percent-encodes a path or query component.
fn utf8_percent(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
