//! The admin HTTP listener (SPEC 12) against the real server: `/metrics` in the Prometheus
//! text format, health, and the bearer tokens of the API (401 without one or with an
//! unknown one, 403 with a revoked one).

mod common;

use common::http::get;
use common::TestServer;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_and_health_answer_on_loopback_without_a_token() {
    let server = TestServer::start().await;
    let metrics = get(server.admin(), "/metrics", None).await;
    assert_eq!(metrics.status, 200, "{}", metrics.text());
    assert!(metrics.header("content-type").unwrap().starts_with("text/plain; version=0.0.4"), "{metrics:?}");
    let text = metrics.text();
    assert!(text.contains("# TYPE vouchmail_queue_messages gauge"), "{text}");
    assert!(text.contains("vouchmail_queue_messages{state=\"queued\"} 0"), "{text}");
    // This very connection is an open admin session.
    assert!(text.contains("vouchmail_sessions_open{listener=\"admin\"} 1"), "{text}");
    assert_eq!(get(server.admin(), "/healthz/live", None).await.status, 200);
    let ready = get(server.admin(), "/healthz/ready", None).await;
    assert_eq!((ready.status, ready.json()["status"].as_str()), (200, Some("ready")));
    assert_eq!(get(server.admin(), "/nowhere", None).await.status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_need_a_token_when_not_open() {
    let server = TestServer::start_with(|c| c.admin.open_metrics = false).await;
    assert_eq!(get(server.admin(), "/metrics", None).await.status, 401);
    let token = server.admin_token("scraper").await;
    assert_eq!(get(server.admin(), "/metrics", Some(&token)).await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_takes_valid_tokens_only() {
    let server = TestServer::start().await;
    let missing = get(server.admin(), "/api/v1/whoami", None).await;
    assert_eq!(missing.status, 401);
    assert_eq!(missing.header("www-authenticate"), Some("Bearer realm=\"vouchmail\""));
    assert_eq!(get(server.admin(), "/api/v1/whoami", Some("vmat_not-a-token")).await.status, 401);
    let token = server.admin_token("ops").await;
    let me = get(server.admin(), "/api/v1/whoami", Some(&token)).await;
    assert_eq!((me.status, me.json()["token"].as_str()), (200, Some("ops")));
    vouchmail_server::rules::admin_tokens::revoke_token(server.store.as_ref(), "ops").await.unwrap();
    let revoked = get(server.admin(), "/api/v1/whoami", Some(&token)).await;
    assert_eq!(revoked.status, 403, "{}", revoked.text());
}
