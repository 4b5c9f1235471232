//! Shared test fixtures: a MockHsm per test, the export probe, MockHsm served over HTTP, and a
//! loopback TCP proxy that can drop and refuse connections (a "connector restart").
#![allow(
    dead_code,
    unreachable_pub,
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used
)]

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use keywarden_vault::KeyRef;
use keywarden_vault::testing::{ExportAttempt, ExportProbe};
use keywarden_yubihsm::yubihsm::{
    Capability, Client, Connector, Credentials, Domain, HttpConfig, connector::http::Server,
    object, wrap,
};
use keywarden_yubihsm::{Config, ConnectorConfig, YubiHsmVault};

/// MockHsm's factory password for authentication key 1.
pub const MOCK_PASSWORD: &str = "password";

/// The wrap key the export probe uses.
pub const PROBE_WRAP_KEY: u16 = 0x0200;

pub fn mock_config() -> Config {
    Config::new(ConnectorConfig::MockHsm, MOCK_PASSWORD)
}

/// A fresh MockHsm and a vault on it.
pub async fn mock_vault() -> (YubiHsmVault, Connector) {
    let connector = Connector::mockhsm();
    let vault = YubiHsmVault::open_with_connector(&mock_config(), connector.clone())
        .await
        .expect("open a vault on MockHsm");
    (vault, connector)
}

/// A second client on the same device, as an attacker holding the (all-capable) factory
/// authentication key would have.
pub fn side_client(connector: &Connector) -> Client {
    Client::open(connector.clone(), Credentials::default(), true).expect("side client")
}

fn key_id(key: &KeyRef) -> u16 {
    u16::from_be_bytes(key.as_bytes().try_into().expect("a 2-byte object id"))
}

/// Every way a YubiHSM 2 offers to get a private key out: export under wrap (with a wrap key
/// that may export anything) and reading the object as opaque data.
pub fn export_probe(connector: &Connector) -> ExportProbe {
    let client = side_client(connector);
    client
        .generate_wrap_key(
            PROBE_WRAP_KEY,
            "probe-wrap".into(),
            Domain::all(),
            Capability::EXPORT_WRAPPED | Capability::IMPORT_WRAPPED,
            Capability::all(),
            wrap::Algorithm::Aes128Ccm,
        )
        .expect("probe wrap key");
    let client = Arc::new(Mutex::new(client));
    Arc::new(move |key: &KeyRef| {
        let id = key_id(key);
        let client = client.lock().unwrap();
        vec![
            ExportAttempt {
                method: format!(
                    "Export Wrapped (0x4a) of asymmetric key {id:04x} under wrap key {PROBE_WRAP_KEY:04x}"
                ),
                outcome: client
                    .export_wrapped(PROBE_WRAP_KEY, object::Type::AsymmetricKey, id)
                    .map(|m| m.ciphertext)
                    .map_err(|e| e.to_string()),
            },
            ExportAttempt {
                method: format!("Get Opaque Object (0x43) {id:04x}"),
                outcome: client.get_opaque(id).map_err(|e| e.to_string()),
            },
        ]
    })
}

/// A port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Serves `connector` (a MockHsm) the way yubihsm-connector does, on a free loopback port,
/// from a background thread that lives as long as the test process. Returns the port.
pub fn serve_http(connector: &Connector) -> u16 {
    for _ in 0..20 {
        let port = free_port();
        let config = HttpConfig {
            addr: "127.0.0.1".into(),
            port,
            timeout_ms: 5_000,
        };
        let Ok(server) = Server::new(&config, connector.clone()) else {
            continue;
        };
        thread::Builder::new()
            .name(format!("mockhsm-http-{port}"))
            .spawn(move || {
                loop {
                    // A failed request (e.g. a session the mock does not know) is dropped
                    // without an answer, as a restarted connector would; keep serving.
                    let _ = server.handle_request();
                }
            })
            .unwrap();
        return port;
    }
    panic!("no free loopback port for the MockHsm HTTP server");
}

/// A loopback TCP proxy in front of an HTTP server, which a test can take down (every open
/// connection is cut and new ones are refused) and bring back on the same port, or point at
/// another backend: what the adapter sees when yubihsm-connector restarts.
pub struct Proxy {
    pub port: u16,
    backend: Arc<AtomicU16>,
    up: Arc<AtomicBool>,
    listener: Mutex<Option<Arc<AtomicBool>>>,
    conns: Arc<Mutex<Vec<TcpStream>>>,
}

impl Proxy {
    pub fn start(backend_port: u16) -> Self {
        // Keep the first listener (no window for another process to take the port).
        let first = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = first.local_addr().unwrap().port();
        let proxy = Self {
            port,
            backend: Arc::new(AtomicU16::new(backend_port)),
            up: Arc::new(AtomicBool::new(false)),
            listener: Mutex::new(None),
            conns: Arc::new(Mutex::new(Vec::new())),
        };
        proxy.serve(first);
        proxy
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Points new connections at another backend port.
    pub fn retarget(&self, backend_port: u16) {
        self.backend.store(backend_port, Ordering::SeqCst);
    }

    /// Cuts every open connection and closes the listening socket.
    pub fn take_down(&self) {
        if let Some(stop) = self.listener.lock().unwrap().take() {
            stop.store(true, Ordering::SeqCst);
            // Wake the accept loop so it drops the listener.
            let _ = TcpStream::connect(("127.0.0.1", self.port));
        }
        for c in self.conns.lock().unwrap().drain(..) {
            let _ = c.shutdown(Shutdown::Both);
        }
        // Wait until the port refuses connections.
        for _ in 0..200 {
            if TcpStream::connect(("127.0.0.1", self.port)).is_err() {
                break;
            }
            thread::sleep(Duration::from_millis(10));
        }
        self.up.store(false, Ordering::SeqCst);
    }

    /// Listens again on the same port.
    pub fn bring_up(&self) {
        let mut listener = None;
        for _ in 0..200 {
            match TcpListener::bind(("127.0.0.1", self.port)) {
                Ok(l) => {
                    listener = Some(l);
                    break;
                }
                Err(_) => thread::sleep(Duration::from_millis(10)),
            }
        }
        self.serve(listener.expect("rebind the proxy port"));
    }

    fn serve(&self, listener: TcpListener) {
        let stop = Arc::new(AtomicBool::new(false));
        *self.listener.lock().unwrap() = Some(Arc::clone(&stop));
        self.up.store(true, Ordering::SeqCst);
        let backend = Arc::clone(&self.backend);
        let conns = Arc::clone(&self.conns);
        thread::spawn(move || {
            for client in listener.incoming() {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(client) = client else { continue };
                let Ok(server) = TcpStream::connect(("127.0.0.1", backend.load(Ordering::SeqCst)))
                else {
                    continue;
                };
                {
                    let mut conns = conns.lock().unwrap();
                    conns.push(client.try_clone().unwrap());
                    conns.push(server.try_clone().unwrap());
                }
                pipe(client.try_clone().unwrap(), server.try_clone().unwrap());
                pipe(server, client);
            }
        });
    }
}

fn pipe(mut from: TcpStream, mut to: TcpStream) {
    thread::spawn(move || {
        let mut buf = [0u8; 4096];
        loop {
            match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if to.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            }
        }
        let _ = to.shutdown(Shutdown::Write);
    });
}
