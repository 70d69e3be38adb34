#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Bucket and tenant isolation on the local backend.

use bulkhead_files::{AppBucket, Error};
use bulkhead_model::{AppId, TenantId};
use bytes::Bytes;

fn app(s: &str) -> AppId {
    AppId::parse(s).unwrap()
}

fn tenant(s: &str) -> TenantId {
    TenantId::parse(s).unwrap()
}

#[tokio::test]
async fn tenants_and_apps_never_see_each_others_files() {
    let root = tempfile::tempdir().unwrap();
    let a = AppBucket::local(root.path(), &app("alpha")).unwrap();
    let b = AppBucket::local(root.path(), &app("beta")).unwrap();
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(root.path().join("alpha"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o700);

    // "ab" and "abc": neither prefix contains the other.
    let ab = a.tenant(&tenant("ab"));
    let abc = a.tenant(&tenant("abc"));
    ab.put("report.pdf", Bytes::from_static(b"ab's"), 1024)
        .await
        .unwrap();
    abc.put("report.pdf", Bytes::from_static(b"abc's"), 1024)
        .await
        .unwrap();
    abc.put("deep/x.txt", Bytes::from_static(b"x"), 1024)
        .await
        .unwrap();
    assert_eq!(
        ab.get("report.pdf").await.unwrap(),
        Bytes::from_static(b"ab's")
    );
    assert_eq!(ab.list().await.unwrap(), ["report.pdf"]);
    assert_eq!(abc.list().await.unwrap(), ["deep/x.txt", "report.pdf"]);
    // The same tenant in another app's bucket has nothing.
    assert!(matches!(
        b.tenant(&tenant("ab")).get("report.pdf").await,
        Err(Error::NotFound(_))
    ));
    assert!(b.tenant(&tenant("ab")).list().await.unwrap().is_empty());

    // Traversal out of the tenant prefix or the bucket is refused before any I/O.
    for key in [
        "../abc/report.pdf",
        "../../beta/x",
        "/etc/passwd",
        "a/../../b",
        "./report.pdf",
    ] {
        assert!(matches!(ab.get(key).await, Err(Error::BadKey(_))), "{key}");
        assert!(
            matches!(ab.put(key, Bytes::new(), 10).await, Err(Error::BadKey(_))),
            "{key}"
        );
    }
    assert!(matches!(
        ab.put("big", Bytes::from(vec![0u8; 11]), 10).await,
        Err(Error::TooLarge { .. })
    ));
    // Deleting a tenant's files leaves its neighbour's.
    assert_eq!(abc.delete_all().await.unwrap(), 2);
    assert_eq!(ab.list().await.unwrap(), ["report.pdf"]);
}
