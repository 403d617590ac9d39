//! The catalog sqs_ingest.sources: create_source, alter_source, drop_source, and the generation
//! counter that tells the workers, within a poll's slice, that a committed change awaits them.
use super::identity;
use super::mapping::Mapping;
use super::{Source, SourceError, LOGIN};
use crate::role;
use crate::settings;
use pgrx::pg_sys::panic::ErrorReport;
use pgrx::prelude::*;
use pgrx::{pg_shmem_init, JsonB, PgAtomic, PgRelation};
use sqs_ingest_core::endpoint::endpoint_for_queue;
use std::cell::Cell;
use std::ffi::c_void;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

// SAFETY: the only shared memory of this name.
static GENERATION: PgAtomic<AtomicU64> = unsafe { PgAtomic::new(c"sqs_ingest_sources_generation") };
/// Set in the postmaster while preloading, and so inherited by every process it forks.
static ALLOCATED: AtomicBool = AtomicBool::new(false);

thread_local! {
    /// Whether this transaction changed the catalog, and whether the callback is registered.
    static CHANGED: Cell<bool> = const { Cell::new(false) };
    static REGISTERED: Cell<bool> = const { Cell::new(false) };
}

/// Asks for the shared memory; only possible while shared_preload_libraries load.
pub fn allocate() {
    pg_shmem_init!(GENERATION);
    ALLOCATED.store(true, Ordering::Relaxed);
}

/// How many committed transactions have changed the catalog since the server started (0 when
/// sqs_ingest is not preloaded).
pub fn generation() -> u64 {
    if ALLOCATED.load(Ordering::Relaxed) {
        GENERATION.get().load(Ordering::Acquire)
    } else {
        0
    }
}

/// Has the workers and the launcher look again once the current transaction commits: at a
/// change of the catalog, and at CREATE and DROP EXTENSION.
pub fn mark_changed() {
    if ALLOCATED.load(Ordering::Relaxed) {
        if !REGISTERED.replace(true) {
            // SAFETY: a plain function that lives as long as the backend.
            unsafe { pg_sys::RegisterXactCallback(Some(on_xact), std::ptr::null_mut()) };
        }
        CHANGED.set(true);
    }
}

#[pg_guard]
unsafe extern "C-unwind" fn on_xact(event: pg_sys::XactEvent::Type, _arg: *mut c_void) {
    use pg_sys::XactEvent::*;
    match event {
        // An atomic add cannot fail, as nothing after commit may.
        XACT_EVENT_COMMIT if CHANGED.replace(false) => {
            GENERATION.get().fetch_add(1, Ordering::Release);
        }
        XACT_EVENT_ABORT | XACT_EVENT_PREPARE => CHANGED.set(false),
        _ => {}
    }
}

extension_sql!(
    "CREATE TRIGGER sources_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON sqs_ingest.sources
         FOR EACH STATEMENT EXECUTE FUNCTION sqs_ingest.sources_changed();
     CREATE TRIGGER identities_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON sqs_ingest.identities
         FOR EACH STATEMENT EXECUTE FUNCTION sqs_ingest.sources_changed();
     CREATE TRIGGER identity_usage_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON sqs_ingest.identity_usage
         FOR EACH STATEMENT EXECUTE FUNCTION sqs_ingest.sources_changed();",
    name = "sources_changed_trigger",
    requires = ["bootstrap", sqs_ingest::sources_changed]
);

/// The checks every source passes before it is written: name, queue URL, settings, and its
/// mapping unless `mapping` is false (a source only being disabled: a mapping that broke, say
/// its owner lost a right, must not keep it from being switched off).
fn check(source: &Source, mapping: bool) -> Result<(), SourceError> {
    let name = &source.name;
    if name.is_empty()
        || name.len() > 63
        || !name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
    {
        return Err(SourceError::BadName(name.clone()));
    }
    if let Some(url) = &source.overrides.queue_url {
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(SourceError::BadQueueUrl(sqs_ingest_core::redact::url(url)));
        }
        // Whoever may create sources may make the server sign requests with its credentials:
        // to AWS, or to the endpoint a superuser configured; elsewhere only a superuser.
        if endpoint_for_queue(url).is_some() && !settings::endpoint_is_set() && !role::is_superuser() {
            return Err(SourceError::Endpoint(sqs_ingest_core::redact::url(url)));
        }
    }
    if mapping && !source.is_login() {
        let mapping = Mapping::resolve(source)?;
        mapping.check()?;
    }
    Ok(())
}

