//! What sizing and splitting an email's text costs: `cargo bench -p email2sms-sms`.
//!
//! Ingest sizes every message's text (`encode`, and `truncate_to_parts` when a company caps the
//! parts) and dispatch splits it (`split`) before the SMPP submit. The texts are the shapes mail
//! gives: a 2 KB plain-ASCII body (the `smtp-source -l 2048` load of the ingest benchmark), the same
//! with one typographic dash (UCS-2), and a Greek/extension-heavy GSM-7 text. Prints nanoseconds per
//! call, the median of 7 rounds; a plain harness, so it needs no nightly and no benchmark crate.

use std::hint::black_box;
use std::time::Instant;

fn median_ns_per_call(rounds: usize, calls: usize, mut work: impl FnMut()) -> f64 {
    let mut samples: Vec<f64> = (0..rounds)
        .map(|_| {
            let start = Instant::now();
            for _ in 0..calls {
                work();
            }
            start.elapsed().as_nanos() as f64 / calls as f64
        })
        .collect();
    samples.sort_by(f64::total_cmp);
    samples[samples.len() / 2]
}

fn main() {
    let ascii: String = "Meeting moved to 3pm, room 4.12. Bring the Q3 figures please. "
        .repeat(33)
        .chars()
        .take(2048)
        .collect();
    let with_dash = format!("{} – {}", &ascii[..1000], &ascii[1000..2045]);
    let gsm_mixed: String = "ΔΦΓ {EUR} €5 [ok] ~x^ |äöü| "
        .repeat(74)
        .chars()
        .take(2048)
        .collect();
    let calls = 2_000;
    println!("{:<40} {:>12}", "case (2,048 characters)", "ns per call");
    for (name, text) in [
        ("ascii", &ascii),
        ("ascii + one en dash (UCS-2)", &with_dash),
        ("GSM-7 with Greek and extension", &gsm_mixed),
    ] {
        let encode = median_ns_per_call(7, calls, || {
            black_box(email2sms_sms::encode(black_box(text)));
        });
        let split = median_ns_per_call(7, calls, || {
            black_box(email2sms_sms::split(black_box(text), 7).unwrap());
        });
        let truncate = median_ns_per_call(7, calls, || {
            black_box(email2sms_sms::truncate_to_parts(black_box(text), 4));
        });
        println!("{:<40} {:>12.0}  encode", name, encode);
        println!("{:<40} {:>12.0}  split", "", split);
        println!("{:<40} {:>12.0}  truncate_to_parts(4)", "", truncate);
    }
}
