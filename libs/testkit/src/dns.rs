//! A real authoritative DNS server for tests: NSD (Debian package `nsd`) on a loopback port, serving
//! zones the test writes as ordinary zone-file text and edits while the test runs.
//!
//! Each [`DnsServer`] is its own NSD process with its own configuration, zones and control socket
//! in a fresh temporary directory, so tests never share DNS state. Edits are served before
//! [`DnsServer::set_zone`] returns: it reloads the zone and then asks NSD over DNS until the new
//! SOA serial is answered, so a test can query right away without sleeping.
//!
//! ```no_run
//! # async fn example() {
//! let mut dns = email2sms_testkit::dns::DnsServer::start().await;
//! dns.set_zone("example.com", r#"@ TXT "v=spf1 -all""#).await;
//! // point the code under test at dns.addr()
//! # }
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tokio::net::UdpSocket;

/// How long a test waits for NSD to start or to serve an edited zone before failing.
const READY_LIMIT: Duration = Duration::from_secs(10);

/// An NSD server on `127.0.0.1:<port>` that the test controls.
#[derive(Debug)]
pub struct DnsServer {
    addr: SocketAddr,
    dir: PathBuf,
    nsd: Option<Child>,
    /// Zone origin → the SOA serial last written, bumped on every edit so a reload is observable.
    serials: BTreeMap<String, u32>,
    /// Zones registered without a zone file, which NSD answers with SERVFAIL.
    failing: BTreeSet<String>,
    /// Holds the port while NSD is stopped, reading nothing, so queries time out the way they do
    /// against a dead server behind a firewall (instead of an instant ICMP "port unreachable").
    silent_socket: Option<std::net::UdpSocket>,
}

