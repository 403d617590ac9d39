//! The workers step aside for the commands that need their database to themselves: DROP
//! DATABASE, CREATE DATABASE ... TEMPLATE, ALTER DATABASE ... RENAME and SET TABLESPACE. A
//! utility hook stops the database's workers and keeps the launcher from starting new ones
//! until the command is done, so that it succeeds without FORCE. It also has the launcher look
//! again after CREATE and DROP EXTENSION.
use crate::source::catalog;
use crate::status;
use pgrx::prelude::*;
use pgrx::{pg_shmem_init, PGRXSharedMemory, PgList, PgLwLock};
use std::ffi::CStr;
use std::sync::atomic::{AtomicBool, Ordering};

/// Commands stepped aside from at once, across the cluster; one more waits its turn.
const MAX_PAUSES: usize = 8;

#[derive(Clone, Copy)]
struct Pause {
    database: pg_sys::Oid,
    /// The backend running the command; a pause whose holder is gone (a FATAL) is over.
    holder: i32,
}

#[derive(Clone, Copy)]
pub struct Pauses([Pause; MAX_PAUSES]);

impl Default for Pauses {
    fn default() -> Self {
        Pauses([Pause { database: pg_sys::Oid::INVALID, holder: 0 }; MAX_PAUSES])
    }
}

// SAFETY: plain Copy data with no pointers.
unsafe impl PGRXSharedMemory for Pauses {}

// SAFETY: the only lock of this name.
static PAUSES: PgLwLock<Pauses> = unsafe { PgLwLock::new(c"sqs_ingest_step_aside") };
/// Set in the postmaster while preloading, and so inherited by every process it forks.
static ALLOCATED: AtomicBool = AtomicBool::new(false);
static mut PREVIOUS: pg_sys::ProcessUtility_hook_type = None;

/// Asks for the shared memory and installs the hook; only while shared_preload_libraries load.
pub fn allocate() {
    pg_shmem_init!(PAUSES);
    ALLOCATED.store(true, Ordering::Relaxed);
    // SAFETY: the postmaster is single-threaded while it loads libraries; the previous hook
    // is kept and called.
    unsafe {
        PREVIOUS = pg_sys::ProcessUtility_hook;
        pg_sys::ProcessUtility_hook = Some(process_utility);
    }
}

/// Whether a command is under way that needs `database` without the workers.
pub fn paused(database: pg_sys::Oid) -> bool {
    ALLOCATED.load(Ordering::Relaxed) && PAUSES.share().0.iter().any(|p| p.database == database && alive(p.holder))
}

fn alive(pid: i32) -> bool {
    // SAFETY: signal 0 only asks whether the process exists.
    pid != 0 && unsafe { libc::kill(pid, 0) } == 0
}

#[pg_guard]
#[allow(clippy::too_many_arguments)]
unsafe extern "C-unwind" fn process_utility(
    pstmt: *mut pg_sys::PlannedStmt,
    query_string: *const std::ffi::c_char,
    read_only_tree: bool,
    context: pg_sys::ProcessUtilityContext::Type,
    params: pg_sys::ParamListInfo,
    query_env: *mut pg_sys::QueryEnvironment,
    dest: *mut pg_sys::DestReceiver,
    qc: *mut pg_sys::QueryCompletion,
) {
    // SAFETY: Postgres passes a valid PlannedStmt with a utility statement.
    let node = unsafe { (*pstmt).utilityStmt };
    let run = || {
        // SAFETY: the arguments as Postgres passed them, to the previous hook or the standard.
        unsafe {
            match PREVIOUS {
                Some(previous) => previous(pstmt, query_string, read_only_tree, context, params, query_env, dest, qc),
                None => pg_sys::standard_ProcessUtility(
                    pstmt,
                    query_string,
                    read_only_tree,
                    context,
                    params,
                    query_env,
                    dest,
                    qc,
                ),
            }
        }
    };
    // SAFETY: a node of the statement Postgres is running.
    let Some(database) = (unsafe { needs_alone(node) }) else {
        run();
        // SAFETY: as above.
        if unsafe { changes_extensions(node) } {
            catalog::mark_changed();
        }
        return;
    };
    let Some(slot) = pause(database) else {
        run();
        return;
    };
    // The workers end within a slice (50 ms); the command's own wait for other sessions
    // (5 s) covers that.
    for pid in status::pids(database) {
        // SAFETY: a worker of this cluster, as its slot says.
        unsafe { libc::kill(pid, libc::SIGTERM) };
    }
    PgTryBuilder::new(run).finally(|| unpause(slot)).execute();
}

