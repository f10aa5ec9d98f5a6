//! The schema migrations, compiled into the binary (`migrations/<backend>/NNNN_name.sql`),
//! and run by each backend's runner (`sqlite/migrate.rs`, `postgres/migrate.rs`).
//!
//! Relays before issue 17 ran them with sqlx, which keeps a ledger, `_sqlx_migrations`, of
//! each applied version with its description (the file name's words) and the SHA-384 of
//! its SQL. The runners keep that ledger as sqlx did, so databases migrated before keep
//! validating.

/// One migration: its version, sqlx's description (the file name's words) and its SQL.
pub(crate) struct Source {
    /// Its number (the file name's prefix).
    pub(crate) version: i64,
    /// The file name's words.
    pub(crate) description: &'static str,
    /// What it runs.
    pub(crate) sql: &'static str,
}

impl Source {
    /// The SHA-384 of its SQL, as sqlx recorded it in `_sqlx_migrations`.
    pub(crate) fn checksum(&self) -> [u8; 48] {
        use sha2::Digest;
        sha2::Sha384::digest(self.sql.as_bytes()).into()
    }
}

/// Checks one ledger row (`version`, `checksum`, `success`) against the migrations this
/// relay knows: each applied migration must be one of them, unchanged and complete.
pub(crate) fn check_applied(
    sources: &[Source],
    version: i64,
    checksum: &[u8],
    success: bool,
) -> super::StoreResult<()> {
    use super::StoreError;
    if !success {
        return Err(StoreError::Setup(format!(
            "migration {version} was left half-applied; repair the database by hand"
        )));
    }
    match sources.iter().find(|s| s.version == version) {
        Some(source) if source.checksum()[..] == *checksum => Ok(()),
        Some(_) => Err(StoreError::Setup(format!(
            "migration {version} applied to this database differs from this relay's"
        ))),
        None => Err(StoreError::Setup(format!(
            "the database has migration {version}, which this relay does not know: it was \
             written by a newer relay"
        ))),
    }
}

/// Every migration, oldest first, as `(version, file in migrations/<backend>/, sqlx's
/// description)`; each exists for both backends. Applied ones never change (their
/// checksums are stored in `_sqlx_migrations`); a schema change is a new pair of files and
/// a new line here.
macro_rules! migrations {
    ($(($version:literal, $file:literal, $description:literal)),* $(,)?) => {
        pub(crate) const SQLITE: &[Source] = &[$(Source {
            version: $version,
            description: $description,
            sql: include_str!(concat!("../../migrations/sqlite/", $file)),
        }),*];
        pub(crate) const POSTGRES: &[Source] = &[$(Source {
            version: $version,
            description: $description,
            sql: include_str!(concat!("../../migrations/postgres/", $file)),
        }),*];
    };
}

migrations!(
    (1, "0001_initial.sql", "initial"),
    (2, "0002_mailboxes.sql", "mailboxes"),
    (3, "0003_accounts.sql", "accounts"),
    (4, "0004_send_window.sql", "send window"),
    (5, "0005_lean_message_writes.sql", "lean message writes"),
);

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// The SHA-384 checksums deployed databases hold for the applied migrations (read from
    /// the `_sqlx_migrations` of databases that `sqlx::migrate!` set up): editing an applied
    /// migration would make every existing relay refuse to start.
    #[test]
    fn applied_migrations_keep_their_checksums() {
        let pinned: [(&[Source], i64, &str, &str); 10] = [
            (SQLITE, 1, "initial", SQLITE_1),
            (SQLITE, 2, "mailboxes", SQLITE_2),
            (SQLITE, 3, "accounts", SQLITE_3),
            (SQLITE, 4, "send window", SQLITE_4),
            (SQLITE, 5, "lean message writes", SQLITE_5),
            (POSTGRES, 1, "initial", POSTGRES_1),
            (POSTGRES, 2, "mailboxes", POSTGRES_2),
            (POSTGRES, 3, "accounts", POSTGRES_3),
            (POSTGRES, 4, "send window", POSTGRES_4),
            (POSTGRES, 5, "lean message writes", POSTGRES_5),
        ];
        for (sources, version, description, checksum) in pinned {
            let source = sources
                .iter()
                .find(|m| m.version == version)
                .expect("migration present");
            assert_eq!(source.description, description);
            assert_eq!(hex(&source.checksum()), checksum, "version {version}");
            assert!(!source.sql.starts_with("-- no-transaction"));
        }
    }

    #[test]
    fn backends_have_the_same_versions_in_order() {
        let versions =
            |sources: &[Source]| -> Vec<i64> { sources.iter().map(|m| m.version).collect() };
        assert_eq!(versions(SQLITE), versions(POSTGRES));
        assert!(versions(SQLITE).windows(2).all(|w| w[0] < w[1]));
    }

    const SQLITE_1: &str =
        "5e175683f556806a1e4e8476feba1779a6e7fe22fe88ec22419fe98beb1eaf20e8e3e262190caf029e767b2c324875f7";
    const SQLITE_2: &str =
        "40a741d616a245fce4eade3d58699ea56601770005cdf53afa645bf887d5d72a5306a93e0f31249a8f8c8f61827d3d96";
    const SQLITE_3: &str =
        "cb10854718d6c1a196003c39743d256177d0d387fc52c8dc5573feb7c10bd163db0ae2b4852b2695cf8fa223de79f79a";
    const SQLITE_4: &str =
        "02a7f37fdde06d20b9097003973974a1698f88a8e7d994168af96c31d84cc99eb1c9e33b20fc344127aa3fd2ac8e527a";
    const POSTGRES_1: &str =
        "f7cb7b7ddbf9d7b3e712afb349cf8d9aeb031d624fe669a66d6d75313598360e510d17dff1c34d52243f033f8a2909d9";
    const POSTGRES_2: &str =
        "962c07dcc4e82f5480c75483896ac5591ef0f3cb02862f47048605ec70d06668274c9f097427e67324121b1f26037ea6";
    const POSTGRES_3: &str =
        "1d6fe4a2c0466497b7fe19e09f3dbfd010e8677e71dc232287dbf843027e0b50595c3ed3ab25916321419d469073712f";
    const POSTGRES_4: &str =
        "894bea18990358787e29e67bb34823fde57f9b499aa889c80ae7b0665db9b2384e0b43cf3e2145953a074fa5888a06cd";
    const SQLITE_5: &str =
        "33d4c33d2d25ffd8a7a77b28f36f57ab89264750092a21e854a159ec81edd1776ff02e605046ed48a5b308ed979e95f4";
    const POSTGRES_5: &str =
        "da72e1099fadc865b8a3dd2f1285b9f46abe9ff2fdeb07186ce353bdbfcd07ead591417945f0479e25f488244465927d";
}
