//! The `outbox` table every service's migrations must create, as the relay and [`enqueue_many`]
//! read and write it. The services create it in their own migrations (one table per service
//! schema, so each service owns its rows); nothing but this module says what they must agree on,
//! and each service's `schema_invariants` test compares its migrated table with [`OUTBOX_COLUMNS`]
//! through [`outbox_table_differences`].
//!
//! What is pinned is what the code here relies on: the column names, their types and nullability,
//! the defaults [`enqueue_many`] leaves to the database (it inserts only the four event columns),
//! and the primary key on `id` (the relay reads oldest-first by `id` and deletes by `id`). CHECK
//! constraints are the services' own business and are not compared.
//!
//! [`enqueue_many`]: crate::outbox::enqueue_many

use sqlx::PgConnection;

/// One column of the outbox, as `information_schema.columns` describes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutboxColumn {
    pub name: &'static str,
    /// `information_schema.columns.data_type`, except that an array is its element type followed
    /// by `[]` (information_schema says only `ARRAY`).
    pub sql_type: &'static str,
    pub nullable: bool,
    pub default: ColumnDefault,
}

/// Where a column's value comes from when an insert leaves it out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnDefault {
    /// The insert must give it (or it is nullable and stays NULL).
    None,
    /// `GENERATED ALWAYS AS IDENTITY`.
    Identity,
    /// `DEFAULT <expression>`, as PostgreSQL prints it back in `column_default`.
    Expression(&'static str),
}

/// The outbox's columns in table order: one row per writing transaction, its events in the three
/// parallel arrays of `event_count` elements.
pub const OUTBOX_COLUMNS: &[OutboxColumn] = &[
    column("id", "bigint", false, ColumnDefault::Identity),
    column("message_ids", "uuid[]", false, ColumnDefault::None),
    column("routing_keys", "text[]", false, ColumnDefault::None),
    column("payloads", "bytea[]", false, ColumnDefault::None),
    column("event_count", "integer", false, ColumnDefault::None),
    column(
        "created_at",
        "timestamp with time zone",
        false,
        ColumnDefault::Expression("now()"),
    ),
    column("attempts", "integer", false, ColumnDefault::Expression("0")),
    column("last_error", "text", true, ColumnDefault::None),
];

/// The primary key's columns: the relay's order and the key it deletes by.
pub const OUTBOX_PRIMARY_KEY: &[&str] = &["id"];

const fn column(
    name: &'static str,
    sql_type: &'static str,
    nullable: bool,
    default: ColumnDefault,
) -> OutboxColumn {
    OutboxColumn {
        name,
        sql_type,
        nullable,
        default,
    }
}

/// `CREATE TABLE outbox (...)` with exactly [`OUTBOX_COLUMNS`] and [`OUTBOX_PRIMARY_KEY`], for
/// tests that exercise the relay without any service's migrations. Services write their own
/// migrations (with their CHECK constraints and comments) and are held to the same shape by
/// [`outbox_table_differences`].
pub fn create_outbox_table_sql() -> String {
    let mut columns: Vec<String> = OUTBOX_COLUMNS
        .iter()
        .map(|c| {
            let mut line = format!("{} {}", c.name, c.sql_type);
            match c.default {
                ColumnDefault::None => {}
                ColumnDefault::Identity => line.push_str(" GENERATED ALWAYS AS IDENTITY"),
                ColumnDefault::Expression(e) => {
                    line.push_str(" DEFAULT ");
                    line.push_str(e);
                }
            }
            if !c.nullable {
                line.push_str(" NOT NULL");
            }
            line
        })
        .collect();
    columns.push(format!("PRIMARY KEY ({})", OUTBOX_PRIMARY_KEY.join(", ")));
    format!("CREATE TABLE outbox ({})", columns.join(", "))
}

/// A column as the database has it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoundColumn {
    pub name: String,
    pub sql_type: String,
    pub nullable: bool,
    pub identity: bool,
    pub default: Option<String>,
}

/// The outbox of one schema as the database has it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FoundTable {
    /// In table order; empty if there is no `outbox` table in the schema.
    pub columns: Vec<FoundColumn>,
    pub primary_key: Vec<String>,
}

/// Reads the `outbox` table of the connection's current schema from `information_schema`.
pub async fn read_outbox_table(conn: &mut PgConnection) -> Result<FoundTable, sqlx::Error> {
    let rows: Vec<(String, String, String, String, Option<String>)> = sqlx::query_as(
        "SELECT column_name::text,
                CASE WHEN data_type = 'ARRAY' THEN substr(udt_name, 2) || '[]'
                     ELSE data_type END::text,
                is_nullable::text, is_identity::text, column_default::text
         FROM information_schema.columns
         WHERE table_schema = current_schema() AND table_name = 'outbox'
         ORDER BY ordinal_position",
    )
    .fetch_all(&mut *conn)
    .await?;
    let columns = rows
        .into_iter()
        .map(
            |(name, sql_type, nullable, identity, default)| FoundColumn {
                name,
                sql_type,
                nullable: nullable == "YES",
                identity: identity == "YES",
                default,
            },
        )
        .collect();
    let primary_key: Vec<String> = sqlx::query_scalar(
        "SELECT k.column_name::text
         FROM information_schema.table_constraints c
         JOIN information_schema.key_column_usage k
           ON k.constraint_schema = c.constraint_schema AND k.constraint_name = c.constraint_name
         WHERE c.table_schema = current_schema() AND c.table_name = 'outbox'
           AND c.constraint_type = 'PRIMARY KEY'
         ORDER BY k.ordinal_position",
    )
    .fetch_all(&mut *conn)
    .await?;
    Ok(FoundTable {
        columns,
        primary_key,
    })
}

