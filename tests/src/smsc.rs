//! The SMSC every SMS of the end-to-end tests goes to: the npm `smpp` server of the dispatch tests
//! (`services/dispatch/tests/npm-smsc/smsc.js`, installed by `scripts/ensure-tools`), a separate
//! process that is not this project's code. It answers every submit_sm with a message id and a
//! DELIVRD receipt, and prints one line per event, which is how a drill counts what reached it.

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};

/// The npm package's directory: `EMAIL2SMS_TEST_NPM_SMSC`, else where `scripts/ensure-tools`
/// installs it.
fn node_modules() -> PathBuf {
    std::env::var_os("EMAIL2SMS_TEST_NPM_SMSC")
        .map(Into::into)
        .unwrap_or_else(|| crate::workspace_root().join("target/tools/npm-smsc/node_modules"))
}

/// One submit_sm as the SMSC read it.
#[derive(Debug, Clone)]
pub struct Submit {
    /// The id its submit_sm_resp gave.
    pub message_id: String,
    /// The destination address as written on the wire (E.164 without the `+`).
    pub destination: String,
    /// The short_message bytes, read as text (dispatch writes GSM 7-bit unpacked, one byte per
    /// character, which is ASCII for letters, digits and spaces).
    pub text: String,
}

/// The running simulator.
#[derive(Debug)]
pub struct NpmSmsc {
    port: u16,
    /// Its stdout lines (see smsc.js).
    lines: Arc<Mutex<Vec<String>>>,
    _child: tokio::process::Child,
}

impl NpmSmsc {
    /// Starts the simulator on a free port.
    pub async fn start() -> NpmSmsc {
        let script = crate::workspace_root().join("services/dispatch/tests/npm-smsc/smsc.js");
        let modules = node_modules();
        assert!(
            modules.join("smpp/package.json").exists(),
            "the npm smpp package is not in {} (run scripts/ensure-tools)",
            modules.display()
        );
        let mut child = tokio::process::Command::new("node")
            .arg(&script)
            .env("NODE_PATH", &modules)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|error| panic!("start node (scripts/ensure-tools): {error}"));
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout is piped")).lines();
        let first = tokio::time::timeout(Duration::from_secs(20), stdout.next_line())
            .await
            .expect("the SMSC starts within 20 s")
            .expect("read the SMSC's stdout")
            .expect("the SMSC prints its port");
        let port = first
            .strip_prefix("listening ")
            .and_then(|port| port.parse().ok())
            .unwrap_or_else(|| panic!("unexpected first line {first:?}"));
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        tokio::spawn(async move {
            while let Ok(Some(line)) = stdout.next_line().await {
                sink.lock().expect("SMSC lines").push(line);
            }
        });
        NpmSmsc {
            port,
            lines,
            _child: child,
        }
    }

    /// `EMAIL2SMS_SMS_CONNECTOR` for dispatch, with the connector's `query` settings.
    pub fn connector(&self, query: &str) -> String {
        format!("smpp://test:secret@127.0.0.1:{}?{query}", self.port)
    }

    fn lines_starting(&self, prefix: &str) -> Vec<String> {
        self.lines
            .lock()
            .expect("SMSC lines")
            .iter()
            .filter_map(|line| line.strip_prefix(prefix).map(str::to_owned))
            .collect()
    }

    /// Every submit_sm taken so far, in order.
    pub fn submits(&self) -> Vec<Submit> {
        self.lines_starting("submit ")
            .iter()
            .map(|line| {
                // ID ESM_CLASS DATA_CODING DESTINATION SHORT_MESSAGE_HEX
                let words: Vec<&str> = line.split(' ').collect();
                let bytes = hex::decode(words.get(4).copied().unwrap_or("")).unwrap_or_default();
                Submit {
                    message_id: words[0].to_owned(),
                    destination: words.get(3).copied().unwrap_or_default().to_owned(),
                    text: String::from_utf8_lossy(&bytes).into_owned(),
                }
            })
            .collect()
    }

    /// How many submits carried each of `markers` in their text (a marker missing from the map
    /// never arrived).
    pub fn count_markers<'a>(
        &self,
        markers: impl IntoIterator<Item = &'a str>,
    ) -> BTreeMap<String, usize> {
        let submits = self.submits();
        markers
            .into_iter()
            .filter_map(|marker| {
                let n = submits
                    .iter()
                    .filter(|s| contains_word(&s.text, marker))
                    .count();
                (n > 0).then(|| (marker.to_owned(), n))
            })
            .collect()
    }

    /// Message ids whose receipt dispatch answered with ESME_ROK.
    pub fn receipts_acknowledged(&self) -> HashSet<String> {
        self.lines_starting("receipt-acked ")
            .iter()
            .filter_map(|line| line.strip_suffix(" 0").map(str::to_owned))
            .collect()
    }
}

/// Whether `marker` is a whole word of `text` (so `m1` is not counted in `m10`).
fn contains_word(text: &str, marker: &str) -> bool {
    text.split(|c: char| !c.is_ascii_alphanumeric())
        .any(|word| word == marker)
}
