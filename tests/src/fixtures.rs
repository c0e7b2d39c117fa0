//! Paths to the fixture programs, certificates, and the C fixtures compiled on demand.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::wait;

/// The `tests/fixtures` folder.
pub fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures")
}

/// One fixture file, checked to exist.
pub fn fixture(name: &str) -> PathBuf {
    let path = fixtures_dir().join(name);
    assert!(path.is_file(), "fixture {} is missing", path.display());
    path
}

/// The workspace root (the parent of this crate).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// The Python interpreter for the fixtures: `TOKENMETER_TEST_PYTHON`, else `/usr/bin/python3`
/// (a real binary, so its pid is the one that calls libssl and its comm is `python3`), else
/// `python3` from PATH.
pub fn python() -> PathBuf {
    tool("TOKENMETER_TEST_PYTHON", "/usr/bin/python3", "python3")
}

/// Node.js: `TOKENMETER_TEST_NODE`, else `/usr/bin/node`, else `node` from PATH.
pub fn node() -> PathBuf {
    tool("TOKENMETER_TEST_NODE", "/usr/bin/node", "node")
}

fn tool(env: &str, preferred: &str, fallback: &str) -> PathBuf {
    if let Some(path) = std::env::var_os(env) {
        return PathBuf::from(path);
    }
    if Path::new(preferred).is_file() {
        PathBuf::from(preferred)
    } else {
        PathBuf::from(fallback)
    }
}

/// A self-signed certificate for localhost/127.0.0.1 in its own temporary directory.
pub struct Certs {
    pub dir: tempfile::TempDir,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Certs {
    /// Runs `fixtures/gen_cert.sh` into a fresh temporary directory.
    pub fn generate() -> Certs {
        let dir = tempdir("certs");
        wait::run(
            Command::new("sh")
                .arg(fixture("gen_cert.sh"))
                .arg(dir.path()),
            Duration::from_secs(60),
        )
        .assert_success("gen_cert.sh");
        let cert = dir.path().join("cert.pem");
        let key = dir.path().join("key.pem");
        assert!(
            cert.is_file() && key.is_file(),
            "gen_cert.sh wrote no cert.pem/key.pem"
        );
        Certs { dir, cert, key }
    }
}

/// A temporary directory that other users can enter (the unprivileged agent test needs it).
pub fn tempdir(tag: &str) -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix(&format!("tokenmeter-e2e-{tag}-"))
        .tempdir()
        .expect("cannot create a temporary directory");
    set_mode(dir.path(), 0o755);
    dir
}

/// chmod, panicking on failure.
pub fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {mode:o} {}: {e}", path.display()));
}

/// Where Debian's android-libboringssl-dev puts BoringSSL.
pub const BORINGSSL_INCLUDE: &str = "/usr/include/android";
pub const BORINGSSL_LIB_DIR: &str = "/usr/lib/x86_64-linux-gnu/android";

/// Compiles `fixtures/boringssl_client.c` into `out_dir` and returns the binary.
pub fn build_boringssl_client(out_dir: &Path) -> PathBuf {
    assert!(
        Path::new(BORINGSSL_LIB_DIR).join("libssl.so.0").is_file()
            && Path::new(BORINGSSL_INCLUDE).join("openssl/ssl.h").is_file(),
        "BoringSSL is missing: apt-get install -y android-libboringssl-dev"
    );
    let out = out_dir.join("boringssl_client");
    let mut gcc = Command::new("gcc");
    gcc.args(["-Wall", "-Wextra", "-O2"])
        .arg(format!("-I{BORINGSSL_INCLUDE}"))
        .arg(fixture("boringssl_client.c"))
        .arg(format!("-L{BORINGSSL_LIB_DIR}"))
        .args(["-l:libssl.so.0", "-l:libcrypto.so.0"])
        .arg(format!("-Wl,-rpath,{BORINGSSL_LIB_DIR}"))
        .arg("-o")
        .arg(&out);
    wait::run(&mut gcc, Duration::from_secs(120)).assert_success("gcc boringssl_client.c");
    out
}

/// Builds `fixtures/not_ssl.c` as a shared object named `name` in `out_dir` (a library whose
/// name looks like libssl but that exports no SSL_* symbol).
pub fn build_fake_libssl(out_dir: &Path, name: &str) -> PathBuf {
    let out = out_dir.join(name);
    let mut gcc = Command::new("gcc");
    gcc.args(["-Wall", "-Wextra", "-O2", "-shared", "-fPIC"])
        .arg(format!("-Wl,-soname,{name}"))
        .arg(fixture("not_ssl.c"))
        .arg("-o")
        .arg(&out);
    wait::run(&mut gcc, Duration::from_secs(120)).assert_success("gcc -shared not_ssl.c");
    out
}
