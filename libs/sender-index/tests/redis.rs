//! The writer and the reader against the local Redis (127.0.0.1:6379), each test under its own
//! prefix: what the policy service writes is what ingest reads, and the guards hold.

use email2sms_domain::{DomainName, EmailAddress};
use email2sms_proto::policy::v1::CompiledSender;
use email2sms_sender_index::{Error, KeyLayout, Live, Reader, Write, Writer};
use ipnet::IpNet;
use redis::AsyncCommands;
use redis::aio::ConnectionManager;

const REDIS_URL: &str = "redis://127.0.0.1:6379";

struct Index {
    conn: ConnectionManager,
    writer: Writer,
    reader: Reader,
}

impl Index {
    async fn fresh() -> Index {
        let prefix = format!("test.{}:", uuid::Uuid::new_v4().simple());
        let conn = redis::Client::open(REDIS_URL)
            .unwrap()
            .get_connection_manager()
            .await
            .expect("Redis on 127.0.0.1:6379");
        let layout = KeyLayout::new(&prefix);
        Index {
            writer: Writer::new(conn.clone(), layout.clone()),
            reader: Reader::new(conn.clone(), layout),
            conn,
        }
    }

    fn layout(&self) -> &KeyLayout {
        self.writer.layout()
    }

    async fn cleanup(mut self) {
        let keys: Vec<String> = self
            .conn
            .keys(format!("{}*", self.layout().prefix()))
            .await
            .unwrap();
        if !keys.is_empty() {
            let _: i64 = self.conn.del(keys).await.unwrap();
        }
    }
}

fn sender(value: &str, company: &str, version: u64) -> CompiledSender {
    CompiledSender {
        matched_value: value.into(),
        company_id: company.into(),
        version,
        ..CompiledSender::default()
    }
}

fn email(s: &str) -> EmailAddress {
    EmailAddress::parse(s).unwrap()
}

fn domain(s: &str) -> DomainName {
    DomainName::parse(s).unwrap()
}

#[tokio::test]
async fn what_the_writer_stores_the_reader_resolves() {
    let ix = Index::fresh().await;
    let l = ix.layout().clone();
    let net: IpNet = "10.1.0.0/16".parse().unwrap();
    let writes = [
        Write::email(
            &l,
            "jo@acme.example",
            Some(&sender("jo@acme.example", "c1", 3)),
        ),
        Write::domain(&l, "acme.example", Some(&sender("acme.example", "c1", 3))),
        Write::ip(&l, &net, Some(&sender("10.1.0.0/16", "c1", 3))),
    ];
    assert_eq!(ix.reader.version().await.unwrap(), None);
    assert!(!ix.reader.has_compiled_data().await.unwrap());
    ix.writer.apply(&writes, 3).await.unwrap();
    assert_eq!(ix.reader.version().await.unwrap(), Some(3));
    assert!(ix.reader.has_compiled_data().await.unwrap());

    let ip = "10.1.2.3".parse().unwrap();
    let found = ix
        .reader
        .resolve(&email("jo@acme.example"), ip)
        .await
        .unwrap();
    assert_eq!(found.sender.unwrap().matched_value, "jo@acme.example");
    let found = ix
        .reader
        .resolve(&email("bo@acme.example"), ip)
        .await
        .unwrap();
    assert_eq!(found.sender.unwrap().matched_value, "acme.example");
    // The subdomain has no entry of its own: the parent's does not apply, the IP entry does.
    let found = ix
        .reader
        .resolve(&email("bo@sales.acme.example"), ip)
        .await
        .unwrap();
    assert_eq!(found.sender.unwrap().matched_value, "10.1.0.0/16");
    let found = ix
        .reader
        .resolve(
            &email("bo@sales.acme.example"),
            "192.0.2.1".parse().unwrap(),
        )
        .await
        .unwrap();
    assert!(found.sender.is_none());
    ix.cleanup().await;
}

