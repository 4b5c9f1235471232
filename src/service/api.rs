//! The gRPC face of the service: translates requests, finds the caller, maps errors to status
//! codes with a one-line reason.

use std::sync::Arc;

use keywarden_registry::{KeyRecord, KeyState, VersionState};
use tonic::transport::server::UdsConnectInfo;
use tonic::{Request, Response, Status};

use crate::proto::v1 as pb;
use crate::proto::v1::key_service_server::KeyService;
use crate::service::identity::Caller;
use crate::service::tls::TlsPeer;
use crate::service::{Service, ServiceError};

/// The largest request the server decodes: a 1 MiB message plus room for the other fields. A
/// larger message is refused by the service with a reason naming the 1 MiB limit.
pub const MAX_REQUEST_BYTES: usize = keywarden_vault::MAX_MESSAGE_LEN * 2 + 64 * 1024;

/// The gRPC service over a [`Service`].
#[derive(Clone, Debug)]
pub struct Api {
    service: Arc<Service>,
}

impl Api {
    /// Wraps a service.
    pub fn new(service: Arc<Service>) -> Self {
        Self { service }
    }
}

fn caller<T>(request: &Request<T>) -> Result<Caller, Status> {
    // A TLS connection carries the identity its verified certificate named; a Unix socket
    // connection carries the kernel's peer credentials. Nothing else is believed.
    if let Some(TlsPeer(remote)) = request.extensions().get::<TlsPeer>() {
        return Ok(Caller::Remote(Arc::clone(remote)));
    }
    let info = request
        .extensions()
        .get::<UdsConnectInfo>()
        .ok_or_else(|| {
            Status::unauthenticated(
                "caller identity unavailable: neither a Unix socket nor a verified TLS client",
            )
        })?;
    let cred = info
        .peer_cred
        .ok_or_else(|| Status::unauthenticated("the kernel reported no peer credentials"))?;
    Ok(Caller::from_peer(cred.uid(), cred.gid(), cred.pid()))
}

/// Maps a service error to a gRPC status.
pub fn status(e: ServiceError) -> Status {
    use keywarden_registry::Error as R;
    use keywarden_vault::Error as V;
    let msg = e.to_string();
    match e {
        ServiceError::Vault(V::KeyNotFound(_))
        | ServiceError::Registry(R::NotFound(_))
        | ServiceError::Destroyed(_) => Status::not_found(msg),
        ServiceError::Vault(V::InvalidInput(_))
        | ServiceError::Invalid(_)
        | ServiceError::Registry(R::InvalidName(_)) => Status::invalid_argument(msg),
        ServiceError::Vault(V::UnsupportedAlgorithm(_)) => Status::failed_precondition(msg),
        ServiceError::Vault(V::PermissionDenied(_)) | ServiceError::Denied { .. } => {
            Status::permission_denied(msg)
        }
        ServiceError::Vault(V::DeviceUnavailable(_)) => Status::unavailable(msg),
        ServiceError::Registry(R::AlreadyExists(_)) => Status::already_exists(msg),
        ServiceError::Registry(R::WrongState { .. }) | ServiceError::FailedPrecondition(_) => {
            Status::failed_precondition(msg)
        }
        ServiceError::Audit(_) => Status::unavailable(msg),
        _ => Status::internal(msg),
    }
}

fn state_name(s: KeyState) -> String {
    s.to_string()
}

/// A registry record as the API shows it.
pub fn key_message(r: &KeyRecord) -> pb::Key {
    pb::Key {
        name: r.name.clone(),
        algorithm: r.algorithm.clone(),
        backend: r.backend.clone(),
        owner_uid: r.owner_uid,
        labels: r.labels.clone().into_iter().collect(),
        state: state_name(r.state),
        created_at: r.created_at,
        expires_at: r.expires_at,
        versions: r
            .versions
            .iter()
            .map(|v| pb::KeyVersion {
                version: v.version,
                state: match v.state {
                    VersionState::Pending => "pending",
                    VersionState::Ready => "ready",
                    VersionState::Destroyed => "destroyed",
                }
                .into(),
                public_key: v.public_key.clone().unwrap_or_default(),
                created_at: v.created_at,
            })
            .collect(),
    }
}

#[tonic::async_trait]
impl KeyService for Api {
    async fn create_key(
        &self,
        request: Request<pb::CreateKeyRequest>,
    ) -> Result<Response<pb::Key>, Status> {
        let caller = caller(&request)?;
        let r = request.into_inner();
        let backend = (!r.backend.is_empty()).then_some(r.backend.as_str());
        let rec = self
            .service
            .create(
                &caller,
                &r.name,
                &r.algorithm,
                backend,
                r.labels.into_iter().collect(),
                r.expires_at,
            )
            .await
            .map_err(status)?;
        Ok(Response::new(key_message(&rec)))
    }