/// The columns argument as (column, expression) pairs; JSON null: none (the body's keys).
fn columns(columns: JsonB) -> Result<Option<Vec<(String, String)>>, SourceError> {
    match columns.0 {
        serde_json::Value::Null => Ok(None),
        serde_json::Value::Object(map) => map
            .into_iter()
            .map(|(column, expression)| match expression {
                serde_json::Value::String(e) if !e.trim().is_empty() => Ok((column, e)),
                _ => {
                    Err(SourceError::BadColumns(format!("maps \"{column}\" to something else than an SQL expression")))
                }
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some),
        _ => Err(SourceError::BadColumns("must be a JSON object".to_owned())),
    }
}

/// Writes the catalog with the privileges of the extension's owner: the caller was checked
/// above, and may hold no right on the catalog itself.
fn write(sql: &str, args: &[pgrx::datum::DatumWithOid]) -> Result<(), SourceError> {
    role::as_extension(|| Spi::run_with_args(sql, args))
        .ok_or(SourceError::NoExtension)?
        .map_err(SourceError::spi("writing sqs_ingest.sources"))
}

/// Writes a source's identity, in a catalog that has the column: before ALTER EXTENSION UPDATE
/// to 0.7.0 it has none, and no source can name one (Identity::load says to update first).
fn write_identity(source: &Source) -> Result<(), ErrorReport> {
    if identity::in_catalog()? {
        write(
            "UPDATE sqs_ingest.sources SET identity = $2 WHERE name = $1",
            &[source.name.clone().into(), source.identity.clone().into()],
        )?;
    }
    Ok(())
}

fn mapping_json(source: &Source) -> Option<String> {
    source.columns.as_ref().map(|c| {
        serde_json::Value::Object(c.iter().map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone()))).collect())
            .to_string()
    })
}

#[pg_schema]
mod sqs_ingest {
    use super::*;

