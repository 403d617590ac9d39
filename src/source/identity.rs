//! Named AWS identities (sqs_ingest.identities): IAM roles a superuser declares and grants, that
//! sources assume through STS instead of using the server's own credentials.
use super::Source;
use crate::errors::report;
use crate::plans;
use crate::role;
use crate::sqs::AssumeRole;
use pgrx::pg_sys::panic::ErrorReport;
use pgrx::prelude::*;
use pgrx::PgSqlErrorCode;
use std::fmt;

/// One row of sqs_ingest.identities.
#[derive(Debug, Clone, PartialEq)]
struct Identity {
    name: String,
    role_arn: String,
    external_id: Option<String>,
    session_name: Option<String>,
    region: Option<String>,
}

#[derive(Debug)]
pub enum IdentityError {
    NoExtension,
    /// The extension's SQL predates identities (before ALTER EXTENSION UPDATE to 0.7.0).
    NotYet,
    NotSuperuser(&'static str),
    Null(&'static str),
    Unknown(String),
    Exists(String),
    /// A field STS would refuse: which, the value, and what STS takes.
    Bad {
        field: &'static str,
        value: String,
    },
    NoRole(String),
    /// Sources still name it.
    InUse {
        identity: String,
        sources: Vec<String>,
    },
    /// The source's owner holds no USAGE on the identity (never had it, or lost it).
    NotGranted {
        identity: String,
        owner: String,
        source: String,
    },
    Spi(String),
}

impl fmt::Display for IdentityError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IdentityError::NoExtension => f.write_str("extension sqs_ingest is not created in this database"),
            IdentityError::NotYet => f.write_str("this database's sqs_ingest predates identities"),
            IdentityError::NotSuperuser(what) => write!(f, "must be superuser to {what} identities"),
            IdentityError::Null(what) => write!(f, "{what} must not be NULL"),
            IdentityError::Unknown(name) => write!(f, "identity \"{name}\" does not exist"),
            IdentityError::Exists(name) => write!(f, "identity \"{name}\" already exists"),
            IdentityError::Bad { field, value } => write!(f, "invalid {field} \"{value}\""),
            IdentityError::NoRole(role) => write!(f, "role \"{role}\" does not exist"),
            IdentityError::InUse { identity, sources } => {
                write!(f, "identity \"{identity}\" is used by source(s) {}", sources.join(", "))
            }
            IdentityError::NotGranted { identity, owner, source } => write!(
                f,
                "the owner of source \"{source}\" ({owner}) may not use identity \"{identity}\"; nothing is received until it may"
            ),
            IdentityError::Spi(error) => write!(f, "reading sqs_ingest.identities failed: {error}"),
        }
    }
}

impl From<IdentityError> for ErrorReport {
    fn from(e: IdentityError) -> Self {
        use PgSqlErrorCode::*;
        let (code, hint) = match &e {
            IdentityError::NoExtension => {
                (ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE, "Run CREATE EXTENSION sqs_ingest in this database.".to_owned())
            }
            IdentityError::NotYet => (
                ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
                "Update it (the library already is): ALTER EXTENSION sqs_ingest UPDATE;".to_owned(),
            ),
            IdentityError::NotSuperuser(_) => (
                ERRCODE_INSUFFICIENT_PRIVILEGE,
                "An identity lets its users act as an IAM role with the server's credentials: only a superuser declares and grants them (README, threat model).".to_owned(),
            ),
            IdentityError::Null(_) => (
                ERRCODE_NULL_VALUE_NOT_ALLOWED,
                "Give the identity's name and role_arn; external_id, session_name and region may be NULL.".to_owned(),
            ),
            IdentityError::Unknown(_) => {
                (ERRCODE_UNDEFINED_OBJECT, "SELECT name FROM sqs_ingest.identities lists the identities.".to_owned())
            }
            IdentityError::Exists(_) => (
                ERRCODE_DUPLICATE_OBJECT,
                "Change it with sqs_ingest.alter_identity, or choose another name.".to_owned(),
            ),
            IdentityError::Bad { field, .. } => (ERRCODE_INVALID_PARAMETER_VALUE, bounds(field).to_owned()),
            IdentityError::NoRole(_) => {
                (ERRCODE_UNDEFINED_OBJECT, "Name a role of this cluster (SELECT rolname FROM pg_roles).".to_owned())
            }
            IdentityError::InUse { identity, .. } => (
                ERRCODE_DEPENDENT_OBJECTS_STILL_EXIST,
                format!(
                    "Move those sources first: SELECT sqs_ingest.alter_source(name, identity => '') FROM sqs_ingest.sources WHERE identity = '{identity}';"
                ),
            ),
            IdentityError::NotGranted { identity, owner, .. } => (
                ERRCODE_INSUFFICIENT_PRIVILEGE,
                format!(
                    "A superuser grants it: SELECT sqs_ingest.grant_identity('{identity}', '{owner}'); The queue keeps the messages meanwhile."
                ),
            ),
            IdentityError::Spi(_) => (ERRCODE_INTERNAL_ERROR, "This is a bug of sqs_ingest; please report it.".to_owned()),
        };
        report(code, e.to_string(), &hint)
    }
}

