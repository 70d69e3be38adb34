//! Against a real OpenBao dev server: policies are enforced by the vault, not by us.

use bulkhead_model::AppId;
use bulkhead_testkit::openbao::OpenBao;
use bulkhead_vault::openbao::OpenBaoReader;
use bulkhead_vault::{BootCredential, Error, Secret, VaultReader};
use bulkhead_vault_admin::VaultAdmin;
use bulkhead_vault_admin::openbao::OpenBaoAdmin;

fn app(s: &str) -> AppId {
    AppId::parse(s).unwrap()
}

#[tokio::test]
async fn an_apps_approle_reads_its_path_and_gets_403_on_another_apps() {
    let bao = OpenBao::start().unwrap();
    let admin = OpenBaoAdmin::new(&bao.addr(), Secret::new(bao.root_token())).unwrap();
    let (a, b) = (app("alpha"), app("beta"));
    let cred_a = admin.create_app(&a).await.unwrap();
    let cred_b = admin.create_app(&b).await.unwrap();
    admin
        .put(&a, "db/password", &Secret::new("alpha-pw"))
        .await
        .unwrap();
    admin
        .put(&b, "db/password", &Secret::new("beta-pw"))
        .await
        .unwrap();
    assert_eq!(
        admin.get(&b, "db/password").await.unwrap().expose(),
        "beta-pw"
    );

    let reader_a = OpenBaoReader::new(&bao.addr(), a.clone(), &cred_a).unwrap();
    assert_eq!(
        reader_a.get("db/password").await.unwrap().expose(),
        "alpha-pw"
    );
    assert!(matches!(
        reader_a.get_of(&b, "db/password").await,
        Err(Error::Denied)
    ));
    // B's credential reads B only.
    let reader_b = OpenBaoReader::new(&bao.addr(), b.clone(), &cred_b).unwrap();
    assert_eq!(
        reader_b.get("db/password").await.unwrap().expose(),
        "beta-pw"
    );
    assert!(matches!(
        reader_b.get_of(&a, "db/password").await,
        Err(Error::Denied)
    ));
    // A worker's credential, issued without touching the app's policy or role, is bound to
    // the same app; an app without a space gets none.
    let worker_a = admin.boot_credential(&a).await.unwrap();
    assert_ne!(worker_a, cred_a, "a fresh secret id");
    let reader = OpenBaoReader::new(&bao.addr(), a.clone(), &worker_a).unwrap();
    assert_eq!(
        reader.get("db/password").await.unwrap().expose(),
        "alpha-pw"
    );
    assert!(matches!(
        reader.get_of(&b, "db/password").await,
        Err(Error::Denied)
    ));
    assert!(matches!(
        admin.boot_credential(&app("gamma")).await,
        Err(Error::NotFound(_))
    ));
    // A wrong secret id is refused at login.
    let BootCredential::AppRole { role_id, .. } = &cred_a else {
        panic!("approle expected")
    };
    let wrong = BootCredential::AppRole {
        role_id: role_id.clone(),
        secret_id: "00000000-0000-0000-0000-000000000000".into(),
    };
    let r = OpenBaoReader::new(&bao.addr(), a.clone(), &wrong).unwrap();
    assert!(matches!(
        r.get("db/password").await,
        Err(Error::BadCredential(_))
    ));
    // Deleting app A revokes its access.
    admin.delete_app(&a).await.unwrap();
    let again = OpenBaoReader::new(&bao.addr(), a.clone(), &cred_a).unwrap();
    assert!(again.get("db/password").await.is_err());
}

