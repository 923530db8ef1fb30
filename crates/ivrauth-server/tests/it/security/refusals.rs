//! Issue 8, item 12: refusals cannot flood the audit. Refused token requests are counted
//! and written as one record per key and interval, not one durable write each.

use ivrauth_core::ports::AuditStore as _;
use ivrauth_core::time::Clock as _;
use ivrauth_testkit::TestServer;

#[tokio::test]
async fn refused_token_requests_are_one_audit_record_per_key_and_interval() {
    let s = TestServer::start().await.unwrap();
    let (id, secret) = s.create_client("app", &["flow:read"]).await.unwrap();
    let before = s.store().read_audit().await.unwrap().len();
    for _ in 0..50 {
        let res = s
            .http()
            .post(s.url("/auth/v3/oauth/token"))
            .form(&[
                ("grant_type", "client_credentials"),
                ("client_id", id.as_str()),
                ("client_secret", "wrong-secret"),
            ])
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 401);
    }
    // Nothing was written per refusal.
    assert_eq!(s.store().read_audit().await.unwrap().len(), before);
    assert_eq!(s.state().refusals.pending(), 1);

    let written = s
        .state()
        .refusals
        .flush(s.store().as_ref(), s.clock().now())
        .await
        .unwrap();
    assert_eq!(written, 1);
    let audit = s.store().read_audit().await.unwrap();
    let refused: Vec<_> = audit
        .iter()
        .filter(|r| r.event == "token.refused")
        .collect();
    assert_eq!(refused.len(), 1);
    assert_eq!(refused[0].actor, id);
    assert_eq!(refused[0].detail["count"], 50);
    assert_eq!(refused[0].detail["reason"], "bad_secret");
    assert!(!format!("{audit:?}").contains(&secret));
    // A second flush with nothing new writes nothing.
    assert_eq!(
        s.state()
            .refusals
            .flush(s.store().as_ref(), s.clock().now())
            .await
            .unwrap(),
        0
    );
}

#[tokio::test]
async fn refused_voicexml_requests_are_one_audit_record_per_key_and_interval() {
    // No [voicexml] credential: every request is refused.
    let s = TestServer::start().await.unwrap();
    let before = s.store().read_audit().await.unwrap().len();
    for _ in 0..20 {
        let res = s
            .http()
            .post(s.url("/voice/vxml/demo-pin"))
            .form(&[("ani", "+15550100123")])
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 403);
    }
    assert_eq!(s.store().read_audit().await.unwrap().len(), before);
    s.state()
        .refusals
        .flush(s.store().as_ref(), s.clock().now())
        .await
        .unwrap();
    let audit = s.store().read_audit().await.unwrap();
    let refused: Vec<_> = audit.iter().filter(|r| r.event == "call.refused").collect();
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert_eq!(refused[0].actor, "127.0.0.1");
    assert_eq!(refused[0].subject, "vxml");
    assert_eq!(refused[0].detail["reason"], "not_configured");
    assert_eq!(refused[0].detail["count"], 20);
}