    /// Fires on every change of sqs_ingest.sources and of the identities and their grants,
    /// through the functions, an UPDATE or a restore alike: the workers look again once the
    /// transaction commits.
    #[pg_trigger]
    fn sources_changed<'a>(
        _trigger: &'a pgrx::PgTrigger<'a>,
    ) -> Result<Option<PgHeapTuple<'a, pgrx::AllocatedByRust>>, std::convert::Infallible> {
        super::mark_changed();
        Ok(None)
    }

    /// Creates a source owned by the current user; its mapping is checked now, as its owner.
    /// 0.3.0 to 0.6.0's create_source, which their SQL calls until ALTER EXTENSION UPDATE: the
    /// library is installed (and a server restarted) before the update, and a C function is
    /// bound to its symbol by name, whatever its arguments.
    #[pg_extern(sql = false)]
    fn create_source(
        name: Option<String>,
        queue_url: Option<String>,
        target: Option<PgRelation>,
        columns: Option<JsonB>,
        enabled: Option<bool>,
    ) -> Result<(), ErrorReport> {
        create_source_with_identity(name, queue_url, target, columns, enabled, None)
    }

    /// 0.3.0 to 0.6.0's alter_source, as create_source above.
    #[pg_extern(sql = false)]
    fn alter_source(
        name: Option<String>,
        queue_url: Option<String>,
        target: Option<PgRelation>,
        columns: Option<JsonB>,
        enabled: Option<bool>,
    ) -> Result<(), ErrorReport> {
        alter_source_with_identity(name, queue_url, target, columns, enabled, None)
    }

    #[pg_extern(volatile, parallel_unsafe, name = "create_source")]
    fn create_source_with_identity(
        name: Option<String>,
        queue_url: Option<String>,
        target: Option<PgRelation>,
        columns: default!(Option<JsonB>, "NULL"),
        enabled: default!(Option<bool>, true),
        identity: default!(Option<String>, "NULL"),
    ) -> Result<(), ErrorReport> {
        let name = name.ok_or(SourceError::Null("name"))?;
        let queue_url = queue_url.ok_or(SourceError::Null("queue_url"))?;
        let target = target.ok_or(SourceError::Null("target"))?.oid();
        let enabled = enabled.ok_or(SourceError::Null("enabled"))?;
        let source = Source {
            name: name.clone(),
            target: Some(target),
            columns: columns.map(super::columns).transpose()?.flatten(),
            enabled,
            owner: role::current(),
            overrides: settings::Overrides { queue_url: Some(queue_url), ..Default::default() },
            workers: None,
            envelope: Default::default(),
            identity: identity.filter(|i| !i.is_empty()),
        };
        match Source::load(&name) {
            Ok(_) => return Err(SourceError::Exists(name).into()),
            Err(SourceError::Unknown(_)) => {}
            Err(e) => return Err(e.into()),
        }
        check(&source, true)?;
        identity::assume_for(&source)?;
        write(
            "INSERT INTO sqs_ingest.sources (name, queue_url, target, columns, enabled, owner)
             VALUES ($1, $2, $3, $4::jsonb, $5, $6)",
            &[
                source.name.clone().into(),
                source.overrides.queue_url.clone().into(),
                target.into(),
                mapping_json(&source).into(),
                enabled.into(),
                source.owner.into(),
            ],
        )?;
        write_identity(&source)
    }

    /// Changes what is given of a source (NULL leaves a field as it is; columns => 'null'
    /// goes back to the body's keys). Its owner or a superuser may.
    #[pg_extern(volatile, parallel_unsafe, name = "alter_source")]
    fn alter_source_with_identity(
        name: Option<String>,
        queue_url: default!(Option<String>, "NULL"),
        target: default!(Option<PgRelation>, "NULL"),
        columns: default!(Option<JsonB>, "NULL"),
        enabled: default!(Option<bool>, "NULL"),
        identity: default!(Option<String>, "NULL"),
    ) -> Result<(), ErrorReport> {
        let name = name.ok_or(SourceError::Null("name"))?;
        let mut source = Source::load(&name)?;
        if !role::acts_for(source.owner) {
            return Err(SourceError::NotOwner(name).into());
        }
        let changes = queue_url.is_some() || target.is_some() || columns.is_some() || identity.is_some();
        if source.is_login() && changes {
            return Err(SourceError::BuiltIn("changed, except for enabled").into());
        }
        let only_disabling = enabled == Some(false) && !changes;
        if queue_url.is_some() {
            source.overrides.queue_url = queue_url;
        }
        if let Some(target) = target {
            source.target = Some(target.oid());
        }
        if let Some(columns) = columns {
            source.columns = super::columns(columns)?;
        }
        if let Some(enabled) = enabled {
            source.enabled = enabled;
        }
        // '' goes back to the server's own credentials.
        if let Some(identity) = identity {
            source.identity = Some(identity).filter(|i| !i.is_empty());
        }
        check(&source, !only_disabling)?;
        if !only_disabling {
            identity::assume_for(&source)?;
        }
        write(
            "UPDATE sqs_ingest.sources SET queue_url = $2, target = $3, columns = $4::jsonb, enabled = $5
             WHERE name = $1",
            &[
                source.name.clone().into(),
                source.overrides.queue_url.clone().into(),
                source.target.into(),
                mapping_json(&source).into(),
                source.enabled.into(),
            ],
        )?;
        write_identity(&source)
    }

    /// Drops a source; its dead letters stay. Its owner or a superuser may.
    #[pg_extern(volatile, parallel_unsafe)]
    fn drop_source(name: Option<String>) -> Result<(), ErrorReport> {
        let name = name.ok_or(SourceError::Null("name"))?;
        if name == LOGIN {
            return Err(SourceError::BuiltIn("dropped").into());
        }
        let source = Source::load(&name)?;
        if !role::acts_for(source.owner) {
            return Err(SourceError::NotOwner(name).into());
        }
        write("DELETE FROM sqs_ingest.sources WHERE name = $1", &[name.into()])?;
        Ok(())
    }
}
