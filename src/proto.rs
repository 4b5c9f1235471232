//! The gRPC API (`proto/keywarden/v1/keywarden.proto`), generated at build time.

/// Package `keywarden.v1`.
#[allow(missing_docs, unreachable_pub, clippy::all, clippy::pedantic)]
pub mod v1 {
    tonic::include_proto!("keywarden.v1");
}
