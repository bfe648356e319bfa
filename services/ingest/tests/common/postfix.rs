//! A real Postfix (the Debian package scripts/ensure-tools installs) relaying to ingest, as a
//! company's mail administrator puts it in front: its own configuration, queue and data
//! directories in a temporary directory, listening on a loopback port, `relayhost` = ingest,
//! `smtp_send_xforward_command = yes`, and 127.0.0.0/8 as `mynetworks`, so test clients bound to
//! any loopback address may relay through it.
//!
//! Mail to `held.test` (where the tests' senders live) goes to Postfix's `retry` transport, so a
//! bounce Postfix writes to such a sender stays in the deferred queue, where [`Postfix::queue`]
//! lists it and [`Postfix::message`] reads it: no mailbox, no second server.
//!
//! Postfix's daemons run as root-started `master`, so the tests that use it need root (as CI
//! and this machine run); without Postfix or root [`Postfix::start`] says so and gives `None`.
//! Every command has a time limit, and the instance is stopped on drop.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

/// The sender domain whose mail Postfix keeps in its queue.
pub const HELD_DOMAIN: &str = "held.test";
/// Longest a Postfix command (start, stop, postqueue, postcat) may take: `postfix start` takes
/// about 0.3 s here, `stop` waits for the daemons to exit.
const COMMAND_LIMIT: Duration = Duration::from_secs(30);

pub struct Postfix {
    dir: tempfile::TempDir,
    /// Where clients connect to relay through it.
    pub addr: SocketAddr,
}

impl Postfix {
    /// Starts an instance relaying to `relayhost`; `None` (after saying why on stderr) when
    /// Postfix is not installed or we are not root.
    pub async fn start(relayhost: SocketAddr) -> Option<Postfix> {
        if !Path::new("/usr/sbin/postfix").exists() {
            eprintln!(
                "SKIPPED: Postfix is not installed (/usr/sbin/postfix); `eval \"$(scripts/ensure-tools)\"` installs it"
            );
            return None;
        }
        if !is_root() {
            eprintln!("SKIPPED: a private Postfix instance needs root to start its master");
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        // The daemons run as the postfix user and must reach the queue below it.
        set_mode(dir.path(), 0o755);
        for sub in ["conf", "queue"] {
            std::fs::create_dir(dir.path().join(sub)).unwrap();
        }
        // A free port, taken back a moment before Postfix binds it.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let root = dir.path().display();
        let main_cf = format!(
            "compatibility_level = 3.6
queue_directory = {root}/queue
data_directory = {root}/data
mail_owner = postfix
setgid_group = postdrop
myhostname = relay.test
mydomain = relay.test
myorigin = relay.test
mydestination =
alias_maps =
alias_database =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
smtpd_relay_restrictions = permit_mynetworks, reject
# No DNS here: the client is \"unknown\" and the relay host an address literal.
smtpd_peername_lookup = no
relayhost = [127.0.0.1]:{relay_port}
smtp_send_xforward_command = yes
transport_maps = inline:{{{HELD_DOMAIN}=retry:held}}
maillog_file = {root}/maillog
maillog_file_prefixes = {root}
",
            relay_port = relayhost.port(),
        );
        std::fs::write(dir.path().join("conf/main.cf"), main_cf).unwrap();
        // No chroot: the queue is a temporary directory, not /var/spool/postfix.
        let master_cf = format!(
            "127.0.0.1:{port} inet n - n - - smtpd
pickup    unix  n - n 60 1 pickup
cleanup   unix  n - n -  0 cleanup
qmgr      unix  n - n 300 1 qmgr
rewrite   unix  - - n -  - trivial-rewrite
bounce    unix  - - n -  0 bounce
defer     unix  - - n -  0 bounce
trace     unix  - - n -  0 bounce
verify    unix  - - n -  1 verify
flush     unix  n - n 1000? 0 flush
proxymap  unix  - - n -  - proxymap
smtp      unix  - - n -  - smtp
relay     unix  - - n -  - smtp
showq     unix  n - n -  - showq
error     unix  - - n -  - error
retry     unix  - - n -  - error
discard   unix  - - n -  - discard
anvil     unix  - - n -  1 anvil
scache    unix  - - n -  1 scache
postlog   unix-dgram n - n - 1 postlogd
"
        );
        std::fs::write(dir.path().join("conf/master.cf"), master_cf).unwrap();
        let postfix = Postfix { dir, addr };
        let (ok, output) = postfix.run("/usr/sbin/postfix", &["start"]).await;
        assert!(ok, "postfix start failed: {output}\n{}", postfix.log());
        email2sms_testkit::eventually(
            "Postfix listening",
            || async { tokio::net::TcpStream::connect(addr).await.is_ok() },
            |listening| *listening,
        )
        .await;
        Some(postfix)
    }

    fn config(&self) -> PathBuf {
        self.dir.path().join("conf")
    }

    /// Runs a Postfix command with `-c <our config>` and a time limit; (success, stdout+stderr).
    async fn run(&self, program: &str, args: &[&str]) -> (bool, String) {
        let mut command = tokio::process::Command::new(program);
        command
            .arg("-c")
            .arg(self.config())
            .args(args)
            .stdin(Stdio::null())
            .kill_on_drop(true);
        let output = tokio::time::timeout(COMMAND_LIMIT, command.output())
            .await
            .unwrap_or_else(|_| panic!("{program} {args:?} took longer than {COMMAND_LIMIT:?}"))
            .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
        let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
        text.push_str(&String::from_utf8_lossy(&output.stderr));
        (output.status.success(), text)
    }

    /// Postfix's log so far (`maillog_file`).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("maillog")).unwrap_or_default()
    }

