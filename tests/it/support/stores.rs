//! The service suites run against every store: [`both_stores!`] turns one test body into a
//! `sqlite` and a `postgres` test, and [`Backend::open`] gives each its store (a fresh SQLite
//! in memory, or a throw-away PostgreSQL server of its own).

use std::sync::Arc;

use clusterctx::server::store::{postgres::PgStore, sqlite::SqliteStore, Store};

use super::postgres::Postgres;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A store, and the database server it needs kept alive.
pub struct Db {
    pub store: Arc<dyn Store>,
    pub _postgres: Option<Postgres>,
}

impl Backend {
    pub fn open(self) -> Db {
        match self {
            Backend::Sqlite => Db {
                store: Arc::new(SqliteStore::open_in_memory().unwrap()),
                _postgres: None,
            },
            Backend::Postgres => {
                let pg = Postgres::start();
                Db {
                    store: Arc::new(PgStore::open(&pg.url()).unwrap()),
                    _postgres: Some(pg),
                }
            }
        }
    }
}

/// `both_stores! { async fn name(backend: Backend) { ... } ... }`: a module `name` per
/// function with the tests `sqlite` and `postgres`.
macro_rules! both_stores {
    ($($(#[$meta:meta])* async fn $name:ident($backend:ident: Backend) $body:block)*) => {
        $(
            $(#[$meta])*
            mod $name {
                #[allow(unused_imports)]
                use super::*;

                async fn run($backend: $crate::support::stores::Backend) $body

                #[tokio::test]
                async fn sqlite() {
                    run($crate::support::stores::Backend::Sqlite).await
                }

                #[tokio::test]
                async fn postgres() {
                    run($crate::support::stores::Backend::Postgres).await
                }
            }
        )*
    };
}
pub(crate) use both_stores;
