//! Keys read from files, as PostgreSQL reads `ssl_key_file`: `sqs_ingest.pii_key_file` and
//! `sqs_ingest.recovery_key_file` hold paths, never keys, so that no reload log line,
//! postgresql.auto.conf or base backup ever holds a key. Each file is read and checked when its
//! setting is set (server start, SET, and every reload), in every process.
use crate::errors::report;
use pgrx::guc::{GucContext, GucFlags, GucRegistry, GucSetting};
use pgrx::prelude::*;
use pgrx::{PgLogLevel, PgSqlErrorCode};
use sqs_ingest_core::key_file;
use sqs_ingest_core::vault::Sealer;
use std::ffi::{c_char, c_void, CStr, CString};
use std::os::unix::fs::MetadataExt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

pub static PII_KEY_FILE: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
pub static RECOVERY_KEY_FILE: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);

/// The keys the files held when their settings were last assigned in this process.
static PII_KEY: Mutex<Option<Vec<u8>>> = Mutex::new(None);
static RECOVERY_KEY: Mutex<Option<Vec<u8>>> = Mutex::new(None);

/// A key file the configuration names but that could not be used while no key was loaded:
/// the path and why. Postgres then falls back to the setting's default, no file, and would mask
/// without a key (or keep no originals) as if that had been asked for; instead, masking and
/// ingesting are refused until a key loads (masking.rs, settings.rs). Set in the postmaster at
/// start and reload, and so inherited by every process it forks, and again in each process
/// that reloads.
static PII_REFUSED: Mutex<Option<String>> = Mutex::new(None);
static RECOVERY_REFUSED: Mutex<Option<String>> = Mutex::new(None);

/// Counts the changes of the masking key, or of its refusal, in this process: what is made
/// from them (settings' masker) is made again when it moves, and otherwise taken as it is.
static PII_GENERATION: AtomicU64 = AtomicU64::new(0);

/// The masking key's generation: equal while neither the key nor its refusal changed.
pub fn pii_generation() -> u64 {
    PII_GENERATION.load(Ordering::Relaxed)
}

pub fn register() {
    // SAFETY: the hooks are #[pg_guard] functions that live as long as the library.
    unsafe {
        GucRegistry::define_string_guc_with_hooks(
            c"sqs_ingest.pii_key_file",
            c"File holding the HMAC-SHA256 key for masking ip and device_id; empty: unkeyed SHA-256 (or sqs_ingest.pii_key).",
            c"Owned by the server's user with mode 0600, or by root with mode 0640 at most; read again on every reload.",
            &PII_KEY_FILE,
            GucContext::Suset,
            GucFlags::SUPERUSER_ONLY,
            Some(check_pii_key_file),
            Some(assign_pii_key_file),
            None,
        );
        GucRegistry::define_string_guc_with_hooks(
            c"sqs_ingest.recovery_key_file",
            c"File holding the AES-256 key (64 hex digits) sealing originals for reveal_pii; empty: none kept (or sqs_ingest.recovery_key).",
            c"Owned by the server's user with mode 0600, or by root with mode 0640 at most; read again on every reload.",
            &RECOVERY_KEY_FILE,
            GucContext::Suset,
            GucFlags::SUPERUSER_ONLY,
            Some(check_recovery_key_file),
            Some(assign_recovery_key_file),
            None,
        );
    }
}

