//! AdminTokenStore (SPEC 12): tokens by hash, names unique, a revoked token kept and told
//! apart.

use vouchmail_store::{AdminToken, AdminTokenStore, StoreError};

on_every_backend!(store: tokens_are_found_by_hash_and_revoked_by_name);

fn token(name: &str, hash: &str) -> AdminToken {
    AdminToken { name: name.into(), hash: hash.into(), created_at: 1_800_000_000, revoked_at: None }
}

async fn tokens_are_found_by_hash_and_revoked_by_name<S: AdminTokenStore + ?Sized>(store: &S) {
    store.add_admin_token(token("ops", "aa11")).await.unwrap();
    store.add_admin_token(token("console", "bb22")).await.unwrap();
    assert!(matches!(store.add_admin_token(token("ops", "cc33")).await, Err(StoreError::Conflict(_))));
    assert!(matches!(store.add_admin_token(token("other", "aa11")).await, Err(StoreError::Conflict(_))));
    assert_eq!(store.admin_token_by_hash("aa11").await.unwrap(), Some(token("ops", "aa11")));
    assert_eq!(store.admin_token_by_hash("ffff").await.unwrap(), None);
    store.revoke_admin_token("ops", 1_800_000_100).await.unwrap();
    assert!(matches!(store.revoke_admin_token("ops", 1_800_000_200).await, Err(StoreError::NotFound(_))));
    assert!(matches!(store.revoke_admin_token("nobody", 1_800_000_200).await, Err(StoreError::NotFound(_))));
    let revoked = store.admin_token_by_hash("aa11").await.unwrap().unwrap();
    assert_eq!(revoked.revoked_at, Some(1_800_000_100));
    let names: Vec<String> = store.admin_tokens().await.unwrap().into_iter().map(|t| t.name).collect();
    assert_eq!(names, ["ops", "console"]);
}