/// What STS takes for `field` (its API reference's AssumeRole parameters).
fn bounds(field: &str) -> &'static str {
    match field {
        "identity name" => "An identity name has 1 to 63 letters, digits, '_', '-' or '.'.",
        "role_arn" => "An IAM role's ARN: arn:aws:iam::123456789012:role/name (or arn:aws-cn:, arn:aws-us-gov:).",
        "external_id" => "STS takes 2 to 1224 characters of letters, digits and +=,.@:/- as an external id.",
        "session_name" => "STS takes 2 to 64 characters of letters, digits and _+=,.@- as a role session name; NULL names the source and the cluster.",
        _ => "An AWS region name, e.g. eu-west-1; NULL: the queue's region.",
    }
}

/// Whether `value` is `min` to `max` characters, each a letter, a digit or one of `also`.
fn made_of(value: &str, min: usize, max: usize, also: &str) -> bool {
    (min..=max).contains(&value.len()) && value.chars().all(|c| c.is_ascii_alphanumeric() || also.contains(c))
}

impl Identity {
    /// The checks an identity passes before it is written, so that STS never sees a field it
    /// would refuse at a worker's first round instead of here.
    fn check(&self) -> Result<(), IdentityError> {
        let bad = |field, value: &str| Err(IdentityError::Bad { field, value: value.to_owned() });
        if !made_of(&self.name, 1, 63, "_-.") {
            return bad("identity name", &self.name);
        }
        let role = self.role_arn.split(':').collect::<Vec<_>>();
        let role_ok = matches!(role.as_slice(), ["arn", partition, "iam", "", account, resource]
            if partition.starts_with("aws")
                && account.len() == 12
                && account.bytes().all(|b| b.is_ascii_digit())
                && resource.strip_prefix("role/").is_some_and(|r| made_of(r, 1, 512, "_+=,.@-/")));
        if !role_ok {
            return bad("role_arn", &self.role_arn);
        }
        if let Some(id) = self.external_id.as_deref().filter(|id| !made_of(id, 2, 1224, "_+=,.@:/-")) {
            return bad("external_id", id);
        }
        if let Some(name) = self.session_name.as_deref().filter(|n| !made_of(n, 2, 64, "_+=,.@-")) {
            return bad("session_name", name);
        }
        if let Some(region) = self.region.as_deref().filter(|r| !made_of(r, 1, 32, "-")) {
            return bad("region", region);
        }
        Ok(())
    }

    /// The identity `name`.
    fn load(name: &str) -> Result<Identity, IdentityError> {
        if !in_catalog()? {
            return Err(IdentityError::NotYet);
        }
        let found = as_extension(|| {
            plans::read(
                "SELECT name, role_arn, external_id, session_name, region FROM sqs_ingest.identities WHERE name = $1",
                &[name.into()],
                |rows| {
                    rows.map(|r| {
                        Ok(Identity {
                            name: r.get(1)?.unwrap_or_default(),
                            role_arn: r.get(2)?.unwrap_or_default(),
                            external_id: r.get(3)?,
                            session_name: r.get(4)?,
                            region: r.get(5)?,
                        })
                    })
                    .collect::<Result<Vec<_>, pgrx::spi::SpiError>>()
                },
            )
        })?;
        found.into_iter().next().ok_or_else(|| IdentityError::Unknown(name.to_owned()))
    }

    /// Writes it with `sql`, whose parameters are its fields in their order of declaration.
    fn save(self, sql: &str) -> Result<(), IdentityError> {
        write(
            sql,
            &[
                self.name.into(),
                self.role_arn.into(),
                self.external_id.into(),
                self.session_name.into(),
                self.region.into(),
            ],
        )
    }

    /// Whether `role` may use this identity: a superuser, or a role with the privileges of one
    /// it was granted to (directly, or through membership with INHERIT, as GRANT USAGE works).
    fn usable_by(&self, role: pg_sys::Oid) -> Result<bool, IdentityError> {
        let grantees: Vec<pg_sys::Oid> = as_extension(|| {
            plans::read(
                "SELECT grantee::oid FROM sqs_ingest.identity_usage WHERE identity = $1",
                &[self.name.clone().into()],
                |rows| rows.map(|r| r.get(1).map(Option::unwrap_or_default)).collect(),
            )
        })?;
        // SAFETY: catalog lookups inside a transaction; a role that no longer exists is a member
        // of nothing and no superuser.
        Ok(unsafe { pg_sys::superuser_arg(role) }
            || grantees.into_iter().any(|g| unsafe { pg_sys::has_privs_of_role(role, g) }))
    }
}

