//! Keys kept in files, checked the way PostgreSQL checks `ssl_key_file`: who may read the file,
//! and the key it holds. Messages name the problem, never the key.

/// Why a file with this owner and mode may not hold a key, or None when it may. As for
/// PostgreSQL's TLS key: owned by the server's user and closed to group and others (0600), or
/// owned by root and closed to others (0640), so that a key can come from a root-managed secret.
pub fn permission_problem(owner: u32, server_user: u32, mode: u32) -> Option<String> {
    let mode = mode & 0o7777;
    if owner == server_user {
        (mode & 0o077 != 0).then(|| {
            format!("it is open to group or others (mode {mode:04o}): chmod 600 it, as the server's user owns it")
        })
    } else if owner == 0 {
        (mode & 0o037 != 0).then(|| {
            format!(
                "it is open to others, or writable by its group (mode {mode:04o}): root owns it, so chmod 640 at most"
            )
        })
    } else {
        Some(format!("it is owned by uid {owner}, neither the server's user (uid {server_user}) nor root"))
    }
}

/// The key a file holds: its content without one trailing newline.
pub fn key_from(content: &[u8]) -> Result<Vec<u8>, String> {
    let key = content.strip_suffix(b"\n").map(|k| k.strip_suffix(b"\r").unwrap_or(k)).unwrap_or(content);
    if key.is_empty() {
        return Err("it is empty".to_owned());
    }
    Ok(key.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_and_mode_as_for_tls_keys() {
        assert_eq!(permission_problem(999, 999, 0o100600), None);
        assert_eq!(permission_problem(999, 999, 0o400), None);
        assert!(permission_problem(999, 999, 0o640).unwrap().contains("mode 0640"));
        assert!(permission_problem(999, 999, 0o604).is_some());
        assert_eq!(permission_problem(0, 999, 0o640), None);
        assert!(permission_problem(0, 999, 0o644).is_some());
        assert!(permission_problem(0, 999, 0o660).is_some());
        assert!(permission_problem(1000, 999, 0o600).unwrap().contains("uid 1000"));
    }

    #[test]
    fn one_trailing_newline_is_not_part_of_the_key() {
        assert_eq!(key_from(b"secret\n").unwrap(), b"secret");
        assert_eq!(key_from(b"secret\r\n").unwrap(), b"secret");
        assert_eq!(key_from(b"secret").unwrap(), b"secret");
        assert_eq!(key_from(b"secret\n\n").unwrap(), b"secret\n");
        assert_eq!(key_from(b" spaces kept ").unwrap(), b" spaces kept ");
        assert!(key_from(b"\n").is_err());
        assert!(key_from(b"").is_err());
        assert!(!key_from(b"").unwrap_err().contains("secret"));
    }
}