/// The masking key from `sqs_ingest.pii_key_file`, if it names one.
pub fn pii_key() -> Option<Vec<u8>> {
    PII_KEY.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

/// The recovery key (64 hex digits) from `sqs_ingest.recovery_key_file`, if it names one.
pub fn recovery_key() -> Option<Vec<u8>> {
    RECOVERY_KEY.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

/// The key file named by the configuration that could not be used, with no key loaded: the
/// path and why; `recovery` asks about `sqs_ingest.recovery_key_file`.
pub fn refused(recovery: bool) -> Option<String> {
    let refused = if recovery { &RECOVERY_REFUSED } else { &PII_REFUSED };
    refused.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

/// Reads the key at `path`, refusing a file others may read and content that is no key.
fn read(path: &str, recovery: bool) -> Result<Vec<u8>, String> {
    let unreadable = |e: std::io::Error| format!("could not read it: {e}");
    let meta = std::fs::metadata(path).map_err(unreadable)?;
    if !meta.is_file() {
        return Err("it is not a regular file".to_owned());
    }
    // SAFETY: geteuid has no preconditions.
    let server_user = unsafe { libc::geteuid() };
    if let Some(problem) = key_file::permission_problem(meta.uid(), server_user, meta.mode()) {
        return Err(problem);
    }
    let key = key_file::key_from(&std::fs::read(path).map_err(unreadable)?)?;
    if recovery {
        let hex = std::str::from_utf8(&key).map_err(|_| "it does not hold 64 hexadecimal digits".to_owned())?;
        Sealer::from_hex(hex).map_err(|e| format!("it does not hold a usable key: {e}"))?;
    }
    Ok(key)
}

/// The check hook of both settings: reads the file and hands its key to the assign hook through
/// `extra`; refuses the value, with the reason as the error's DETAIL, when the file will not do.
/// A value from the configuration (a file, ALTER DATABASE or ROLE, the command line) refused
/// while no key is loaded is remembered as refused; a SET is answered with its error instead.
unsafe fn check(
    newval: *mut *mut c_char,
    extra: *mut *mut c_void,
    source: pg_sys::GucSource::Type,
    recovery: bool,
) -> bool {
    // SAFETY: Postgres passes the proposed value, a C string or NULL, and a slot for extra.
    unsafe {
        let path = if (*newval).is_null() { "" } else { CStr::from_ptr(*newval).to_str().unwrap_or("\u{FFFD}") };
        if path.is_empty() {
            *extra = std::ptr::null_mut();
            return true;
        }
        match read(path, recovery) {
            Ok(key) => {
                *extra = extra_with(&key);
                !(*extra).is_null()
            }
            Err(why) => {
                use pg_sys::GucSource::{PGC_S_INTERACTIVE, PGC_S_SESSION, PGC_S_TEST};
                let (key, refused) =
                    if recovery { (&RECOVERY_KEY, &RECOVERY_REFUSED) } else { (&PII_KEY, &PII_REFUSED) };
                let configured = !matches!(source, PGC_S_INTERACTIVE | PGC_S_SESSION | PGC_S_TEST);
                if configured && key.lock().unwrap_or_else(|e| e.into_inner()).is_none() {
                    *refused.lock().unwrap_or_else(|e| e.into_inner()) = Some(format!("\"{path}\": {why}"));
                    if !recovery {
                        PII_GENERATION.fetch_add(1, Ordering::Relaxed);
                    }
                }
                let detail = CString::new(format!("The key file \"{path}\" cannot be used: {why}."))
                    .unwrap_or_else(|_| c"The key file cannot be used.".to_owned());
                pg_sys::GUC_check_errdetail_string = pg_sys::pstrdup(detail.as_ptr());
                false
            }
        }
    }
}

/// `key` in memory Postgres owns and frees with the setting's value: its length, then its bytes.
unsafe fn extra_with(key: &[u8]) -> *mut c_void {
    let size = std::mem::size_of::<usize>() + key.len();
    // SAFETY: a fresh allocation of `size` bytes, written within bounds; Postgres frees it.
    unsafe {
        let block = guc_alloc(size);
        if block.is_null() {
            return std::ptr::null_mut();
        }
        (block as *mut usize).write_unaligned(key.len());
        std::ptr::copy_nonoverlapping(key.as_ptr(), block.add(std::mem::size_of::<usize>()), key.len());
        block as *mut c_void
    }
}

/// The key an `extra` of [`extra_with`] holds; None for no key.
unsafe fn key_in(extra: *mut c_void) -> Option<Vec<u8>> {
    if extra.is_null() {
        return None;
    }
    // SAFETY: `extra` was made by extra_with: a length, then that many bytes.
    unsafe {
        let len = (extra as *const usize).read_unaligned();
        let bytes = (extra as *const u8).add(std::mem::size_of::<usize>());
        Some(std::slice::from_raw_parts(bytes, len).to_vec())
    }
}

#[pg_guard]
unsafe extern "C-unwind" fn check_pii_key_file(
    newval: *mut *mut c_char,
    extra: *mut *mut c_void,
    source: pg_sys::GucSource::Type,
) -> bool {
    // SAFETY: as Postgres calls a check hook.
    unsafe { check(newval, extra, source, false) }
}

#[pg_guard]
unsafe extern "C-unwind" fn check_recovery_key_file(
    newval: *mut *mut c_char,
    extra: *mut *mut c_void,
    source: pg_sys::GucSource::Type,
) -> bool {
    // SAFETY: as Postgres calls a check hook.
    unsafe { check(newval, extra, source, true) }
}

#[pg_guard]
unsafe extern "C-unwind" fn assign_pii_key_file(_newval: *const c_char, extra: *mut c_void) {
    // SAFETY: `extra` is what check_pii_key_file made for this value.
    *PII_KEY.lock().unwrap_or_else(|e| e.into_inner()) = unsafe { key_in(extra) };
    // A value that passed its check: a key, or none asked for.
    *PII_REFUSED.lock().unwrap_or_else(|e| e.into_inner()) = None;
    PII_GENERATION.fetch_add(1, Ordering::Relaxed);
}

#[pg_guard]
unsafe extern "C-unwind" fn assign_recovery_key_file(_newval: *const c_char, extra: *mut c_void) {
    // SAFETY: `extra` is what check_recovery_key_file made for this value.
    *RECOVERY_KEY.lock().unwrap_or_else(|e| e.into_inner()) = unsafe { key_in(extra) };
    *RECOVERY_REFUSED.lock().unwrap_or_else(|e| e.into_inner()) = None;
}

/// The keys of the deprecated settings `sqs_ingest.pii_key` and `recovery_key`, as last assigned
/// in this process. The settings themselves always hold an empty string: a reload logs every
/// setting whose value changed, with the new value ("parameter ... changed to ..."), so a value
/// that never changes is never logged.
static DEPRECATED_PII_KEY: Mutex<Option<Vec<u8>>> = Mutex::new(None);
static DEPRECATED_RECOVERY_KEY: Mutex<Option<Vec<u8>>> = Mutex::new(None);

/// The key set in the deprecated `sqs_ingest.pii_key`, if any.
pub fn deprecated_pii_key() -> Option<Vec<u8>> {
    DEPRECATED_PII_KEY.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

/// The key set in the deprecated `sqs_ingest.recovery_key`, if any.
pub fn deprecated_recovery_key() -> Option<Vec<u8>> {
    DEPRECATED_RECOVERY_KEY.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

/// Check hooks of the deprecated key settings: any value is accepted and handed to the assign
/// hook through `extra`, and the setting keeps an empty string in its place. In the postmaster
/// (once per start and reload, not once per process) a WARNING says that a key is in the
/// configuration.
#[pg_guard]
pub unsafe extern "C-unwind" fn hide_pii_key(
    newval: *mut *mut c_char,
    extra: *mut *mut c_void,
    _source: pg_sys::GucSource::Type,
) -> bool {
    // SAFETY: as Postgres calls a check hook.
    unsafe { hide(newval, extra, "pii_key") }
}

#[pg_guard]
pub unsafe extern "C-unwind" fn hide_recovery_key(
    newval: *mut *mut c_char,
    extra: *mut *mut c_void,
    _source: pg_sys::GucSource::Type,
) -> bool {
    // SAFETY: as Postgres calls a check hook.
    unsafe { hide(newval, extra, "recovery_key") }
}

#[pg_guard]
pub unsafe extern "C-unwind" fn assign_deprecated_pii_key(_newval: *const c_char, extra: *mut c_void) {
    // SAFETY: `extra` is what hide_pii_key made for this value.
    *DEPRECATED_PII_KEY.lock().unwrap_or_else(|e| e.into_inner()) = unsafe { key_in(extra) };
    PII_GENERATION.fetch_add(1, Ordering::Relaxed);
}

#[pg_guard]
pub unsafe extern "C-unwind" fn assign_deprecated_recovery_key(_newval: *const c_char, extra: *mut c_void) {
    // SAFETY: `extra` is what hide_recovery_key made for this value.
    *DEPRECATED_RECOVERY_KEY.lock().unwrap_or_else(|e| e.into_inner()) = unsafe { key_in(extra) };
}

unsafe fn hide(newval: *mut *mut c_char, extra: *mut *mut c_void, name: &str) -> bool {
    // SAFETY: Postgres passes the proposed value, a C string or NULL, allocated as its GUC
    // strings are, which a check hook may replace with another so allocated (freeing the old);
    // IsUnderPostmaster is a plain flag of this process.
    unsafe {
        if (*newval).is_null() || **newval == 0 {
            *extra = std::ptr::null_mut();
            return true;
        }
        *extra = extra_with(CStr::from_ptr(*newval).to_bytes());
        let empty = guc_string(c"");
        if (*extra).is_null() || empty.is_null() {
            return false;
        }
        guc_free(*newval as *mut c_void);
        *newval = empty;
        if !pg_sys::IsUnderPostmaster {
            report(
                PgSqlErrorCode::ERRCODE_WARNING_DEPRECATED_FEATURE,
                format!("sqs_ingest.{name} holds a key in the server's configuration: postgresql.auto.conf and base backups keep it"),
                &format!("Put the key in a file only the server's user can read, set sqs_ingest.{name}_file to its path, and remove sqs_ingest.{name}; see the README, \"Keys\"."),
            )
            .report(PgLogLevel::WARNING);
        }
    }
    true
}

/// A copy of `text` in memory of [`guc_alloc`]; NULL when out of memory.
unsafe fn guc_string(text: &CStr) -> *mut c_char {
    let bytes = text.to_bytes_with_nul();
    // SAFETY: a fresh allocation of exactly the bytes copied into it.
    unsafe {
        let copy = guc_alloc(bytes.len());
        if !copy.is_null() {
            std::ptr::copy_nonoverlapping(bytes.as_ptr(), copy, bytes.len());
        }
        copy as *mut c_char
    }
}

/// `size` bytes as Postgres allocates setting values and their `extra` (malloc before 16, its
/// GUC allocator since), so that it frees them with the setting; NULL when out of memory.
unsafe fn guc_alloc(size: usize) -> *mut u8 {
    // SAFETY: both allocate `size` fresh bytes or return NULL.
    unsafe {
        #[cfg(any(feature = "pg13", feature = "pg14", feature = "pg15"))]
        return libc::malloc(size) as *mut u8;
        #[cfg(not(any(feature = "pg13", feature = "pg14", feature = "pg15")))]
        return pg_sys::guc_malloc(pg_sys::LOG as i32, size) as *mut u8;
    }
}

/// Frees memory of [`guc_alloc`], or a setting's value Postgres allocated.
unsafe fn guc_free(block: *mut c_void) {
    // SAFETY: `block` came from the allocator Postgres uses for settings in this major.
    unsafe {
        #[cfg(any(feature = "pg13", feature = "pg14", feature = "pg15"))]
        libc::free(block);
        #[cfg(not(any(feature = "pg13", feature = "pg14", feature = "pg15")))]
        pg_sys::guc_free(block);
    }
}