/// Every way `found` differs from [`OUTBOX_COLUMNS`] and [`OUTBOX_PRIMARY_KEY`], one sentence each;
/// empty when the table is what the relay expects.
pub fn differences(found: &FoundTable) -> Vec<String> {
    if found.columns.is_empty() {
        return vec!["there is no outbox table in the schema".into()];
    }
    let mut out = Vec::new();
    for expected in OUTBOX_COLUMNS {
        let Some(actual) = found.columns.iter().find(|c| c.name == expected.name) else {
            out.push(format!("column {} is missing", expected.name));
            continue;
        };
        if actual.sql_type != expected.sql_type {
            out.push(format!(
                "column {} is {}, not {}",
                expected.name, actual.sql_type, expected.sql_type
            ));
        }
        if actual.nullable != expected.nullable {
            let (is, should) = if actual.nullable {
                ("nullable", "NOT NULL")
            } else {
                ("NOT NULL", "nullable")
            };
            out.push(format!("column {} is {is}, not {should}", expected.name));
        }
        let default_matches = match expected.default {
            ColumnDefault::None => !actual.identity && actual.default.is_none(),
            ColumnDefault::Identity => actual.identity,
            ColumnDefault::Expression(e) => {
                !actual.identity && actual.default.as_deref() == Some(e)
            }
        };
        if !default_matches {
            out.push(format!(
                "column {} has default {}, not {:?}",
                expected.name,
                match (&actual.default, actual.identity) {
                    (_, true) => "identity".to_owned(),
                    (Some(d), false) => d.clone(),
                    (None, false) => "none".to_owned(),
                },
                expected.default
            ));
        }
    }
    for extra in &found.columns {
        if !OUTBOX_COLUMNS.iter().any(|c| c.name == extra.name) {
            out.push(format!("column {} is not part of the outbox", extra.name));
        }
    }
    if found.primary_key != OUTBOX_PRIMARY_KEY {
        out.push(format!(
            "the primary key is ({}), not ({})",
            found.primary_key.join(", "),
            OUTBOX_PRIMARY_KEY.join(", ")
        ));
    }
    out
}

/// [`read_outbox_table`] and [`differences`]: what a service's migrations got wrong, if anything.
pub async fn outbox_table_differences(conn: &mut PgConnection) -> Result<Vec<String>, sqlx::Error> {
    Ok(differences(&read_outbox_table(conn).await?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn expected_table() -> FoundTable {
        FoundTable {
            columns: OUTBOX_COLUMNS
                .iter()
                .map(|c| FoundColumn {
                    name: c.name.into(),
                    sql_type: c.sql_type.into(),
                    nullable: c.nullable,
                    identity: c.default == ColumnDefault::Identity,
                    default: match c.default {
                        ColumnDefault::Expression(e) => Some(e.into()),
                        _ => None,
                    },
                })
                .collect(),
            primary_key: vec!["id".into()],
        }
    }

    #[test]
    fn the_expected_table_has_no_differences() {
        assert_eq!(differences(&expected_table()), Vec::<String>::new());
    }

    #[test]
    fn each_kind_of_drift_is_named() {
        let mut table = expected_table();
        table.columns[1].sql_type = "uuid".into();
        table.columns[7].nullable = false;
        table.columns[6].default = None;
        table.columns.remove(4);
        table.columns.push(FoundColumn {
            name: "published_at".into(),
            sql_type: "timestamp with time zone".into(),
            nullable: true,
            identity: false,
            default: None,
        });
        table.primary_key.clear();
        assert_eq!(
            differences(&table),
            vec![
                "column message_ids is uuid, not uuid[]",
                "column event_count is missing",
                "column attempts has default none, not Expression(\"0\")",
                "column last_error is NOT NULL, not nullable",
                "column published_at is not part of the outbox",
                "the primary key is (), not (id)",
            ]
        );
    }

    #[test]
    fn a_missing_table_is_one_difference() {
        assert_eq!(
            differences(&FoundTable::default()),
            vec!["there is no outbox table in the schema"]
        );
    }

    #[test]
    fn the_test_table_lists_every_column() {
        let sql = create_outbox_table_sql();
        for c in OUTBOX_COLUMNS {
            assert!(sql.contains(&format!("{} {}", c.name, c.sql_type)), "{sql}");
        }
        assert!(sql.ends_with("PRIMARY KEY (id))"), "{sql}");
    }
}