/// Whether this database's extension has identities: before ALTER EXTENSION UPDATE to 0.7.0,
/// with the new library already loaded, it has neither their tables nor sources.identity.
pub fn in_catalog() -> Result<bool, IdentityError> {
    plans::read("SELECT to_regclass('sqs_ingest.identities') IS NOT NULL", &[], |t| t.first().get_one())
        .map(|known: Option<bool>| known.unwrap_or(false))
        .map_err(|e| IdentityError::Spi(e.to_string()))
}

/// Reads the extension's own tables as its owner: the caller may be a source's owner with no
/// right on them.
fn as_extension<R>(read: impl FnOnce() -> Result<R, pgrx::spi::SpiError>) -> Result<R, IdentityError> {
    role::as_extension(read).ok_or(IdentityError::NoExtension)?.map_err(|e| IdentityError::Spi(e.to_string()))
}

/// Writes the catalog of identities; the caller was checked to be a superuser.
fn write(sql: &str, args: &[pgrx::datum::DatumWithOid]) -> Result<(), IdentityError> {
    as_extension(|| Spi::run_with_args(sql, args))
}

/// The role named `name`.
fn role_named(name: &str) -> Result<pg_sys::Oid, IdentityError> {
    let missing = || IdentityError::NoRole(name.to_owned());
    let name = std::ffi::CString::new(name).map_err(|_| missing())?;
    // SAFETY: a catalog lookup inside a transaction; missing_ok returns InvalidOid instead of
    // raising.
    let oid = unsafe { pg_sys::get_role_oid(name.as_ptr(), true) };
    if oid == pg_sys::Oid::INVALID {
        return Err(missing());
    }
    Ok(oid)
}

/// The name of `role`, or its number once dropped.
fn role_name(role: pg_sys::Oid) -> String {
    // SAFETY: a catalog lookup inside a transaction; missing_ok returns NULL instead of raising.
    let name = unsafe { pg_sys::GetUserNameFromId(role, true) };
    if name.is_null() {
        return role.to_u32().to_string();
    }
    // SAFETY: a palloc'd NUL-terminated string.
    unsafe { std::ffi::CStr::from_ptr(name) }.to_string_lossy().into_owned()
}

/// Who a source's requests are signed as: None, the server's own credentials; else the role
/// of its identity, which its owner must be allowed to use now (checked each time the source is
/// served, so a revoked privilege stops it at its next round, and a granted one resumes it).
pub fn assume_for(source: &Source) -> Result<Option<AssumeRole>, IdentityError> {
    let Some(name) = source.identity.as_deref() else { return Ok(None) };
    let identity = Identity::load(name)?;
    if !identity.usable_by(source.owner)? {
        return Err(IdentityError::NotGranted {
            identity: identity.name,
            owner: role_name(source.owner),
            source: source.name.clone(),
        });
    }
    let session_name = identity.session_name.unwrap_or_else(|| default_session_name(&source.name));
    Ok(Some(AssumeRole {
        identity: identity.name,
        role_arn: identity.role_arn,
        external_id: identity.external_id,
        session_name,
        region: identity.region,
    }))
}

/// "<source>@<cluster>", what CloudTrail shows of each AssumeRole: the source, and the cluster
/// by its cluster_name, else its system identifier; at most the 64 characters STS takes.
fn default_session_name(source: &str) -> String {
    // SAFETY: cluster_name is a string setting, NULL or NUL-terminated, read in its process.
    let cluster = unsafe { pg_sys::cluster_name.as_ref().map(|c| std::ffi::CStr::from_ptr(c).to_string_lossy()) }
        .map(|c| c.chars().filter(|c| c.is_ascii_alphanumeric() || "_+=,.@-".contains(*c)).collect::<String>())
        .filter(|c| !c.is_empty())
        // SAFETY: reads the control file's system identifier, set at startup.
        .unwrap_or_else(|| unsafe { pg_sys::GetSystemIdentifier() }.to_string());
    let mut name = format!("{source}@{cluster}");
    name.truncate(64);
    name
}

/// A text argument that must be given.
fn given(value: Option<String>, what: &'static str) -> Result<String, IdentityError> {
    value.ok_or(IdentityError::Null(what))
}

/// Only superusers change identities.
fn superuser(what: &'static str) -> Result<(), IdentityError> {
    if role::is_superuser() {
        Ok(())
    } else {
        Err(IdentityError::NotSuperuser(what))
    }
}

/// An optional field as alter_identity takes it: NULL leaves it, '' clears it.
fn change(field: &mut Option<String>, to: Option<String>) {
    if let Some(to) = to {
        *field = Some(to).filter(|t| !t.is_empty());
    }
}

