//! `fleetauth tls`: a self-signed certificate for a first try of HTTPS (needs no
//! settings and no store).

use std::path::PathBuf;

use clap::Subcommand;
use serde_json::json;

use super::{print_json, CliError};

#[derive(Debug, Subcommand)]
pub enum TlsCommand {
    /// Write a self-signed certificate (cert.pem) and its key (key.pem, mode 0600) into
    /// DIR, for a first try of HTTPS: clients must be told to trust cert.pem.
    SelfSigned {
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// A DNS name or IP address the certificate is valid for (repeatable; default:
        /// localhost, 127.0.0.1, ::1).
        #[arg(long = "san", value_name = "NAME")]
        sans: Vec<String>,
        /// Replace existing files.
        #[arg(long)]
        force: bool,
    },
}

/// Writes `contents` to a new file (or over an old one with `force`); `private`: mode
/// 0600 from the start on Unix.
fn write_new_file(
    path: &std::path::Path,
    contents: &str,
    force: bool,
    private: bool,
) -> Result<(), CliError> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true);
    if force {
        options.create(true).truncate(true);
    } else {
        options.create_new(true);
    }
    #[cfg(unix)]
    if private {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    #[cfg(not(unix))]
    let _ = private;
    let mut file = options.open(path).map_err(|e| {
        let hint = if e.kind() == std::io::ErrorKind::AlreadyExists {
            " (--force replaces it)"
        } else {
            ""
        };
        CliError::Failed(format!("cannot write {}: {e}{hint}", path.display()))
    })?;
    file.write_all(contents.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|e| CliError::Failed(format!("cannot write {}: {e}", path.display())))
}

/// `fleetauth tls self-signed`: prints `{"cert","key","subject_alt_names"}`.
pub fn tls_self_signed(
    out: &std::path::Path,
    sans: &[String],
    force: bool,
) -> Result<(), CliError> {
    let sans: Vec<String> = if sans.is_empty() {
        crate::http::tls::DEFAULT_SANS
            .iter()
            .map(|s| s.to_string())
            .collect()
    } else {
        sans.to_vec()
    };
    if let Some(bad) = sans
        .iter()
        .find(|s| s.is_empty() || s.contains(char::is_whitespace))
    {
        return Err(CliError::Usage(format!(
            "--san {bad:?} is not a DNS name or IP address"
        )));
    }
    let generated =
        crate::http::tls::self_signed(&sans).map_err(|e| CliError::Failed(e.to_string()))?;
    std::fs::create_dir_all(out)
        .map_err(|e| CliError::Failed(format!("cannot create {}: {e}", out.display())))?;
    let cert = out.join("cert.pem");
    let key = out.join("key.pem");
    write_new_file(&key, &generated.key_pem, force, true)?;
    write_new_file(&cert, &generated.cert_pem, force, false)?;
    print_json(json!({
        "cert": cert,
        "key": key,
        "subject_alt_names": sans,
    }));
    Ok(())
}
