//! The schema's migrations, embedded in the binary: one list of names for every dialect's
//! folder under `migrations/`. sqlx's `migrate!` would do the same for SQLite and
//! PostgreSQL, but its macros build every database driver (and SQLite's C) a second
//! time, for the compiler: most of a minute of a first build. A test checks the list
//! against the folders, as sqlx itself reads them.

use sqlx::SqlSafeStr;
use sqlx::migrate::{Migration, MigrationType, Migrator};
use std::borrow::Cow;

/// Every migration of `$dialect` (a folder under `migrations/`), oldest first, as
/// `(version, name, script)`.
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
        [$((
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

/// sqlx's migrator over `(version, name, script)`.
fn migrator(scripts: impl IntoIterator<Item = (i64, &'static str, &'static str)>) -> Migrator {
    Migrator::with_migrations(scripts.into_iter().map(|(version, name, sql)| migration(version, name, sql)).collect())
}

/// SQLite's migrations.
pub fn sqlite() -> Migrator {
    migrator(embedded!("sqlite"))
}

/// PostgreSQL's migrations.
#[cfg(feature = "postgres")]
pub fn postgres() -> Migrator {
    migrator(embedded!("postgres"))
}

/// SQL Server's scripts, `(version, name, T-SQL)`, which its store applies itself.
#[cfg(feature = "mssql")]
pub const MSSQL: &[(i64, &str, &str)] = &embedded!("mssql");

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
        #[cfg(feature = "mssql")]
        {
            let names: Vec<(i64, String)> = from_folder("mssql")
                .await
                .into_iter()
                .map(|(version, description, ..)| (version, description))
                .collect();
            let embedded: Vec<(i64, String)> =
                super::MSSQL.iter().map(|&(version, name, _)| (version, name.replace('_', " "))).collect();
            assert_eq!(embedded, names);
        }
    }

    /// A data folder an older wasaga migrated (through sqlx reading the folder, as its
    /// `migrate!` did) opens as it is: same checksums, nothing applied again.
    #[tokio::test]
    async fn a_database_migrated_from_the_folder_opens_unchanged() {
        use sqlx::Connection;
        let dir = tempfile::tempdir().expect("temp dir");
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("wasaga.db").display());
        let folder = Path::new(env!("CARGO_MANIFEST_DIR")).join("../migrations/sqlite");
        let mut conn = sqlx::SqliteConnection::connect(&url).await.expect("connect");
        sqlx::migrate::Migrator::new(folder).await.expect("folder").run(&mut conn).await.expect("migrated");
        let applied =
            "SELECT version, CAST(installed_on AS TEXT), hex(checksum) FROM _sqlx_migrations ORDER BY version";
        let before: Vec<(i64, String, String)> = sqlx::query_as(applied).fetch_all(&mut conn).await.expect("applied");
        super::sqlite().run(&mut conn).await.expect("the embedded migrations accept the older database");
        let after: Vec<(i64, String, String)> = sqlx::query_as(applied).fetch_all(&mut conn).await.expect("applied");
        assert_eq!(before.len(), super::sqlite().iter().count());
        assert_eq!(after, before, "nothing applied again");
    }
}
