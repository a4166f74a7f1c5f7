//! DmarcReportStore (RFC 7489 7.2): results counted per period, domain and group, taken
//! once.

use vouchmail_store::{DmarcReportStore, DmarcResultCount};

on_every_backend!(store: dmarc_results_are_counted_then_taken);
on_every_backend!(two_nodes: two_nodes_taking_results_share_them_out);

fn group(period: i64, domain: &str, record: &str, policy: &str, count: i64) -> DmarcResultCount {
    DmarcResultCount { period, domain: domain.into(), record: record.into(), policy: policy.into(), count }
}

/// Identical results add up; the newest policy wins; a take removes exactly the periods up
/// to the one asked for.
async fn dmarc_results_are_counted_then_taken<S: DmarcReportStore + ?Sized>(store: &S) {
    for _ in 0..3 {
        store.count_dmarc_result(86_400, "Example.org", "r1", "p=none").await.unwrap();
    }
    store.count_dmarc_result(86_400, "example.org", "r2", "p=none").await.unwrap();
    store.count_dmarc_result(86_400, "example.org", "r1", "p=reject").await.unwrap();
    store.count_dmarc_result(172_800, "example.org", "r1", "p=reject").await.unwrap();
    assert!(store.take_dmarc_results(0).await.unwrap().is_empty());
    let taken = store.take_dmarc_results(86_400).await.unwrap();
    assert_eq!(
        taken,
        [group(86_400, "example.org", "r1", "p=reject", 4), group(86_400, "example.org", "r2", "p=none", 1)]
    );
    assert!(store.take_dmarc_results(86_400).await.unwrap().is_empty(), "taken once");
    assert_eq!(store.take_dmarc_results(i64::MAX).await.unwrap(), [group(172_800, "example.org", "r1", "p=reject", 1)]);
}

/// Two nodes taking at once: every group goes to exactly one of them.
async fn two_nodes_taking_results_share_them_out<S: DmarcReportStore + ?Sized>(a: &S, b: &S) {
    for n in 0..50 {
        a.count_dmarc_result(0, &format!("d{n}.example"), "r", "p").await.unwrap();
    }
    let (x, y) = tokio::join!(a.take_dmarc_results(0), b.take_dmarc_results(0));
    let mut domains: Vec<String> = x.unwrap().into_iter().chain(y.unwrap()).map(|g| g.domain).collect();
    domains.sort();
    domains.dedup();
    assert_eq!(domains.len(), 50);
}