/// A boot credential opens one login; issuing the next destroys the unused ones; revoking a
/// replaced worker's session ends its token.
#[tokio::test]
async fn a_secret_id_opens_one_login_and_a_replaced_workers_session_is_revoked() {
    let bao = OpenBao::start().unwrap();
    let admin = OpenBaoAdmin::new(&bao.addr(), Secret::new(bao.root_token())).unwrap();
    let a = app("alpha");
    admin.create_app(&a).await.unwrap();
    admin
        .put(&a, "db/password", &Secret::new("pw"))
        .await
        .unwrap();
    let first = admin.boot_credential(&a).await.unwrap();
    let worker = OpenBaoReader::new(&bao.addr(), a.clone(), &first).unwrap();
    assert_eq!(worker.get("db/password").await.unwrap().expose(), "pw");
    let session = worker.session().expect("a logged-in reader has a session");
    // The same credential a second time (a copy taken from the worker) logs in no more.
    let copy = OpenBaoReader::new(&bao.addr(), a.clone(), &first).unwrap();
    assert!(matches!(
        copy.get("db/password").await,
        Err(Error::BadCredential(_))
    ));
    // An issued but unused credential is destroyed when the next one is issued.
    let unused = admin.boot_credential(&a).await.unwrap();
    let next = admin.boot_credential(&a).await.unwrap();
    let stale = OpenBaoReader::new(&bao.addr(), a.clone(), &unused).unwrap();
    assert!(matches!(
        stale.get("db/password").await,
        Err(Error::BadCredential(_))
    ));
    let successor = OpenBaoReader::new(&bao.addr(), a.clone(), &next).unwrap();
    assert_eq!(successor.get("db/password").await.unwrap().expose(), "pw");
    // The first worker is replaced: its session is revoked and its token reads nothing.
    assert_eq!(worker.get("db/password").await.unwrap().expose(), "pw");
    admin.revoke_session(&session).await.unwrap();
    assert!(matches!(
        worker.get("db/password").await,
        Err(Error::Denied)
    ));
    assert_eq!(successor.get("db/password").await.unwrap().expose(), "pw");
    // Revoking again (already gone) is fine.
    admin.revoke_session(&session).await.unwrap();
}

/// `[vault] mount` and `namespace`: an app's space, policy and AppRole in a namespace and a
/// KV mount of the operator's choosing; a reader looking in the default place finds nothing.
#[tokio::test]
async fn spaces_live_in_the_configured_mount_and_namespace() {
    use bulkhead_vault::openbao::{Location, call, client, expect_ok};
    use reqwest::Method;
    let bao = OpenBao::start().unwrap();
    let http = client(None).unwrap();
    let root = Location::default();
    let (s, b) = call(
        &http,
        &bao.addr(),
        &root,
        Some(bao.root_token()),
        Method::POST,
        "sys/namespaces/partners",
        None,
    )
    .await
    .unwrap();
    expect_ok(s, &b, "namespace").unwrap();
    let location = Location {
        mount: "apps-kv".into(),
        namespace: Some("partners".into()),
    };
    let (s, b) = call(
        &http,
        &bao.addr(),
        &location,
        Some(bao.root_token()),
        Method::POST,
        "sys/mounts/apps-kv",
        Some(serde_json::json!({"type": "kv", "options": {"version": "2"}})),
    )
    .await
    .unwrap();
    expect_ok(s, &b, "mount").unwrap();
    let admin = OpenBaoAdmin::new(&bao.addr(), Secret::new(bao.root_token()))
        .unwrap()
        .at(location.clone());
    let a = app("alpha");
    admin.create_app(&a).await.unwrap();
    admin
        .put(&a, "db/password", &Secret::new("in-ns"))
        .await
        .unwrap();
    let cred = admin.boot_credential(&a).await.unwrap();
    let reader = OpenBaoReader::new(&bao.addr(), a.clone(), &cred)
        .unwrap()
        .at(location.clone());
    assert_eq!(reader.get("db/password").await.unwrap().expose(), "in-ns");
    // The secret is in the namespace's mount, not at `secret/` of the root namespace.
    let (s, _) = call(
        &http,
        &bao.addr(),
        &root,
        Some(bao.root_token()),
        Method::GET,
        &root.data_path(&a, "db/password"),
        None,
    )
    .await
    .unwrap();
    assert_eq!(s, reqwest::StatusCode::NOT_FOUND);
    let elsewhere = OpenBaoReader::new(
        &bao.addr(),
        a.clone(),
        &admin.boot_credential(&a).await.unwrap(),
    )
    .unwrap();
    assert!(
        elsewhere.get("db/password").await.is_err(),
        "the role is in the namespace only"
    );
}