/// Grants or revokes (`sql`, of the identity and the role's oid) the use of identity `name`.
fn usage(what: &'static str, name: Option<String>, role: Option<String>, sql: &str) -> Result<(), IdentityError> {
    superuser(what)?;
    let identity = Identity::load(&given(name, "name")?)?;
    let grantee = role_named(&given(role, "role")?)?;
    write(sql, &[identity.name.into(), grantee.into()])
}

#[pg_schema]
mod sqs_ingest {
    use super::*;

    /// Declares an identity: an IAM role that sources granted it assume through STS.
    #[pg_extern(volatile, parallel_unsafe)]
    fn create_identity(
        name: Option<String>,
        role_arn: Option<String>,
        external_id: default!(Option<String>, "NULL"),
        session_name: default!(Option<String>, "NULL"),
        region: default!(Option<String>, "NULL"),
    ) -> Result<(), ErrorReport> {
        superuser("create")?;
        let identity = Identity {
            name: given(name, "name")?,
            role_arn: given(role_arn, "role_arn")?,
            external_id: external_id.filter(|v| !v.is_empty()),
            session_name: session_name.filter(|v| !v.is_empty()),
            region: region.filter(|v| !v.is_empty()),
        };
        identity.check()?;
        match Identity::load(&identity.name) {
            Ok(_) => return Err(IdentityError::Exists(identity.name).into()),
            Err(IdentityError::Unknown(_)) => {}
            Err(e) => return Err(e.into()),
        }
        Ok(identity.save(
            "INSERT INTO sqs_ingest.identities (name, role_arn, external_id, session_name, region)
             VALUES ($1, $2, $3, $4, $5)",
        )?)
    }

    /// Changes what is given of an identity (NULL leaves a field as it is, '' clears an
    /// optional one). Sources using it assume the new role from their next round.
    #[pg_extern(volatile, parallel_unsafe)]
    fn alter_identity(
        name: Option<String>,
        role_arn: default!(Option<String>, "NULL"),
        external_id: default!(Option<String>, "NULL"),
        session_name: default!(Option<String>, "NULL"),
        region: default!(Option<String>, "NULL"),
    ) -> Result<(), ErrorReport> {
        superuser("alter")?;
        let mut identity = Identity::load(&given(name, "name")?)?;
        if let Some(role_arn) = role_arn {
            identity.role_arn = role_arn;
        }
        change(&mut identity.external_id, external_id);
        change(&mut identity.session_name, session_name);
        change(&mut identity.region, region);
        identity.check()?;
        Ok(identity.save(
            "UPDATE sqs_ingest.identities SET role_arn = $2, external_id = $3, session_name = $4, region = $5
             WHERE name = $1",
        )?)
    }

    /// Drops an identity and its grants; refused while a source names it.
    #[pg_extern(volatile, parallel_unsafe)]
    fn drop_identity(name: Option<String>) -> Result<(), ErrorReport> {
        superuser("drop")?;
        let identity = Identity::load(&given(name, "name")?)?;
        let sources: Vec<String> = as_extension(|| {
            plans::read(
                "SELECT name FROM sqs_ingest.sources WHERE identity = $1 ORDER BY name",
                &[identity.name.clone().into()],
                |rows| rows.map(|r| r.get(1).map(Option::unwrap_or_default)).collect(),
            )
        })?;
        if !sources.is_empty() {
            return Err(IdentityError::InUse { identity: identity.name, sources }.into());
        }
        write("DELETE FROM sqs_ingest.identity_usage WHERE identity = $1", &[identity.name.clone().into()])?;
        write("DELETE FROM sqs_ingest.identities WHERE name = $1", &[identity.name.into()])?;
        Ok(())
    }

    /// Lets `role` (and the roles with its privileges) use the identity in their sources.
    #[pg_extern(volatile, parallel_unsafe)]
    fn grant_identity(name: Option<String>, role: Option<String>) -> Result<(), ErrorReport> {
        Ok(usage(
            "grant",
            name,
            role,
            "INSERT INTO sqs_ingest.identity_usage (identity, grantee) VALUES ($1, $2::oid::regrole)
             ON CONFLICT DO NOTHING",
        )?)
    }

    /// Takes the identity back from `role`: its sources stop at their next round, their
    /// messages waiting in the queue, until it is granted again.
    #[pg_extern(volatile, parallel_unsafe)]
    fn revoke_identity(name: Option<String>, role: Option<String>) -> Result<(), ErrorReport> {
        Ok(usage(
            "revoke",
            name,
            role,
            "DELETE FROM sqs_ingest.identity_usage WHERE identity = $1 AND grantee = $2::oid::regrole",
        )?)
    }
}