    /// Every message in the queue, as `postqueue -j` describes it (one JSON object each).
    pub async fn queue(&self) -> Vec<serde_json::Value> {
        let (ok, output) = self.run("/usr/sbin/postqueue", &["-j"]).await;
        assert!(ok, "postqueue -j: {output}");
        output
            .lines()
            .filter(|line| line.starts_with('{'))
            .map(|line| serde_json::from_str(line).unwrap())
            .collect()
    }

    /// Asks Postfix to deliver its deferred mail now (`postqueue -f`).
    pub async fn flush(&self) {
        let (ok, output) = self.run("/usr/sbin/postqueue", &["-f"]).await;
        assert!(ok, "postqueue -f: {output}");
    }

    /// The headers and body of queued message `queue_id` (`postcat -bh`).
    pub async fn message(&self, queue_id: &str) -> String {
        let (ok, output) = self
            .run("/usr/sbin/postcat", &["-bh", "-q", queue_id])
            .await;
        assert!(ok, "postcat {queue_id}: {output}");
        output
    }
}

impl Drop for Postfix {
    fn drop(&mut self) {
        // Synchronous, bounded: `postfix stop` returns once master has been told; if it hangs,
        // the master we started (its pid file) is killed.
        let child = std::process::Command::new("/usr/sbin/postfix")
            .arg("-c")
            .arg(self.config())
            .arg("stop")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        if let Ok(mut child) = child {
            let deadline = std::time::Instant::now() + COMMAND_LIMIT;
            while child.try_wait().ok().flatten().is_none() {
                if std::time::Instant::now() > deadline {
                    let _ = child.kill();
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        // The daemons exit once master does; wait until it has, so the queue can be removed.
        let pid_file = self.dir.path().join("queue/pid/master.pid");
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while let Some(pid) = std::fs::read_to_string(&pid_file)
            .ok()
            .and_then(|text| text.trim().parse::<u32>().ok())
        {
            if !Path::new(&format!("/proc/{pid}")).exists() {
                break;
            }
            if std::time::Instant::now() > deadline {
                let _ = std::process::Command::new("kill")
                    .args(["-KILL", &pid.to_string()])
                    .status();
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status").is_ok_and(|status| {
        status
            .lines()
            .find(|line| line.starts_with("Uid:"))
            .and_then(|line| line.split_whitespace().nth(2))
            == Some("0")
    })
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}