impl DnsServer {
    /// Starts NSD on a free loopback port with no zones.
    ///
    /// # Panics
    /// When `nsd` is not installed (`scripts/ensure-tools` installs it) or does not start.
    pub async fn start() -> DnsServer {
        let dir = std::env::temp_dir().join(format!("email2sms-dns-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(dir.join("zones")).expect("create the DNS server directory");
        let port = free_loopback_port();
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        std::fs::write(dir.join("nsd.conf"), nsd_config(&dir, port)).expect("write nsd.conf");
        let mut server = DnsServer {
            addr,
            dir,
            nsd: None,
            serials: BTreeMap::new(),
            failing: BTreeSet::new(),
            silent_socket: None,
        };
        server.launch().await;
        server
    }

    /// The `ip:port` to give the code under test as its DNS server.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Creates or replaces the zone `origin` and waits until NSD serves it.
    ///
    /// `records` is zone-file text relative to `origin` (for example `@ TXT "a" "b"` or
    /// `www CNAME target`); the SOA and NS records are added here, with a serial that increases
    /// on every call.
    pub async fn set_zone(&mut self, origin: &str, records: &str) {
        let origin = origin.trim_end_matches('.').to_ascii_lowercase();
        let serial = self.serials.get(&origin).map_or(1, |s| s + 1);
        let text = format!(
            "$ORIGIN {origin}.\n$TTL 1\n\
             @ IN SOA ns.{origin}. hostmaster.{origin}. {serial} 3600 600 86400 1\n\
             @ IN NS ns.{origin}.\n\
             {records}\n"
        );
        std::fs::write(self.zone_file(&origin), text).expect("write the zone file");
        let was_failing = self.failing.remove(&origin);
        let is_new = self.serials.insert(origin.clone(), serial).is_none() && !was_failing;
        if self.nsd.is_some() {
            if is_new {
                self.control(&["addzone", &origin, "test"]).await;
            } else {
                self.control(&["reload", &origin]).await;
            }
            self.wait_for_serial(&origin, serial).await;
        }
    }

    /// Registers the zone `origin` without any data, so that NSD answers SERVFAIL for every name
    /// in it (as a real server does for a zone it failed to load), and waits until it does.
    /// A later [`DnsServer::set_zone`] gives it records.
    ///
    /// # Panics
    /// When the zone already has records.
    pub async fn set_failing_zone(&mut self, origin: &str) {
        let origin = origin.trim_end_matches('.').to_ascii_lowercase();
        assert!(
            !self.serials.contains_key(&origin),
            "{origin} already has records; choose a zone of its own to fail"
        );
        if self.failing.insert(origin.clone()) && self.nsd.is_some() {
            self.control(&["addzone", &origin, "test"]).await;
            self.wait_for_servfail(&origin).await;
        }
    }

    /// Stops NSD, leaving the port silent: every query now times out. [`DnsServer::resume`] starts
    /// it again with the same zones.
    pub async fn stop(&mut self) {
        self.shutdown();
        // Taking the port back right away is safe: NSD has exited and released it.
        self.silent_socket = Some(
            std::net::UdpSocket::bind(self.addr).expect("hold the DNS port while NSD is stopped"),
        );
    }

    /// Starts NSD again after [`DnsServer::stop`], serving the zones as last written.
    pub async fn resume(&mut self) {
        self.silent_socket = None;
        self.launch().await;
    }

    fn zone_file(&self, origin: &str) -> PathBuf {
        self.dir.join("zones").join(format!("{origin}.zone"))
    }

    async fn launch(&mut self) {
        let zone_list: String = self
            .serials
            .keys()
            .chain(&self.failing)
            .map(|origin| format!("add {origin} test\n"))
            .collect();
        // NSD reads the zones to serve at start from this list (nsd-control addzone appends to it).
        std::fs::write(
            self.dir.join("zone.list"),
            format!("# NSD zone list\n# name pattern\n{zone_list}"),
        )
        .expect("write the zone list");
        let child = Command::new(nsd_tool("nsd"))
            .arg("-d")
            .arg("-c")
            .arg(self.dir.join("nsd.conf"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(self.dir.join("nsd.stderr")).expect("create nsd.stderr"))
            .spawn()
            .expect("start nsd: install it with `apt-get install nsd` (scripts/ensure-tools does)");
        self.nsd = Some(child);
        let deadline = tokio::time::Instant::now() + READY_LIMIT;
        while probe(self.addr, "invalid").await.is_none() {
            if let Some(status) = self.nsd.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                panic!(
                    "nsd exited at start with {status}; its log:\n{}{}",
                    std::fs::read_to_string(self.dir.join("nsd.log")).unwrap_or_default(),
                    std::fs::read_to_string(self.dir.join("nsd.stderr")).unwrap_or_default()
                );
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "nsd did not answer on {} within {READY_LIMIT:?}",
                self.addr
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        for (origin, serial) in self.serials.clone() {
            self.wait_for_serial(&origin, serial).await;
        }
        for origin in self.failing.clone() {
            self.wait_for_servfail(&origin).await;
        }
    }

    async fn control(&self, args: &[&str]) {
        let output = tokio::process::Command::new(nsd_tool("nsd-control"))
            .arg("-c")
            .arg(self.dir.join("nsd.conf"))
            .args(args)
            .output()
            .await
            .expect("run nsd-control");
        assert!(
            output.status.success(),
            "nsd-control {args:?} failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }

    async fn wait_for_serial(&self, origin: &str, serial: u32) {
        self.wait_until(origin, &format!("serial {serial}"), |answer| {
            answer.serial == Some(serial)
        })
        .await;
    }

    async fn wait_for_servfail(&self, origin: &str) {
        self.wait_until(origin, "SERVFAIL", |answer| answer.rcode == SERVFAIL)
            .await;
    }

    async fn wait_until(&self, origin: &str, what: &str, served: impl Fn(&SoaAnswer) -> bool) {
        let deadline = tokio::time::Instant::now() + READY_LIMIT;
        loop {
            if probe(self.addr, origin).await.is_some_and(|a| served(&a)) {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "nsd did not serve {what} for {origin} within {READY_LIMIT:?}; its log:\n{}",
                std::fs::read_to_string(self.dir.join("nsd.log")).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    fn shutdown(&mut self) {
        let Some(mut child) = self.nsd.take() else {
            return;
        };
        // `nsd-control stop` ends NSD's server children too; killing only the main process would
        // leave them holding the port.
        let _ = Command::new(nsd_tool("nsd-control"))
            .arg("-c")
            .arg(self.dir.join("nsd.conf"))
            .arg("stop")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        for _ in 0..200 {
            if child.try_wait().ok().flatten().is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        self.shutdown();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// NSD's programs live in /usr/sbin, which is not on every user's PATH.
fn nsd_tool(name: &str) -> PathBuf {
    let sbin = Path::new("/usr/sbin").join(name);
    if sbin.exists() {
        sbin
    } else {
        PathBuf::from(name)
    }
}

fn nsd_config(dir: &Path, port: u16) -> String {
    let dir = dir.display();
    // No chroot, no user switch and one server process: NSD runs as the test's own user. The
    // control channel is a Unix socket, which needs no TLS keys. Rate limiting is off because
    // the benchmark sends thousands of queries from one address.
    format!(
        r#"server:
  ip-address: 127.0.0.1@{port}
  port: {port}
  do-ip6: no
  username: ""
  chroot: ""
  zonesdir: "{dir}/zones"
  zonelistfile: "{dir}/zone.list"
  database: ""
  pidfile: "{dir}/nsd.pid"
  xfrdfile: "{dir}/xfrd.state"
  xfrdir: "{dir}"
  logfile: "{dir}/nsd.log"
  server-count: 1
  verbosity: 1
  hide-version: yes
  rrl-ratelimit: 0
remote-control:
  control-enable: yes
  control-interface: "{dir}/nsd.ctl"
pattern:
  name: "test"
  zonefile: "%s.zone"
"#
    )
}

/// A port free for both UDP and TCP on 127.0.0.1 at the time of the call.
fn free_loopback_port() -> u16 {
    loop {
        let udp = std::net::UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind a UDP port");
        let port = udp.local_addr().expect("local address").port();
        if std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok() {
            return port;
        }
    }
}

const SERVFAIL: u8 = 2;

/// What a server said to a SOA query.
#[derive(Debug)]
struct SoaAnswer {
    rcode: u8,
    serial: Option<u32>,
}

/// Asks `server` for the SOA of `zone`; `None` when nothing answered within 200 ms.
async fn probe(server: SocketAddr, zone: &str) -> Option<SoaAnswer> {
    let socket = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).await.ok()?;
    let id: u16 = rand_id();
    let mut query = Vec::with_capacity(64);
    query.extend_from_slice(&id.to_be_bytes());
    query.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0, 0]); // no flags, one question
    for label in zone.split('.').filter(|l| !l.is_empty()) {
        query.push(label.len() as u8);
        query.extend_from_slice(label.as_bytes());
    }
    query.extend_from_slice(&[0, 0, 6, 0, 1]); // root, type SOA, class IN
    socket.send_to(&query, server).await.ok()?;
    let mut buf = [0u8; 1500];
    let len = tokio::time::timeout(Duration::from_millis(200), socket.recv(&mut buf))
        .await
        .ok()?
        .ok()?;
    let answer = &buf[..len];
    if answer.len() < 12 || answer[..2] != id.to_be_bytes() {
        return None;
    }
    Some(SoaAnswer {
        rcode: answer[3] & 0x0f,
        serial: parse_soa_serial(answer),
    })
}

fn parse_soa_serial(answer: &[u8]) -> Option<u32> {
    let answers = u16::from_be_bytes([answer[6], answer[7]]);
    if answers == 0 {
        return None;
    }
    let mut at = skip_name(answer, 12)? + 4; // the question: name, type, class
    at = skip_name(answer, at)?; // the answer's owner name
    let rtype = u16::from_be_bytes([*answer.get(at)?, *answer.get(at + 1)?]);
    if rtype != 6 {
        return None;
    }
    at += 10; // type, class, TTL, RDLENGTH
    at = skip_name(answer, at)?; // MNAME
    at = skip_name(answer, at)?; // RNAME
    Some(u32::from_be_bytes(answer.get(at..at + 4)?.try_into().ok()?))
}

/// The offset just past the (possibly compressed) domain name at `at`.
fn skip_name(message: &[u8], mut at: usize) -> Option<usize> {
    loop {
        let len = *message.get(at)? as usize;
        if len == 0 {
            return Some(at + 1);
        }
        if len & 0xC0 == 0xC0 {
            return Some(at + 2);
        }
        at += 1 + len;
    }
}

fn rand_id() -> u16 {
    (uuid::Uuid::new_v4().as_u128() & 0xffff) as u16
}
