//! A client for the Kubernetes Container Runtime Interface, `runtime.v1`
//! (what the kubelet speaks to containerd's CRI plugin), over a unix
//! socket. The messages and the `RuntimeService` / `ImageService` clients
//! are generated at build time from `proto/api.proto`, the CRI's published
//! API definition, by pure-Rust tools (no protoc needed).
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use berth_cri_client::{connect, v1};
//! let channel = connect("/run/containerd/containerd.sock").await?;
//! let mut runtime = v1::runtime_service_client::RuntimeServiceClient::new(channel);
//! let version = runtime.version(v1::VersionRequest::default()).await?.into_inner();
//! println!("{} {}", version.runtime_name, version.runtime_version);
//! # Ok(())
//! # }
//! ```

use std::path::{Path, PathBuf};

/// The gRPC crate the clients are built on (for `tonic::Status`,
/// `tonic::transport::Channel`).
pub use tonic;

/// The CRI `runtime.v1` API: messages, `runtime_service_client` and
/// `image_service_client` (generated; the proto's comments are the docs).
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod v1 {
    tonic::include_proto!("runtime.v1");
}

/// A gRPC channel to the CRI server listening on the unix socket `socket`
/// (connected now; fails with the socket's path when nothing listens).
pub async fn connect(socket: impl AsRef<Path>) -> Result<tonic::transport::Channel, String> {
    let socket: PathBuf = socket.as_ref().to_path_buf();
    let shown = socket.display().to_string();
    // The URI is required by the builder but unused: the connector below
    // always dials the socket.
    tonic::transport::Endpoint::from_static("http://localhost")
        .connect_with_connector(tower::service_fn(move |_: tonic::transport::Uri| {
            let socket = socket.clone();
            async move {
                let stream = tokio::net::UnixStream::connect(&socket).await?;
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
            }
        }))
        .await
        .map_err(|e| format!("connect to the CRI socket {shown}: {e}"))
}
