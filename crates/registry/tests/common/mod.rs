//! Helpers for the registry's API tests: an in-process server on
//! 127.0.0.1:0 over its own temporary storage, and push helpers.
#![allow(dead_code)]

use berth_registry::{config::Config, Server};
use reqwest::{Client, StatusCode};
use sha2::{Digest as _, Sha256};

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

pub struct TestRegistry {
    pub server: Option<Server>,
    pub dir: tempfile::TempDir,
    pub base: String,
    pub client: Client,
}

pub fn sha256(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

pub fn config_for(dir: &std::path::Path) -> Config {
    let mut c = Config {
        addr: "127.0.0.1:0".into(),
        ..Default::default()
    };
    c.storage.root = dir.join("storage");
    c.log.access = false;
    c.gc.enabled = false;
    c
}

impl TestRegistry {
    pub async fn start() -> TestRegistry {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(f: impl FnOnce(&mut Config)) -> TestRegistry {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut c = config_for(dir.path());
        f(&mut c);
        Self::start_in(dir, c).await
    }

    pub async fn start_in(dir: tempfile::TempDir, c: Config) -> TestRegistry {
        let server = berth_registry::start(c).await.expect("start registry");
        let base = format!("http://{}", server.addr());
        TestRegistry {
            server: Some(server),
            dir,
            base,
            client: Client::new(),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub async fn stop(&mut self) {
        if let Some(s) = self.server.take() {
            s.shutdown(std::time::Duration::from_secs(5)).await;
        }
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client.get(self.url(path)).send().await.unwrap()
    }

    pub async fn head(&self, path: &str) -> reqwest::Response {
        self.client.head(self.url(path)).send().await.unwrap()
    }

    pub async fn delete(&self, path: &str) -> reqwest::Response {
        self.client.delete(self.url(path)).send().await.unwrap()
    }

    pub async fn post(&self, path: &str) -> reqwest::Response {
        self.client.post(self.url(path)).send().await.unwrap()
    }

    /// A body-less request with a bearer token.
    pub async fn bearer(
        &self,
        method: reqwest::Method,
        path: &str,
        token: &str,
    ) -> reqwest::Response {
        self.client
            .request(method, self.url(path))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
    }

    /// PUT of an OCI image manifest (or `media_type`) body.
    pub async fn put_manifest(
        &self,
        path: &str,
        media_type: &str,
        body: impl Into<reqwest::Body>,
    ) -> reqwest::Response {
        self.client
            .put(self.url(path))
            .header("content-type", media_type)
            .body(body)
            .send()
            .await
            .unwrap()
    }

    /// Monolithic push; returns the digest.
    pub async fn push_blob(&self, repo: &str, data: &[u8]) -> String {
        let d = sha256(data);
        let r = self
            .client
            .post(self.url(&format!("/v2/{repo}/blobs/uploads/?digest={d}")))
            .body(data.to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(
            r.status(),
            StatusCode::CREATED,
            "{}",
            r.text().await.unwrap()
        );
        d
    }

    /// Pushes a config and one layer and an image manifest under `tag`;
    /// returns (manifest digest, manifest bytes, [config, layer] digests).
    pub async fn push_image(
        &self,
        repo: &str,
        tag: &str,
        seed: &str,
    ) -> (String, Vec<u8>, Vec<String>) {
        let config = format!("{{\"architecture\":\"amd64\",\"os\":\"linux\",\"seed\":\"{seed}\"}}");
        let layer = format!("layer-{seed}").repeat(100);
        let cd = self.push_blob(repo, config.as_bytes()).await;
        let ld = self.push_blob(repo, layer.as_bytes()).await;
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": config.len()},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": ld, "size": layer.len()}],
        });
        let body = serde_json::to_vec(&manifest).unwrap();
        let r = self
            .put_manifest(
                &format!("/v2/{repo}/manifests/{tag}"),
                OCI_MANIFEST,
                body.clone(),
            )
            .await;
        assert_eq!(
            r.status(),
            StatusCode::CREATED,
            "{}",
            r.text().await.unwrap()
        );
        (sha256(&body), body, vec![cd, ld])
    }
}

/// The spec error code of a response body.
pub async fn error_code(r: reqwest::Response) -> String {
    let v: serde_json::Value = r.json().await.expect("JSON error body");
    v["errors"][0]["code"].as_str().unwrap_or("").to_string()
}
