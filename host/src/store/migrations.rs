//! The schema's migrations, embedded in the binary. sqlx's `migrate!` would do the same,
//! but its macros build every database driver (and SQLite's C) a second time, for the
//! compiler: most of a minute of a first build. A test checks this list against the
//! folders, as sqlx itself reads them.

use sqlx::SqlSafeStr;
use sqlx::migrate::{Migration, MigrationType, Migrator};
use std::borrow::Cow;

/// Every migration of `$dialect` (a folder under `migrations/`), oldest first.
macro_rules! embedded {
    ($dialect:literal) => {
        embedded!(@ $dialect;
            20261126000000 create_saga_tables,
            20261126120000 add_stream_cursor,
            20261127000000 add_versions_subscriptions_claims,
            20261127010000 add_fleet_registry,
            20261128000000 add_rollouts_pins_recordings,
            20261128010000 add_event_attempt_and_trace,
            20261205000000 check_every_order,
            20261206000000 add_timers,
        )
    };
    (@ $dialect:literal; $($version:literal $name:ident,)*) => {
        vec![$(migration(
            $version,
            stringify!($name),
            include_str!(concat!(
                env!("CARGO_MANIFEST_DIR"), "/../migrations/", $dialect, "/",
                stringify!($version), "_", stringify!($name), ".sql"
            )),
        )),*]
    };
}

/// One migration as sqlx reads it from `<version>_<name>.sql`.
fn migration(version: i64, name: &str, sql: &'static str) -> Migration {
    let no_tx = sql.starts_with("-- no-transaction");
    Migration::new(version, Cow::Owned(name.replace('_', " ")), MigrationType::Simple, sql.into_sql_str(), no_tx)
}

/// SQLite's migrations.
pub fn sqlite() -> Migrator {
    Migrator::with_migrations(embedded!("sqlite"))
}

/// PostgreSQL's migrations.
#[cfg(feature = "postgres")]
pub fn postgres() -> Migrator {
    Migrator::with_migrations(embedded!("postgres"))
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    /// What sqlx's own reader finds in the folder, with the checksums it would record.
    async fn from_folder(dialect: &str) -> Vec<(i64, String, Vec<u8>, bool)> {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../migrations").join(dialect);
        let migrator = sqlx::migrate::Migrator::new(dir).await.expect("the migrations folder reads");
        summary(&migrator)
    }

    fn summary(migrator: &sqlx::migrate::Migrator) -> Vec<(i64, String, Vec<u8>, bool)> {
        migrator.iter().map(|m| (m.version, m.description.to_string(), m.checksum.to_vec(), m.no_tx)).collect()
    }

    #[tokio::test]
    async fn the_embedded_migrations_are_the_folders_as_sqlx_reads_them() {
        assert_eq!(summary(&super::sqlite()), from_folder("sqlite").await);
        #[cfg(feature = "postgres")]
        assert_eq!(summary(&super::postgres()), from_folder("postgres").await);
    }
}
