//! A row the table refused: whether a Postgres error is about the row's data (only that message
//! is dead-lettered) or about the table or the server (the whole batch waits and is retried),
//! and the constraint and relation its message names.

/// The five-character SQLSTATE of Postgres' packed error code (MAKE_SQLSTATE: six bits a
/// character, the first in the lowest bits).
pub fn sqlstate(code: i32) -> String {
    (0..5).map(|i| char::from(b'0' + ((code >> (6 * i)) & 0x3F) as u8)).collect()
}

/// Classes of errors that another row would not meet: data exceptions (22), integrity
/// constraint violations (23: check, not null, unique, foreign key, exclusion, no partition for
/// the row), triggered action exceptions (09), triggered data change violations (27), WITH CHECK
/// OPTION violations (44), and what PL/pgSQL raises, as triggers do (P0). Every other class is
/// about the table, the session or the server: permission denied, a dropped table, a lock or
/// statement timeout, a serialization failure, a read-only transaction, disk or memory.
pub fn is_about_the_row(sqlstate: &str) -> bool {
    matches!(sqlstate.get(..2), Some("22" | "23" | "09" | "27" | "44" | "P0"))
}

/// The constraint and the relation an English Postgres message names:
/// `new row for relation "t" violates check constraint "c"`,
/// `duplicate key value violates unique constraint "c"`,
/// `insert or update on table "t" violates foreign key constraint "c"`,
/// `null value in column "x" of relation "t" violates not-null constraint`,
/// `no partition of relation "t" found for row`.
pub fn names(message: &str) -> (Option<String>, Option<String>) {
    let quoted_after = |marker: &str| {
        let start = message.find(marker)? + marker.len();
        let end = message[start..].find('"')?;
        Some(message[start..start + end].to_owned())
    };
    let relation = quoted_after("relation \"").or_else(|| quoted_after("table \""));
    (quoted_after("constraint \""), relation)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// MAKE_SQLSTATE as Postgres' elog.h defines it.
    fn make(s: &str) -> i32 {
        s.bytes().enumerate().map(|(i, c)| (((c - b'0') & 0x3F) as i32) << (6 * i)).sum()
    }

    #[test]
    fn sqlstates_unpack() {
        for s in ["23514", "23505", "22001", "P0001", "42501", "55P03", "57014", "40001", "XX000"] {
            assert_eq!(sqlstate(make(s)), s);
        }
    }

    #[test]
    fn row_errors_and_the_rest() {
        for s in
            ["23514", "23505", "23503", "23502", "23P01", "22001", "22P02", "P0001", "P0004", "09000", "27000", "44000"]
        {
            assert!(is_about_the_row(s), "{s}");
        }
        for s in ["42501", "42P01", "42703", "55P03", "57014", "40001", "40P01", "25006", "53100", "53200", "XX000", ""]
        {
            assert!(!is_about_the_row(s), "{s}");
        }
    }

    #[test]
    fn names_from_messages() {
        assert_eq!(
            names("new row for relation \"user_logins\" violates check constraint \"known_device\""),
            (Some("known_device".into()), Some("user_logins".into()))
        );
        assert_eq!(
            names("duplicate key value violates unique constraint \"one_login\""),
            (Some("one_login".into()), None)
        );
        assert_eq!(
            names("insert or update on table \"user_logins\" violates foreign key constraint \"fk_user\""),
            (Some("fk_user".into()), Some("user_logins".into()))
        );
        assert_eq!(
            names("null value in column \"locale\" of relation \"user_logins\" violates not-null constraint"),
            (None, Some("user_logins".into()))
        );
        assert_eq!(names("no partition of relation \"user_logins\" found for row"), (None, Some("user_logins".into())));
        assert_eq!(names("no locale for this user"), (None, None));
        assert_eq!(names("constraint \"unterminated"), (None, None));
    }
}
