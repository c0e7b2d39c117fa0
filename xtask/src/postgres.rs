//! A throwaway PostgreSQL server for the collector's tests: Debian's `postgresql` binaries,
//! a fresh cluster in a temporary directory owned by the `postgres` user (initdb refuses
//! root), listening on a loopback port, trust authentication. Stopped and removed on drop.
//! The tests find it through `TOKENMETER_TEST_POSTGRES_URL`.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::util;

/// The environment variable the collector's tests read.
pub const URL_VAR: &str = "TOKENMETER_TEST_POSTGRES_URL";

pub struct Postgres {
    bin: PathBuf,
    dir: PathBuf,
    pub url: String,
}

/// The newest `/usr/lib/postgresql/<version>/bin`.
fn bin_dir() -> Result<PathBuf> {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .context("PostgreSQL is not installed (`cargo xtask setup --test-deps` installs Debian's postgresql)")?
        .filter_map(|e| {
            let e = e.ok()?;
            Some((e.file_name().to_str()?.parse().ok()?, e.path().join("bin")))
        })
        .collect();
    versions.sort();
    versions
        .pop()
        .map(|(_, bin)| bin)
        .context("no /usr/lib/postgresql/<version>/bin")
}

fn as_postgres(bin: &Path, program: &str) -> std::process::Command {
    let mut cmd = util::command("runuser");
    cmd.args(["-u", "postgres", "--"]).arg(bin.join(program));
    cmd
}

impl Postgres {
    pub fn start(port: u16) -> Result<Postgres> {
        if !util::is_root() {
            bail!("starting a test PostgreSQL needs root (to run it as the postgres user)");
        }
        let bin = bin_dir()?;
        let dir = std::env::temp_dir().join(format!("tokenmeter-pg-{port}"));
        // A server left running by an interrupted run holds the port: stop it first.
        if dir.join("data/postmaster.pid").exists() {
            let _ = util::run(
                as_postgres(&bin, "pg_ctl")
                    .args(["-w", "-m", "immediate", "-D"])
                    .arg(dir.join("data"))
                    .arg("stop"),
            );
        }
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        util::run(util::command("chown").args(["postgres:postgres"]).arg(&dir))?;
        let data = dir.join("data");
        util::run(
            as_postgres(&bin, "initdb")
                .args(["-A", "trust", "-U", "postgres", "--no-sync", "-D"])
                .arg(&data),
        )
        .context("initdb failed")?;
        let options = format!(
            "-p {port} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            dir.display()
        );
        let postgres = Postgres {
            bin: bin.clone(),
            dir: dir.clone(),
            url: format!("postgres://postgres@127.0.0.1:{port}/postgres"),
        };
        util::run(
            as_postgres(&bin, "pg_ctl")
                .args(["-w", "-t", "60", "-D"])
                .arg(&data)
                .args(["-o", &options, "-l"])
                .arg(dir.join("server.log"))
                .arg("start"),
        )
        .with_context(|| {
            format!(
                "pg_ctl start failed; see {}",
                dir.join("server.log").display()
            )
        })?;
        Ok(postgres)
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let _ = util::run(
            as_postgres(&self.bin, "pg_ctl")
                .args(["-w", "-m", "fast", "-D"])
                .arg(self.dir.join("data"))
                .arg("stop"),
        );
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