#[tokio::test]
async fn an_older_version_never_overwrites_a_newer_one() {
    let ix = Index::fresh().await;
    let l = ix.layout().clone();
    let new = sender("acme.example", "c1", 5);
    let old = sender("acme.example", "c-old", 4);
    ix.writer
        .apply(&[Write::domain(&l, "acme.example", Some(&new))], 5)
        .await
        .unwrap();
    ix.writer
        .apply(&[Write::domain(&l, "acme.example", Some(&old))], 4)
        .await
        .unwrap();
    ix.writer
        .apply(&[Write::domain(&l, "acme.example", None)], 4)
        .await
        .unwrap();
    let read = ix.reader.domain(&domain("acme.example")).await.unwrap();
    assert_eq!(read.unwrap().company_id, "c1");
    assert_eq!(ix.reader.version().await.unwrap(), Some(5));
    // The same or a newer version removes it.
    ix.writer
        .apply(&[Write::domain(&l, "acme.example", None)], 5)
        .await
        .unwrap();
    assert!(
        ix.reader
            .domain(&domain("acme.example"))
            .await
            .unwrap()
            .is_none()
    );
    ix.cleanup().await;
}

#[tokio::test]
async fn a_domain_key_holding_another_domains_entry_is_refused() {
    let ix = Index::fresh().await;
    let l = ix.layout().clone();
    // A parent's entry stored under the subdomain's key (a damaged index or a hand edit).
    let parent = sender("acme.example", "c1", 1);
    ix.writer
        .apply(&[Write::domain(&l, "sales.acme.example", Some(&parent))], 1)
        .await
        .unwrap();
    let error = ix
        .reader
        .domain(&domain("sales.acme.example"))
        .await
        .unwrap_err();
    assert!(matches!(error, Error::WrongDomain { .. }), "{error}");
    assert!(!error.is_redis());
    ix.cleanup().await;
}

#[tokio::test]
async fn undecodable_values_are_errors_not_misses() {
    let mut ix = Index::fresh().await;
    let key = ix.layout().email("jo@acme.example");
    let _: () = ix.conn.set(&key, vec![0xffu8]).await.unwrap();
    let error = ix
        .reader
        .email(&email("jo@acme.example"))
        .await
        .unwrap_err();
    assert!(matches!(error, Error::Undecodable { .. }), "{error}");
    ix.cleanup().await;
}

#[tokio::test]
async fn stale_writes_remove_what_the_rebuild_did_not_write_and_only_of_the_company() {
    let ix = Index::fresh().await;
    let l = ix.layout().clone();
    let kept = Write::email(
        &l,
        "keep@a.example",
        Some(&sender("keep@a.example", "c1", 1)),
    );
    let gone = Write::email(
        &l,
        "gone@a.example",
        Some(&sender("gone@a.example", "c1", 1)),
    );
    let other = Write::email(&l, "x@b.example", Some(&sender("x@b.example", "c2", 1)));
    let net: IpNet = "192.0.2.0/24".parse().unwrap();
    let gone_ip = Write::ip(&l, &net, Some(&sender("192.0.2.0/24", "c1", 1)));
    ix.writer
        .apply(&[kept.clone(), gone, other, gone_ip], 1)
        .await
        .unwrap();
    let mut live = Live::default();
    live.record(&kept);
    let stale = ix.writer.stale_writes(&live, Some("c1")).await.unwrap();
    let mut names: Vec<&str> = stale.iter().map(|w| w.key()).collect();
    names.sort_unstable();
    assert_eq!(names, [l.email("gone@a.example"), l.ip_table()]);
    assert!(stale.iter().all(|w| !w.stores()));
    ix.writer.apply(&stale, 2).await.unwrap();
    assert!(
        ix.reader
            .email(&email("gone@a.example"))
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        ix.reader
            .email(&email("keep@a.example"))
            .await
            .unwrap()
            .is_some()
    );
    assert!(
        ix.reader
            .email(&email("x@b.example"))
            .await
            .unwrap()
            .is_some()
    );
    assert!(ix.reader.ip_table().await.unwrap().is_empty());
    // A full rebuild (no company) removes the other company's key too.
    let stale = ix.writer.stale_writes(&live, None).await.unwrap();
    assert_eq!(
        stale.iter().map(|w| w.key()).collect::<Vec<_>>(),
        [l.email("x@b.example")]
    );
    ix.cleanup().await;
}
