//! The shared registry suite on SQLite: on a file (with a second handle, as a second process
//! would open it) and in memory.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use keywarden_registry::testing::Harness;
use keywarden_registry::{Registry, SqliteRegistry};

mod file {
    use super::*;

    async fn harness() -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("registry.db");
        let registry: Arc<dyn Registry> = Arc::new(SqliteRegistry::open(&path).unwrap());
        Harness::new(registry, dir).with_reopen(move || {
            let path = path.clone();
            async move { Arc::new(SqliteRegistry::open(&path).unwrap()) as Arc<dyn Registry> }
        })
    }

    keywarden_registry::registry_tests!(harness);
}

mod memory {
    use super::*;

    async fn harness() -> Harness {
        Harness::new(Arc::new(SqliteRegistry::in_memory().unwrap()), ())
    }

    keywarden_registry::registry_tests!(harness);
}
