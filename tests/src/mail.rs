//! Mail as a real client sends it: Python's smtplib, in a process of its own, over a few
//! connections at once, keeping the SMTP reply each message got. A drill compares these replies
//! with what reached the SMSC: every 250 must come out exactly once.

use std::net::SocketAddr;
use std::time::Duration;

/// One message to send.
#[derive(Debug, Clone)]
pub struct Mail {
    /// The envelope sender and the From header.
    pub from: String,
    /// The envelope recipient and the To header (`<number>@<sms domain>`).
    pub to: String,
    pub subject: String,
    pub body: String,
    /// The Message-ID without angle brackets, by which `ListMessages` finds the SMS.
    pub message_id: String,
}

impl Mail {
    /// A message from `from` to `to` whose body is `body` and whose Message-ID is new.
    pub fn new(from: &str, to: &str, body: &str) -> Mail {
        Mail {
            from: from.to_owned(),
            to: to.to_owned(),
            subject: String::new(),
            body: body.to_owned(),
            message_id: format!("{}@e2e.test", uuid::Uuid::new_v4().simple()),
        }
    }
}

/// The reply a message got at the end of its transaction (or the first refusal on its way).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The SMTP code; 0 when the connection was lost before any reply.
    pub code: u16,
    pub text: String,
}

impl Reply {
    pub fn accepted(&self) -> bool {
        self.code == 250
    }
}

/// The client: one thread per connection taking messages from a shared queue, one output line per
/// message (`index code text`). A refusal (4xx/5xx) leaves the connection usable (RSET); a lost
/// connection is reopened for the next message.
const CLIENT: &str = r#"
import json, queue, smtplib, sys, threading
port, connections, path = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
mails = json.load(open(path))
work = queue.Queue()
for i, m in enumerate(mails):
    work.put((i, m))
out = threading.Lock()
def say(i, code, text):
    with out:
        print(i, code, text.replace('\n', ' '), flush=True)
def connect():
    s = smtplib.SMTP('127.0.0.1', port, timeout=60)
    s.ehlo('client.e2e.test')
    return s
def run():
    s = None
    while True:
        try:
            i, m = work.get_nowait()
        except queue.Empty:
            break
        msg = ('From: %s\r\nTo: %s\r\nSubject: %s\r\nMessage-ID: <%s>\r\n'
               'Content-Type: text/plain; charset=utf-8\r\n\r\n%s\r\n'
               % (m['from'], m['to'], m['subject'], m['message_id'], m['body'])).encode()
        try:
            if s is None:
                s = connect()
            code, text = s.mail(m['from'])
            if code != 250:
                s.rset()
                say(i, code, text.decode())
                continue
            code, text = s.rcpt(m['to'])
            if code != 250:
                s.rset()
                say(i, code, text.decode())
                continue
            code, text = s.data(msg)
            say(i, code, text.decode())
            if code != 250:
                s.rset()
        except smtplib.SMTPServerDisconnected as e:
            say(i, 0, 'disconnected: %s' % e)
            s = None
        except smtplib.SMTPResponseException as e:
            say(i, e.smtp_code, e.smtp_error.decode(errors='replace'))
            try:
                s.rset()
            except Exception:
                s = None
        except OSError as e:
            say(i, 0, 'connection failed: %s' % e)
            s = None
    if s is not None:
        try:
            s.quit()
        except Exception:
            pass
threads = [threading.Thread(target=run) for _ in range(connections)]
for t in threads:
    t.start()
for t in threads:
    t.join()
"#;

/// Sends `mails` to the SMTP server at `smtp` over `connections` connections at once and returns
/// each message's reply, in the order of `mails`.
///
/// # Panics
/// When Python cannot be run, or does not finish within two minutes.
pub async fn send_all(smtp: SocketAddr, mails: &[Mail], connections: usize) -> Vec<Reply> {
    let dir = tempfile::tempdir().expect("a directory for the messages");
    let path = dir.path().join("mails.json");
    let json: Vec<serde_json::Value> = mails
        .iter()
        .map(|m| {
            serde_json::json!({
                "from": m.from, "to": m.to, "subject": m.subject,
                "body": m.body, "message_id": m.message_id,
            })
        })
        .collect();
    std::fs::write(&path, serde_json::to_vec(&json).expect("encode")).expect("write the messages");
    let output = tokio::process::Command::new(crate::python())
        .arg("-c")
        .arg(CLIENT)
        .arg(smtp.port().to_string())
        .arg(connections.max(1).to_string())
        .arg(&path)
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(120), output)
        .await
        .expect("smtplib finishes within 2 minutes")
        .expect("run python (scripts/ensure-tools)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let mut replies: Vec<Option<Reply>> = vec![None; mails.len()];
    for line in stdout.lines() {
        let mut words = line.splitn(3, ' ');
        let (Some(index), Some(code)) = (words.next(), words.next()) else {
            continue;
        };
        let (Ok(index), Ok(code)) = (index.parse::<usize>(), code.parse::<u16>()) else {
            continue;
        };
        if let Some(slot) = replies.get_mut(index) {
            *slot = Some(Reply {
                code,
                text: words.next().unwrap_or_default().to_owned(),
            });
        }
    }
    replies
        .into_iter()
        .enumerate()
        .map(|(index, reply)| {
            reply.unwrap_or_else(|| {
                panic!(
                    "smtplib reported nothing for message {index}; stdout:\n{stdout}\nstderr:\n{}",
                    String::from_utf8_lossy(&output.stderr)
                )
            })
        })
        .collect()
}

/// Sends one message and returns its reply.
pub async fn send(smtp: SocketAddr, mail: &Mail) -> Reply {
    send_all(smtp, std::slice::from_ref(mail), 1)
        .await
        .remove(0)
}
