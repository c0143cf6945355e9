//! Running `cpm-test-apiserver` in tests: a store process, components started from the static
//! pods cpm renders (the command exactly as rendered, host paths mapped under the node's root:
//! the only liberty), and kubectl with a kubeconfig of the test's choosing.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use super::cli::COMPONENTS;
use super::{ROOT_ENV, STORE_URL_ENV, VERSION_ENV};

/// A child process killed when dropped.
#[derive(Debug)]
pub struct Running {
    child: Child,
    /// Where its stderr goes.
    pub log: PathBuf,
}

impl Running {
    /// Sends `signal` (`-TERM`, `-KILL`) and waits for the process to end.
    pub fn stop(&mut self, signal: &str) -> Option<std::process::ExitStatus> {
        crate::process::signal_and_wait(&mut self.child, signal, Duration::from_secs(10))
    }

    /// Whether it is still running.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Its log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn(mut cmd: Command, log: PathBuf) -> Running {
    let file = std::fs::File::create(&log).expect("invariant: log file");
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(file)
        .spawn()
        .expect("invariant: spawn");
    Running { child, log }
}

/// The store of a simulated cluster, with a kubeconfig for a `system:masters` user.
#[derive(Debug)]
pub struct Store {
    /// The process.
    pub process: Running,
    /// `https://127.0.0.1:<port>`.
    pub url: String,
    /// Its admin kubeconfig.
    pub admin_kubeconfig: PathBuf,
}

impl Store {
    /// Starts `bin store` on a free loopback port with the cluster CA of the cpm CA bundle in
    /// `bundle` (request-header authentication for `front-proxy-client` certificates of its
    /// front-proxy CA), reporting `version`, and waits until it serves.
    pub fn start(bin: &Path, bundle: &Path, dir: &Path, version: &str) -> Self {
        let admin = dir.join("store-admin.conf");
        let mut cmd = Command::new(bin);
        cmd.arg("store")
            .args(["--listen", "127.0.0.1:0"])
            .arg("--ca-cert")
            .arg(bundle.join("ca.crt"))
            .arg("--ca-key")
            .arg(bundle.join("ca.key"))
            .arg("--requestheader-client-ca-file")
            .arg(bundle.join("front-proxy-ca.crt"))
            .args(["--requestheader-allowed-names", "front-proxy-client"])
            .args(["--kubernetes-version", version])
            .arg("--admin-kubeconfig")
            .arg(&admin);
        let mut process = spawn(cmd, dir.join("store.log"));
        let deadline = Instant::now() + Duration::from_secs(20);
        while !admin.exists() {
            assert!(process.alive(), "the store exited: {}", process.log_text());
            assert!(
                Instant::now() < deadline,
                "the store did not start: {}",
                process.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let text = std::fs::read_to_string(&admin).expect("invariant: kubeconfig");
        let url = text
            .lines()
            .find_map(|l| l.trim().strip_prefix("server: "))
            .expect("invariant: a server in the kubeconfig")
            .to_string();
        Self {
            process,
            url,
            admin_kubeconfig: admin,
        }
    }
}

/// Links named `kube-apiserver`, `kube-controller-manager` and `kube-scheduler` to `bin` in
/// `dir`, as a simulated kubelet puts the binary where the image's would be.
pub fn link_components(bin: &Path, dir: &Path) -> PathBuf {
    std::fs::create_dir_all(dir).expect("invariant: mkdir");
    for name in COMPONENTS {
        let link = dir.join(name);
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(bin, &link).expect("invariant: symlink");
    }
    dir.to_path_buf()
}

/// A static pod's container command and image, as rendered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaticPod {
    /// `command` (the binary's name, then its flags).
    pub command: Vec<String>,
    /// `image`.
    pub image: String,
}

impl StaticPod {
    /// Reads `etc/kubernetes/manifests/<name>.yaml` under `root`.
    pub fn read(root: &Path, name: &str) -> Self {
        let path = root.join(format!("etc/kubernetes/manifests/{name}.yaml"));
        let text = std::fs::read_to_string(&path).expect("invariant: manifest");
        Self::parse(&text)
    }

    /// Parses a rendered static pod.
    pub fn parse(text: &str) -> Self {
        let pod: serde_json::Value = serde_saphyr::from_str(text).expect("invariant: YAML");
        let c = &pod["spec"]["containers"][0];
        let command = c["command"]
            .as_array()
            .expect("invariant: a command")
            .iter()
            .map(|a| a.as_str().unwrap_or_default().to_string())
            .collect();
        Self {
            command,
            image: c["image"].as_str().unwrap_or_default().to_string(),
        }
    }

    /// The image's tag (`v1.33.5`).
    pub fn tag(&self) -> &str {
        self.image.rsplit_once(':').map_or("", |(_, t)| t)
    }