    async fn get_key(&self, request: Request<pb::KeyName>) -> Result<Response<pb::Key>, Status> {
        let caller = caller(&request)?;
        let rec = self
            .service
            .get(&caller, &request.into_inner().name)
            .await
            .map_err(status)?;
        Ok(Response::new(key_message(&rec)))
    }

    async fn list_keys(
        &self,
        request: Request<pb::ListKeysRequest>,
    ) -> Result<Response<pb::ListKeysResponse>, Status> {
        let caller = caller(&request)?;
        let keys = self
            .service
            .list(&caller, request.into_inner().include_destroyed)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::ListKeysResponse {
            keys: keys.iter().map(key_message).collect(),
        }))
    }

    async fn get_public_key(
        &self,
        request: Request<pb::GetPublicKeyRequest>,
    ) -> Result<Response<pb::PublicKey>, Status> {
        let caller = caller(&request)?;
        let r = request.into_inner();
        let (version, algorithm, pk) = self
            .service
            .public_key(&caller, &r.name, r.version)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::PublicKey {
            name: r.name,
            version,
            algorithm: algorithm.name().into(),
            spki_der: pk.to_spki_der(),
        }))
    }

    async fn sign(
        &self,
        request: Request<pb::SignRequest>,
    ) -> Result<Response<pb::SignResponse>, Status> {
        let caller = caller(&request)?;
        let r = request.into_inner();
        let (sig, version) = self
            .service
            .sign(&caller, &r.name, &r.message)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::SignResponse {
            signature: sig.as_bytes().to_vec(),
            version,
            algorithm: sig.algorithm().name().into(),
        }))
    }

    async fn verify(
        &self,
        request: Request<pb::VerifyRequest>,
    ) -> Result<Response<pb::VerifyResponse>, Status> {
        let caller = caller(&request)?;
        let r = request.into_inner();
        let version = self
            .service
            .verify(&caller, &r.name, &r.message, &r.signature)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::VerifyResponse {
            valid: version.is_some(),
            version: version.unwrap_or(0),
        }))
    }

    async fn agree(
        &self,
        request: Request<pb::AgreeRequest>,
    ) -> Result<Response<pb::AgreeResponse>, Status> {
        let caller = caller(&request)?;
        let r = request.into_inner();
        let (secret, version) = self
            .service
            .agree(&caller, &r.name, &r.peer_public_key)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::AgreeResponse {
            shared_secret: secret.expose_secret().to_vec(),
            version,
        }))
    }

    async fn rotate_key(&self, request: Request<pb::KeyName>) -> Result<Response<pb::Key>, Status> {
        let caller = caller(&request)?;
        let rec = self
            .service
            .rotate(&caller, &request.into_inner().name)
            .await
            .map_err(status)?;
        Ok(Response::new(key_message(&rec)))
    }

    async fn disable_key(
        &self,
        request: Request<pb::KeyName>,
    ) -> Result<Response<pb::Key>, Status> {
        let caller = caller(&request)?;
        let rec = self
            .service
            .set_enabled(&caller, &request.into_inner().name, false)
            .await
            .map_err(status)?;
        Ok(Response::new(key_message(&rec)))
    }

    async fn enable_key(&self, request: Request<pb::KeyName>) -> Result<Response<pb::Key>, Status> {
        let caller = caller(&request)?;
        let rec = self
            .service
            .set_enabled(&caller, &request.into_inner().name, true)
            .await
            .map_err(status)?;
        Ok(Response::new(key_message(&rec)))
    }

    async fn destroy_key(
        &self,
        request: Request<pb::KeyName>,
    ) -> Result<Response<pb::Key>, Status> {
        let caller = caller(&request)?;
        let rec = self
            .service
            .destroy(&caller, &request.into_inner().name)
            .await
            .map_err(status)?;
        Ok(Response::new(key_message(&rec)))
    }

    async fn health(
        &self,
        _request: Request<pb::HealthRequest>,
    ) -> Result<Response<pb::HealthResponse>, Status> {
        let mut backends = Vec::new();
        for (name, b) in self.service.backends() {
            let info = b.vault.info();
            backends.push(pb::Backend {
                name: name.clone(),
                kind: b.kind.into(),
                algorithms: info
                    .algorithms
                    .iter()
                    .map(|a| a.name().to_owned())
                    .collect(),
                hardware_resident: info.hardware_resident,
                healthy: Service::backend_healthy(b).await,
                default_for: String::new(),
            });
        }
        Ok(Response::new(pb::HealthResponse {
            version: env!("CARGO_PKG_VERSION").into(),
            backends,
            default_backend: self.service.default_backend().to_owned(),
        }))
    }
}