fn pause(database: pg_sys::Oid) -> Option<usize> {
    // SAFETY: this backend's pid.
    let me = unsafe { pg_sys::MyProcPid };
    let mut pauses = PAUSES.exclusive();
    let free = pauses.0.iter().position(|p| !alive(p.holder))?;
    pauses.0[free] = Pause { database, holder: me };
    Some(free)
}

fn unpause(slot: usize) {
    PAUSES.exclusive().0[slot] = Pause { database: pg_sys::Oid::INVALID, holder: 0 };
}

/// The database `node` needs without other sessions, when it exists.
///
/// # Safety
/// `node` is a valid parse node.
unsafe fn needs_alone(node: *mut pg_sys::Node) -> Option<pg_sys::Oid> {
    if node.is_null() || !ALLOCATED.load(Ordering::Relaxed) {
        return None;
    }
    // SAFETY: each cast follows the node's tag.
    let name: *const std::ffi::c_char = unsafe {
        match (*node).type_ {
            pg_sys::NodeTag::T_DropdbStmt => (*(node as *mut pg_sys::DropdbStmt)).dbname,
            pg_sys::NodeTag::T_RenameStmt => {
                let stmt = node as *mut pg_sys::RenameStmt;
                if (*stmt).renameType != pg_sys::ObjectType::OBJECT_DATABASE {
                    return None;
                }
                (*stmt).subname
            }
            pg_sys::NodeTag::T_CreatedbStmt => option((*(node as *mut pg_sys::CreatedbStmt)).options, "template")?,
            pg_sys::NodeTag::T_AlterDatabaseStmt => {
                let stmt = node as *mut pg_sys::AlterDatabaseStmt;
                option((*stmt).options, "tablespace")?;
                (*stmt).dbname
            }
            _ => return None,
        }
    };
    if name.is_null() {
        return None;
    }
    // SAFETY: a NUL-terminated name from the parse tree; missing_ok: no ERROR here.
    let oid = unsafe { pg_sys::get_database_oid(name, true) };
    (oid != pg_sys::Oid::INVALID).then_some(oid)
}

/// The string value of option `name` of a DefElem list, when given.
///
/// # Safety
/// `options` is a List of DefElem, or NULL.
unsafe fn option(options: *mut pg_sys::List, name: &str) -> Option<*const std::ffi::c_char> {
    // SAFETY: as the caller promises.
    let options = unsafe { PgList::<pg_sys::DefElem>::from_pg(options) };
    let found = options.iter_ptr().find_map(|def| {
        // SAFETY: a DefElem of the list, its defname a NUL-terminated string.
        unsafe {
            let defname = (*def).defname;
            if defname.is_null() || CStr::from_ptr(defname).to_bytes() != name.as_bytes() {
                return None;
            }
            // defGetString raises an ERROR for a value that is no name; Postgres would too.
            Some(pg_sys::defGetString(def) as *const std::ffi::c_char)
        }
    });
    found
}

/// Whether `node` is CREATE EXTENSION sqs_ingest or a DROP EXTENSION.
///
/// # Safety
/// `node` is a valid parse node.
unsafe fn changes_extensions(node: *mut pg_sys::Node) -> bool {
    if node.is_null() {
        return false;
    }
    // SAFETY: each cast follows the node's tag; extname is a NUL-terminated string.
    unsafe {
        match (*node).type_ {
            pg_sys::NodeTag::T_CreateExtensionStmt => {
                let name = (*(node as *mut pg_sys::CreateExtensionStmt)).extname;
                !name.is_null() && CStr::from_ptr(name).to_bytes() == b"sqs_ingest"
            }
            pg_sys::NodeTag::T_DropStmt => {
                (*(node as *mut pg_sys::DropStmt)).removeType == pg_sys::ObjectType::OBJECT_EXTENSION
            }
            _ => false,
        }
    }
}