    /// The command with every `/etc/kubernetes/` path under `root`.
    pub fn mapped(&self, root: &Path) -> Vec<String> {
        let host = root.join("etc/kubernetes");
        let map = |v: &str| match v.strip_prefix("/etc/kubernetes/") {
            Some(rest) => host.join(rest).display().to_string(),
            None => v.to_string(),
        };
        self.command
            .iter()
            .map(|a| match a.split_once('=') {
                Some((flag, value)) if flag.starts_with("--") => format!("{flag}={}", map(value)),
                _ => map(a),
            })
            .collect()
    }

    /// Runs the command (its first word from `bin_dir`, see [`link_components`]) with the
    /// store's URL, the image tag and the root in the environment.
    pub fn spawn(&self, root: &Path, bin_dir: &Path, store_url: &str, log: PathBuf) -> Running {
        let args = self.mapped(root);
        let mut cmd = Command::new(bin_dir.join(&args[0]));
        cmd.args(&args[1..])
            .env(STORE_URL_ENV, store_url)
            .env(VERSION_ENV, self.tag())
            .env(ROOT_ENV, root)
            .env_remove("RUST_LOG");
        spawn(cmd, log)
    }
}

/// Polls `url` until it answers `want` (every 100 ms, up to 30 s); false if it never does.
pub async fn wait_for(url: &str, probe: &crate::https::Probe<'_>, want: u16) -> bool {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if crate::https::get(url, probe)
            .await
            .is_ok_and(|a| a.status == want)
        {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

/// kubectl with a kubeconfig, optionally another server or a token, and its own cache and
/// home, so tests neither share discovery caches nor read the machine's `~/.kube`.
#[derive(Debug, Clone)]
pub struct Kubectl {
    /// The binary.
    pub bin: PathBuf,
    /// The kubeconfig.
    pub kubeconfig: PathBuf,
    /// `--server`.
    pub server: Option<String>,
    /// The token its kubeconfig holds instead of a client certificate ([`Kubectl::with_token`]).
    pub token: Option<String>,
    /// A private directory for the cache and `HOME`.
    pub home: PathBuf,
}

impl Kubectl {
    /// kubectl from `KUBECTL_BIN` or `PATH` (`None`: skip locally, panic under `CI=true`).
    pub fn find(kubeconfig: &Path, home: &Path) -> Option<Self> {
        let bin = crate::etcd::find_tool("kubectl", "KUBECTL_BIN")?;
        std::fs::create_dir_all(home).expect("invariant: mkdir");
        Some(Self {
            bin,
            kubeconfig: kubeconfig.to_path_buf(),
            server: None,
            token: None,
            home: home.to_path_buf(),
        })
    }

    /// The same kubectl aimed at `server`.
    pub fn at(&self, server: &str) -> Self {
        Self {
            server: Some(server.to_string()),
            ..self.clone()
        }
    }

    /// The same kubectl authenticating with `token` only: a kubeconfig with the cluster of
    /// this one (its first) and a user holding just the token.
    pub fn with_token(&self, token: &str) -> Self {
        let text = std::fs::read_to_string(&self.kubeconfig).expect("invariant: kubeconfig");
        let config: serde_json::Value = serde_saphyr::from_str(&text).expect("invariant: YAML");
        let cluster = &config["clusters"][0]["cluster"];
        let yaml = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: {}\n    certificate-authority-data: {}\nusers:\n- name: t\n  user:\n    token: {token}\ncontexts:\n- name: c\n  context:\n    cluster: c\n    user: t\ncurrent-context: c\n",
            cluster["server"].as_str().unwrap_or_default(),
            cluster["certificate-authority-data"]
                .as_str()
                .unwrap_or_default(),
        );
        let n = std::fs::read_dir(&self.home).map_or(0, Iterator::count);
        let path = self.home.join(format!("token-{n}.conf"));
        cpm_core::apply::write_atomic(&path, yaml.as_bytes(), 0o600, None, None)
            .expect("invariant: write kubeconfig");
        Self {
            kubeconfig: path,
            token: Some(token.to_string()),
            ..self.clone()
        }
    }

    /// The command, ready for more arguments.
    pub fn command(&self) -> Command {
        let mut cmd = Command::new(&self.bin);
        cmd.arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .arg("--cache-dir")
            .arg(self.home.join("cache"))
            .env("HOME", &self.home)
            .env_remove("KUBECONFIG");
        if let Some(s) = &self.server {
            cmd.args(["--server", s]);
        }
        cmd
    }

    /// Runs `kubectl <args>`.
    pub fn run(&self, args: &[&str]) -> Output {
        self.command()
            .args(args)
            .output()
            .expect("invariant: kubectl runs")
    }

    /// Runs `kubectl <args>`, asserting success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "kubectl {}: {}{}",
            args.join(" "),
            crate::process::stdout(&out),
            crate::process::stderr(&out)
        );
        crate::process::stdout(&out)
    }
}
